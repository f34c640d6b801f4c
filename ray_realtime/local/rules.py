"""Pure reply logic of the offline local realtime model (no I/O, fully deterministic).

The server turns its conversation into a list of :class:`Entry` values and asks
:func:`decide` what the next response is: a :class:`TextReply` (spoken or written) or a
:class:`FunctionCall`. The rules, in priority order:

1. **Anchor.** The anchor is the latest user message or ``function_call_output`` in the
   conversation (system messages, assistant messages and function calls are skipped).
   For a user message, its text ``T`` is its ``input_text`` parts joined by a space and
   stripped. A user message without text but with ``input_audio`` is "audio" of N ms.
2. **Forced tools.** Tools are only considered when the anchor is a user message and no
   function call follows it (so a response after a tool result never loops into another
   call) and ``tool_choice`` is not ``"none"``:

   * ``{"type": "function", "name": X}`` calls X (if it is one of the tools);
   * ``"required"`` calls the matched tool (rule 4) or else the first tool.
3. **Always reply.** A line ``Always reply: X`` in the instructions (the response's
   ``instructions`` override the session's) forces the text reply ``X``.
4. **Tool match** (``tool_choice`` ``"auto"``): a tool is called when ``T`` contains its
   name, case-insensitively, where ``_``, ``-`` and spaces are interchangeable
   (``get_weather`` matches "get weather"; the handoff tool ``transfer_to_billing_agent``
   matches "transfer to billing agent"). Names must not be glued to other letters or
   digits. When several tools match, the earliest occurrence wins (then the longest).
5. **Text reply.**

   * no anchor: ``Hello! How can I help you today?``;
   * after a function output: ``The tool NAME returned: OUTPUT`` (OUTPUT cut to 200
     characters; NAME comes from the matching ``function_call``, else ``unknown``);
   * user audio: ``I heard N ms of audio.`` (its offline transcript is ``<speech N ms>``);
   * ``T`` starting with ``say `` (any case): exactly the rest of ``T``;
   * otherwise ``You said: T``.

**Arguments** are built from the tool's JSON schema ``properties`` (in schema order):

1. explicit ``key=value`` / ``key: value`` pairs in ``T`` (value may be ``"quoted"``;
   unquoted values lose trailing ``, ; . ! ? )``);
2. remaining properties by type: ``integer``/``number`` take the numbers of ``T`` in
   order; ``boolean`` takes ``true``/``false``/``yes``/``no`` in order; ``string`` with an
   ``enum`` takes the enum value occurring earliest in ``T`` (as a whole word); other
   ``string`` properties take ``"double-quoted"`` strings in order, then the words
   following the tool-name match one by one (skipping numbers and filler words such as
   "in", "for", "the", see :data:`STOPWORDS`); text already used by a key/value pair, a
   quoted string, an enum value, a taken word or the tool name is not reused;
3. a ``required`` property still missing gets ``""`` / ``0`` / ``false`` / ``[]`` /
   ``{}`` (an enum string gets its first value); optional ones are omitted.

Values are coerced to the schema type and the arguments are compact JSON.

**Bounds.** So that no input can make a reply expensive, tool matching and argument
extraction look at the first :data:`MAX_RULE_CHARS` characters of ``T`` only; the first
:data:`MAX_PROPERTIES` properties of a schema (and entries of its ``required`` list) and
the first :data:`MAX_ENUM_VALUES` enum values (over all properties) are considered; a property whose
name is empty, longer than :data:`MAX_KEY_CHARS` or starts/ends with whitespace is never
matched by ``key=value``; JSON nested deeper than ``MAX_JSON_DEPTH`` is not accepted as
an ``array``/``object`` value. Every step is linear in the text it scans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Any, Literal

from .protocol import json_too_deep

__all__ = [
    "GREETING",
    "MAX_ENUM_VALUES",
    "MAX_KEY_CHARS",
    "MAX_PROPERTIES",
    "MAX_RULE_CHARS",
    "STOPWORDS",
    "TOOL_OUTPUT_LIMIT",
    "Decision",
    "Entry",
    "FunctionCall",
    "TextReply",
    "Tool",
    "ToolMatch",
    "always_reply",
    "decide",
    "extract_arguments",
    "find_tool",
    "speech_transcript",
    "split_words",
]

GREETING = "Hello! How can I help you today?"
TOOL_OUTPUT_LIMIT = 200
MAX_RULE_CHARS = 4096
"""Characters of the user text that tool matching and argument extraction look at."""
MAX_PROPERTIES = 64
"""Schema properties considered per tool (the rest are neither extracted nor defaulted)."""
MAX_ENUM_VALUES = 256
"""Enum values considered per tool call, over all its properties (in schema order)."""
MAX_KEY_CHARS = 64
"""Longest property name that ``key=value`` matching looks for."""
STOPWORDS = frozenset(
    "a an the in on at for of to from with about please me my is are and or by into".split()
)

EntryKind = Literal["user", "system", "assistant", "function_call", "function_call_output"]


@dataclass(frozen=True)
class Entry:
    """A conversation item reduced to what the rules need.

    ``text`` is the message text, the function output, or the function arguments;
    ``audio_ms`` is the total input audio of a user message; ``name``/``call_id`` identify
    function calls and outputs.
    """

    kind: EntryKind
    text: str = ""
    audio_ms: int = 0
    has_audio: bool = False
    name: str = ""
    call_id: str = ""

    @cached_property
    def tokens(self) -> int:
        """Synthetic token count of ``text`` (one per word), computed once."""
        return len(self.text.split())


@dataclass(frozen=True)
class Tool:
    """A function tool: its name and JSON-schema ``parameters``."""

    name: str
    parameters: Mapping[str, Any]

    @classmethod
    def from_wire(cls, tool: Mapping[str, Any]) -> Tool:
        """Build from a Realtime function tool object (``{"type": "function", ...}``)."""
        params = tool.get("parameters")
        return cls(str(tool.get("name") or ""), params if isinstance(params, Mapping) else {})


@dataclass(frozen=True)
class TextReply:
    """Reply with this text (as audio + transcript, or as text)."""

    text: str


@dataclass(frozen=True)
class FunctionCall:
    """Call tool ``name`` with JSON-encoded ``arguments``."""

    name: str
    arguments: str


Decision = TextReply | FunctionCall


@dataclass(frozen=True)
class ToolMatch:
    """Where a tool's name occurs in the user text."""

    tool: Tool
    start: int
    end: int


