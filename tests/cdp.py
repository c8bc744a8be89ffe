"""Headless Chromium (Debian's package) driven over the DevTools protocol, for page tests.

A small client on aiohttp's websocket (already a dependency of the server): one browser
connection, pages attached with flat sessions. Only what the tests need: open a page,
evaluate JavaScript (as a user gesture), set permissions and file inputs, read the console's
entries (``Browser.events``).

The browser is kept off the network: no background services, and every host name but the
local ones resolves to nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-sync",
    "--disable-default-apps",
    "--no-pings",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    # WebRTC on the loopback interface only, with plain (not mDNS-hidden) candidates.
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Page:
    def __init__(self, browser: "Browser", session_id: str, target_id: str):
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id

    async def send(self, method: str, **params):
        return await self.browser.send(method, session_id=self.session_id, **params)

    async def eval(self, expression: str, await_promise: bool = True, timeout_s: float = 30.0):
        res = await asyncio.wait_for(self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=await_promise, returnByValue=True,
            userGesture=True,
        ), timeout_s)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CDPError(f"page error: {d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20.0, period_s: float = 0.1):
        """Poll a JS expression until it is truthy; returns its value."""
        t0 = time.monotonic()
        while True:
            v = await self.eval(expression)
            if v:
                return v
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"page: {expression} still false after {timeout_s} s")
            await asyncio.sleep(period_s)

    async def close(self):
        await self.browser.send("Target.closeTarget", targetId=self.target_id)


class Browser:
    """``async with Browser(binary, profile_dir, extra_flags) as b: page = await b.open(url)``."""

    def __init__(self, binary: str, profile: Path, flags: list[str] = ()):
        self.binary = binary
        self.profile = Path(profile)
        self.flags = list(flags)
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []

    async def __aenter__(self):
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, *self.flags, f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(self.profile / "chromium.log", "wb"),
            start_new_session=True,
        )
        t0 = time.monotonic()
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() - t0 > 30:
                raise CDPError(f"chromium did not start (see {self.profile / 'chromium.log'})")
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().split("\n")[:2]
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self):
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(CDPError(f"{data['error'].get('message')}: {data['error'].get('data', '')}"))
                else:
                    fut.set_result(data.get("result", {}))
            elif "method" in data:
                self.events.append(data)
                del self.events[:-1000]

    async def send(self, method: str, session_id: str | None = None, **params):
        i = next(self._ids)
        msg = {"id": i, "method": method, "params": params}
        if session_id:
            msg["sessionId"] = session_id
        fut = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, 30)

    async def open(self, url: str) -> Page:
        target = (await self.send("Target.createTarget", url="about:blank"))["targetId"]
        sid = (await self.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        page = Page(self, sid, target)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Log.enable")  # the console's entries (a failed request, ...) arrive as events
        await page.send("Page.navigate", url=url)
        await page.wait_for("document.readyState === 'complete'")
        return page

    async def __aexit__(self, *exc):
        try:
            self._reader.cancel()
            await self.ws.close()
            await self.http.close()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, 15)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait()
