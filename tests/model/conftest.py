"""Fixtures shared by the model tests: the scripted loopback peer and connected models."""

from .test_openai_ws import connected, peer

__all__ = ["connected", "peer"]
