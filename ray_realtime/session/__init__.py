"""The session runtime: the driver that runs one session (the core, the model
connection, the tool and guardrail executors), used alike in this process and
in a session actor."""
