"""The one exception tree of ray-realtime.

Every exception the package raises on purpose derives from :class:`RayRealtimeError`::

    RayRealtimeError
    ├── UserError                     the caller used the API wrongly
    │   ├── ConfigError               a config value is invalid
    │   ├── ToolDefinitionError       a function cannot become a tool
    │   ├── InputTooLargeError        a message or audio chunk is over its bound
    │   └── SerializationError        a value cannot cross a process boundary
    ├── SessionError                  about one session
    │   ├── SessionClosedError        a call on a closed session
    │   ├── SessionNotFoundError      no live session with that id
    │   ├── SessionAccessError        the caller does not hold the session's secret
    │   └── SessionLostError          the session's actor died
    ├── ModelError                    about the realtime model connection
    │   ├── ModelConnectionError      connecting failed or the connection dropped
    │   └── ProtocolError             a peer sent something the protocol forbids
    ├── ToolError                     a tool or guardrail call failed
    │   └── ToolTimeoutError          ... by running past its timeout
    ├── ClusterError                  about Ray and the service
    │   ├── ClusterConnectError       joining or starting Ray failed
    │   ├── NoCapacityError           no node can take another session
    │   └── ServiceNotRunningError    the router is not deployed
    └── StoreError                    about the session store (or its data is malformed)
        ├── StoreUnavailableError     the store's backend failed or cannot be reached
        └── StoreOverflowError        the write-behind queue is full

Ray pickles exceptions when they cross an actor boundary, so every ``__init__``
here hands all its positional arguments to ``super().__init__`` and nothing is
keyword-only; a test round-trips each class through pickle.
"""

from __future__ import annotations

__all__ = [
    "ClusterConnectError",
    "ClusterError",
    "ConfigError",
    "InputTooLargeError",
    "ModelConnectionError",
    "ModelError",
    "NoCapacityError",
    "ProtocolError",
    "RayRealtimeError",
    "SerializationError",
    "ServiceNotRunningError",
    "SessionAccessError",
    "SessionClosedError",
    "SessionError",
    "SessionLostError",
    "SessionNotFoundError",
    "StoreError",
    "StoreOverflowError",
    "StoreUnavailableError",
    "ToolDefinitionError",
    "ToolError",
    "ToolTimeoutError",
    "UserError",
]


class RayRealtimeError(Exception):
    """Base class of every error raised by ray-realtime.

    ``message`` is the human-readable text; ``str(error)`` returns it even when
    the subclass carries more arguments.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UserError(RayRealtimeError):
    """The caller used the API wrongly; fix the call, retrying will not help."""


class ConfigError(UserError):
    """A configuration value is missing, of the wrong type or out of range."""


class ToolDefinitionError(UserError):
    """A function or handoff cannot be turned into a tool definition."""


class InputTooLargeError(UserError):
    """A message, audio chunk or event is over its configured bound.

    ``size`` is what was offered and ``limit`` the bound, both in the unit the
    message names (bytes or characters).
    """

    def __init__(self, message: str = "", size: int = 0, limit: int = 0) -> None:
        super().__init__(message, size, limit)
        self.size = size
        self.limit = limit


class SerializationError(UserError):
    """A value (context, agent, tool) cannot be serialised to cross a process."""


class SessionError(RayRealtimeError):
    """Something about one realtime session; ``session_id`` says which."""

    def __init__(self, message: str = "", session_id: str = "") -> None:
        super().__init__(message, session_id)
        self.session_id = session_id


class SessionClosedError(SessionError):
    """A call was made on a session that has been closed."""


class SessionNotFoundError(SessionError):
    """No live session is registered under this id."""


class SessionAccessError(SessionError):
    """The caller does not hold the session's secret: a missing, wrong or
    malformed ticket (see ``RealtimeSession.ticket``), or a bare session id
    where the service does not allow open attach."""


class SessionLostError(SessionError):
    """The actor hosting the session died; its handle can no longer be used."""


class ModelError(RayRealtimeError):
    """Something about the connection to the realtime model."""


class ModelConnectionError(ModelError):
    """Connecting to the realtime model failed, or the connection dropped."""


class ProtocolError(ModelError):
    """A peer sent something the realtime protocol does not allow."""


class ToolError(RayRealtimeError):
    """A tool or guardrail call failed; ``tool_name`` says which."""

    def __init__(self, message: str = "", tool_name: str = "") -> None:
        super().__init__(message, tool_name)
        self.tool_name = tool_name


class ToolTimeoutError(ToolError):
    """A tool or guardrail call ran past its timeout and was abandoned."""


class ClusterError(RayRealtimeError):
    """Something about Ray or the deployed ray-realtime service."""


class ClusterConnectError(ClusterError):
    """Joining an existing Ray cluster or starting an embedded one failed.

    ``address`` is the address that was tried (``None`` for an embedded start).
    """

    def __init__(self, message: str = "", address: str | None = None) -> None:
        super().__init__(message, address)
        self.address = address


class NoCapacityError(ClusterError):
    """No node can take another session under the placement policy.

    ``requirement_repr`` is the ``repr`` of the placement requirement that
    could not be met ("" when the refusal came from a full session actor).
    """

    def __init__(self, message: str = "", requirement_repr: str = "") -> None:
        super().__init__(message, requirement_repr)
        self.requirement_repr = requirement_repr


class ServiceNotRunningError(ClusterError):
    """The ray-realtime router is not deployed in the Ray cluster."""


class StoreError(RayRealtimeError):
    """Something about the session store; also raised when stored data is malformed."""


class StoreUnavailableError(StoreError):
    """The store's backend failed a write or a read, or cannot be reached.

    Writes are idempotent, so what failed may be retried once the backend is back.
    """


class StoreOverflowError(StoreError):
    """The write-behind queue is full: the write was refused and nothing was queued."""