def speech_transcript(audio_ms: int) -> str:
    """Offline "transcription" of ``audio_ms`` of user audio."""
    return f"<speech {audio_ms} ms>"


def split_words(text: str) -> list[str]:
    """Split text into word deltas (leading whitespace attached) that concatenate to it."""
    pieces = re.findall(r"\s*\S+", text)
    if not pieces:
        return [text] if text else []
    consumed = sum(len(p) for p in pieces)
    if consumed < len(text):
        pieces[-1] += text[consumed:]
    return pieces


def always_reply(instructions: str | None) -> str | None:
    """The forced reply from an ``Always reply: X`` line of the instructions, if any."""
    for line in (instructions or "").splitlines():
        m = re.match(r"\s*always reply:\s?(.*)$", line, re.IGNORECASE)
        if m:
            return m.group(1).rstrip()
    return None


def _name_pattern(name: str) -> re.Pattern[str] | None:
    parts = [p for p in re.split(r"[\s_\-]+", name) if p]
    if not parts:
        return None
    body = r"[\s_\-]+".join(re.escape(p) for p in parts)
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])", re.IGNORECASE)


def find_tool(text: str, tools: Sequence[Tool]) -> ToolMatch | None:
    """The tool whose name occurs earliest in ``text`` (ties: longest match, then order).

    Only the first :data:`MAX_RULE_CHARS` characters of ``text`` are searched.
    """
    text = text[:MAX_RULE_CHARS]
    best: ToolMatch | None = None
    for tool in tools:
        pattern = _name_pattern(tool.name)
        m = pattern.search(text) if pattern else None
        if m is None:
            continue
        if best is None or (m.start(), -(m.end() - m.start())) < (
            best.start,
            -(best.end - best.start),
        ):
            best = ToolMatch(tool, m.start(), m.end())
    return best


# --- argument extraction -------------------------------------------------------------------

_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_BOOL_RE = re.compile(r"(?<![\w])(true|false|yes|no)(?![\w])", re.IGNORECASE)
_QUOTED_RE = re.compile(r'"([^"]*)"')
_WORD_RE = re.compile(r"[^\s\"]+")
_TRAILING_PUNCT = ",;.!?)"
_TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})

Span = tuple[int, int]


