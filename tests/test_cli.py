"""The command line's own texts (no Ray needed)."""

from __future__ import annotations

import argparse
import re

import pytest

from ray_realtime.cli import build_parser

# reST/Sphinx markup that must not reach a terminal.
MARKUP = re.compile(r"``|:func:|:class:|:meth:|:mod:|:data:")


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    found = [("ray-realtime", parser)]
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices.items())
    return found


@pytest.mark.parametrize(("name", "parser"), _parsers(), ids=lambda p: str(p)[:20])
def test_help_is_plain_text(name: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert not MARKUP.search(text), text
    assert text.strip()


def test_every_command_takes_verbose() -> None:
    for name, parser in _parsers():
        if name in ("bench",):  # the suite parses its own options
            continue
        assert "--verbose" in parser.format_help(), name


def test_bench_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    from ray_realtime.bench import main, repository_root

    if repository_root() is None:
        pytest.skip("no source tree")
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--quick" in text
    assert not MARKUP.search(text), text
