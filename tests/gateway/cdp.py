"""A headless Chromium driven over the DevTools protocol (a WebSocket; no
new dependency): start it, open a page, evaluate JavaScript, screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def find_chromium() -> str | None:
    """The Chromium executable, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium process with one page (a DevTools session)."""

    def __init__(self, executable: str, profile: Path, fake_audio: Path | None = None) -> None:
        self._args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
        ]
        if fake_audio is not None:
            self._args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
        self._profile = profile
        self._proc: asyncio.subprocess.Process | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._session: str | None = None
        self.console: list[str] = []

    async def __aenter__(self) -> Chromium:
        self._proc = await asyncio.create_subprocess_exec(
            *self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self._proc.returncode is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._ws = await connect(
            f"ws://127.0.0.1:{port}{path}", max_size=64 * 1024 * 1024, open_timeout=10
        )
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        self._session = attached["sessionId"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await asyncio.wait_for(self._proc.wait(), 10)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command (on the page once attached); its result."""
        assert self._ws is not None
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if self._session is not None:
            message["sessionId"] = self._session
        await self._ws.send(json.dumps(message))
        async with asyncio.timeout(30):
            while True:
                data = json.loads(await self._ws.recv())
                if data.get("id") == msg_id:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    result: dict[str, Any] = data.get("result", {})
                    return result

    async def goto(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 20
        while await self.eval("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not load")
            await asyncio.sleep(0.05)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression on the page (as a user gesture)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "userGesture": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        """A PNG of the page."""
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(shot["data"])