def _prop_type(prop: Mapping[str, Any]) -> str:
    t = prop.get("type")
    if isinstance(t, list):
        t = next((x for x in t if isinstance(x, str) and x != "null"), None)
    if isinstance(t, str):
        return t
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            for option in options:
                if isinstance(option, Mapping) and option.get("type") not in (None, "null"):
                    return _prop_type(option)
    return "string" if isinstance(prop.get("enum"), list) else "any"


def _default_for(prop: Mapping[str, Any]) -> Any:
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    return {
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
        "null": None,
    }.get(_prop_type(prop), "")


def _coerce(value: str, prop: Mapping[str, Any]) -> Any:
    kind = _prop_type(prop)
    try:
        if kind == "integer":
            return int(float(value))
        if kind == "number":
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
    except ValueError:
        return _default_for(prop)
    if kind == "boolean":
        return value.strip().lower() in _TRUE_WORDS
    if kind in ("array", "object"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return _default_for(prop)
        expected = list if kind == "array" else dict
        if not isinstance(parsed, expected) or json_too_deep(parsed):
            return _default_for(prop)
        return parsed
    return value


class _Taken:
    """Character positions of the text already used by some argument.

    A byte per character: checking or marking a span costs its length (in C), so the
    filters below stay linear however many spans are taken.
    """

    def __init__(self, size: int) -> None:
        self._mask = bytearray(size)

    def free(self, span: Span) -> bool:
        return self._mask.find(1, span[0], span[1]) < 0

    def take(self, span: Span) -> None:
        self._mask[span[0] : span[1]] = b"\x01" * (span[1] - span[0])


def _find_enum(
    text: str, enum: Sequence[Any], taken: _Taken
) -> tuple[tuple[str, Span] | None, int]:
    """The earliest enum value occurring in ``text`` as a whole word, with its span, and
    how many values were tried (each costs a regex compile and a scan)."""
    best: tuple[str, Span] | None = None
    values = list(islice(enum, MAX_ENUM_VALUES))
    for value in values:
        if not isinstance(value, str) or not value:
            continue
        pattern = rf"(?<![\w]){re.escape(value)}(?![\w])"
        for m in re.finditer(pattern, text, re.IGNORECASE):
            if taken.free(m.span()):
                if best is None or m.start() < best[1][0]:
                    best = (value, m.span())
                break
    return best, len(values)


def _matchable_key(key: str) -> bool:
    # Surrounding whitespace in a key would let ``\s*`` rescan the same run of spaces
    # from every position (quadratic); an empty key would match everywhere.
    return 0 < len(key) <= MAX_KEY_CHARS and key == key.strip()


def extract_arguments(text: str, tool: Tool, match: Span | None = None) -> dict[str, Any]:
    """Arguments for ``tool`` from ``text`` (``match`` is the tool-name span, if any)."""
    text = text[:MAX_RULE_CHARS]
    if match is not None and match[1] > len(text):
        match = None
    schema = tool.parameters
    raw_props = schema.get("properties")
    props: list[tuple[str, Any]] = (
        [(k, p) for k, p in islice(raw_props.items(), MAX_PROPERTIES) if isinstance(k, str)]
        if isinstance(raw_props, Mapping)
        else []
    )
    props_by_name = dict(props)
    raw_required = schema.get("required")
    required = (
        [r for r in islice(raw_required, MAX_PROPERTIES) if isinstance(r, str)]
        if isinstance(raw_required, list)
        else []
    )
    args: dict[str, Any] = {}
    used = _Taken(len(text))  # the tool name and key/value pairs
    if match:
        used.take(match)

    # 1. explicit key=value / key: value pairs.
    pairs: list[Span] = []
    for key, prop in props:
        if not isinstance(prop, Mapping) or not _matchable_key(key):
            continue
        pattern = rf'(?<![\w]){re.escape(key)}\s*[=:]\s*(?:"([^"]*)"|([^\s"]+))'
        m = re.search(pattern, text, re.IGNORECASE)
        if m is None:
            continue
        value = m.group(1) if m.group(1) is not None else m.group(2).rstrip(_TRAILING_PUNCT)
        args[key] = _coerce(value, prop)
        pairs.append(m.span())
    for span in pairs:
        used.take(span)

    quoted = [m for m in _QUOTED_RE.finditer(text) if used.free(m.span())]
    taken = used  # from here on: also quoted strings, enum values and taken words
    for m in quoted:
        taken.take(m.span())
    numbers = iter(m.group(0) for m in _NUMBER_RE.finditer(text) if taken.free(m.span()))
    booleans = iter(m.group(1) for m in _BOOL_RE.finditer(text) if taken.free(m.span()))
    strings = iter(m.group(1) for m in quoted)
    start = match[1] if match else 0
    # Lazy on purpose: spans used up later (enum values, taken words) are honoured.
    words = iter(
        (w, m.span())
        for m in _WORD_RE.finditer(text, start)
        if taken.free(m.span())
        and (w := m.group(0).strip(_TRAILING_PUNCT + "(")).lower() not in STOPWORDS
        and w
        and not _NUMBER_RE.fullmatch(w)
    )

    # 2. remaining properties by type, in schema order.
    enum_budget = MAX_ENUM_VALUES  # enum values tried, over all properties
    for key, prop in props:
        if key in args or not isinstance(prop, Mapping):
            continue
        kind = _prop_type(prop)
        found: str | None = None
        if kind in ("integer", "number"):
            found = next(numbers, None)
        elif kind == "boolean":
            found = next(booleans, None)
        elif kind == "string":
            enum = prop.get("enum")
            if isinstance(enum, list):
                hit, tried = _find_enum(text, enum[:enum_budget], taken)
                enum_budget -= tried
                if hit is not None:
                    found = hit[0]
                    taken.take(hit[1])
            else:
                found = next(strings, None)
                word = next(words, None) if found is None else None
                if word is not None:
                    found = word[0]
                    taken.take(word[1])
        if found is not None:
            args[key] = _coerce(found, prop)

    # 3. required properties still missing get a neutral value of their type.
    for key in required:
        if key not in args:
            prop = props_by_name.get(key)
            args[key] = _default_for(prop if isinstance(prop, Mapping) else {})
    return args


# --- decision --------------------------------------------------------------------------------


def _anchor(entries: Sequence[Entry]) -> int | None:
    for i in range(len(entries) - 1, -1, -1):
        if entries[i].kind in ("user", "function_call_output"):
            return i
    return None


def _tool_named(tools: Sequence[Tool], name: str) -> Tool | None:
    return next((t for t in tools if t.name == name), None)


def _call(tool: Tool, text: str, match: ToolMatch | None) -> FunctionCall:
    span = (match.start, match.end) if match and match.tool is tool else None
    args = extract_arguments(text, tool, span)
    return FunctionCall(tool.name, json.dumps(args, separators=(",", ":"), ensure_ascii=False))


def _text_reply(entries: Sequence[Entry], anchor: int | None) -> str:
    if anchor is None:
        return GREETING
    entry = entries[anchor]
    if entry.kind == "function_call_output":
        name = next(
            (
                e.name
                for e in reversed(entries[:anchor])
                if e.kind == "function_call" and e.call_id == entry.call_id
            ),
            "unknown",
        )
        return f"The tool {name or 'unknown'} returned: {entry.text[:TOOL_OUTPUT_LIMIT]}"
    text = entry.text.strip()
    if not text and entry.has_audio:
        return f"I heard {entry.audio_ms} ms of audio."
    if text[:4].lower() == "say ":
        return text[4:]
    return f"You said: {text}"


def decide(
    entries: Sequence[Entry],
    tools: Sequence[Tool] = (),
    *,
    tool_choice: object = "auto",
    instructions: str | None = None,
) -> Decision:
    """Decide the next response for a conversation (see the module docstring for rules)."""
    anchor = _anchor(entries)
    tools = [t for t in tools if t.name]
    can_call = (
        anchor is not None
        and entries[anchor].kind == "user"
        and not any(e.kind == "function_call" for e in entries[anchor + 1 :])
        and tool_choice != "none"
        and bool(tools)
    )
    if can_call and anchor is not None:
        text = entries[anchor].text.strip()
        match = find_tool(text, tools)
        if isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
            forced = _tool_named(tools, str(tool_choice.get("name")))
            if forced is not None:
                return _call(forced, text, match)
        elif tool_choice == "required":
            return _call(match.tool if match else tools[0], text, match)
    forced_text = always_reply(instructions)
    if forced_text is not None:
        return TextReply(forced_text)
    if can_call and anchor is not None and tool_choice == "auto":
        text = entries[anchor].text.strip()
        match = find_tool(text, tools)
        if match is not None:
            return _call(match.tool, text, match)
    return TextReply(_text_reply(entries, anchor))
