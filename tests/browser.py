"""Helpers for the real-browser tests: the system's Chromium (through Playwright, or started
plainly with a DevTools session of our own where Playwright's would stop it prerendering), and
real HTTP(S) servers in the test's event loop that record what they were asked and answered."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

if TYPE_CHECKING:
    from playwright.async_api import Browser

# The product URLs must be https on 443 with an allowed host; Chromium is told to resolve this
# host to the local product server instead (--host-resolver-rules), so no test leaves the machine.
PRODUCT_HOST = "www.aliexpress.com"
# Where the buyer finds the link: another site than the service's, as a real bio page is.
KOL_HOST = "www.instagram.com"

# Debian's /usr/bin/chromium is a shell wrapper that adds flags of its own (extensions, GPU
# rasterisation); the binary behind it is what Playwright should start.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# The network is closed here: without the background-networking flags Chromium's own
# connections (component updates, sync, QUIC probes) are refused many at a time.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# The longest any browser test waits for one thing to happen; nothing here should take a second.
WAIT_S = 15

# A desktop Chrome: headless Chromium says "HeadlessChrome", which the service rightly judges a bot.
DESKTOP_CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/156.0.0.0 Safari/537.36")


def chromium_path() -> str | None:
    wanted = os.environ.get("MCODE_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for name in CANDIDATES:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        if os.environ.get("MCODE_CHROMIUM"):
            return f"MCODE_CHROMIUM={os.environ['MCODE_CHROMIUM']} is not an executable"
        return "no Chromium found (Debian: apt-get install chromium; or set MCODE_CHROMIUM to its binary)"
    return None


def launch_args(site_port: int) -> list[str]:
    return [
        *FLAGS,
        f"--host-resolver-rules=MAP {PRODUCT_HOST} 127.0.0.1:{site_port}, MAP {KOL_HOST} 127.0.0.1:{site_port}",
        # the site's certificate comes from a throwaway CA
        "--ignore-certificate-errors",
    ]


@contextlib.asynccontextmanager
async def launched(site_port: int) -> AsyncIterator[Browser]:
    """The system's Chromium, headless, resolving the product and bio hosts to the local site."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path(), args=launch_args(site_port),
                                            headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


class _InLoopServer(uvicorn.Server):
    # pytest owns the signal handlers; a test server must not take Ctrl-C away from it
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket, *, lifespan: Literal["on", "off"] = "off",
                ssl: tuple[Path, Path] | None = None) -> AsyncIterator[None]:
    """`app` served on `sock` by uvicorn in this event loop until the block ends."""
    config = uvicorn.Config(
        app, lifespan=lifespan, log_config=None, log_level="warning", access_log=False, ws="none",
        proxy_headers=False, timeout_graceful_shutdown=2,
        ssl_certfile=str(ssl[0]) if ssl else None, ssl_keyfile=str(ssl[1]) if ssl else None,
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("the test server stopped before it started")
                await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@dataclass
class Seen:
    """A request one of the test servers received, and what it answered."""

    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    done: bool = False


@dataclass
class Recorder:
    """Wraps an ASGI app and keeps every HTTP request it gets, with the answer."""

    app: Any
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = Seen(scope["path"], scope["query_string"].decode("latin-1"), _decoded(scope["headers"]))
        self.seen.append(seen)

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
                seen.response_headers = _decoded(message.get("headers", []))
            elif message["type"] == "http.response.body":
                seen.body += message.get("body", b"")
                seen.done = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, recording_send)

    def to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def wait_for(self, test: Callable[[Seen], bool]) -> Seen:
        """The first answered request that passes `test`, waiting for it up to WAIT_S."""
        async with asyncio.timeout(WAIT_S):
            while True:
                found = next((s for s in self.seen if s.done and test(s)), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.02)


def _decoded(headers: Any) -> dict[str, str]:
    # a repeated header keeps its last value: none that these tests read is sent twice
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}


@dataclass
class Pages:
    """A tiny site: HTML the test put at a path; any other path echoes its own URL (a landing page)."""

    html: dict[str, str] = field(default_factory=dict)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path: str = scope["path"]
        body = self.html.get(path)
        if body is None:
            query = html.escape(scope["query_string"].decode("latin-1"))
            body = f"<!doctype html><title>landing</title><p>landed on <code>{html.escape(path)}?{query}</code>"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body.encode()})


def certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for the product and KOL hosts from a throwaway CA: (chain, key) files."""
    import trustme

    cert = trustme.CA().issue_cert(PRODUCT_HOST, KOL_HOST)
    chain, key = folder / "cert.pem", folder / "key.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="mcode-browser-")


class DevTools:
    """Chromium's DevTools protocol on its own websocket, attached through the tab target as
    Chrome's own DevTools is. Chromium refuses to prerender for a page whose session was attached
    to the page target directly, as every Playwright session is; for this one it prerenders."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                waiting = self.replies.pop(message["id"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            else:
                self.events.append(message)
                self.arrived.set()

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
                   ) -> dict[str, Any]:
        number = next(self.ids)
        reply = self.replies[number] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"id": number, "method": method, "params": params or {}}
                                      | ({"sessionId": session} if session else {})))
        async with asyncio.timeout(WAIT_S):
            message = await reply
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        result: dict[str, Any] = message["result"]
        return result

    async def event(self, method: str, test: Callable[[dict[str, Any]], bool] = lambda params: True,
                    ) -> dict[str, Any]:
        """The params of the first event `method` so far or to come (up to WAIT_S) that pass `test`."""
        async with asyncio.timeout(WAIT_S):
            while True:
                for e in self.events:
                    if e.get("method") == method and test(e["params"]):
                        params: dict[str, Any] = e["params"]
                        return params
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def chromium_with_devtools(site_port: int, profile: Path) -> AsyncIterator[tuple[DevTools, str]]:
    """Chromium started as a plain process, and a DevTools session on its one page: (tools, page session)."""
    from websockets.asyncio.client import connect

    path = chromium_path()
    assert path is not None
    proc = await asyncio.create_subprocess_exec(
        path, *launch_args(site_port), f"--user-data-dir={profile}", f"--user-agent={DESKTOP_CHROME}",
        "--remote-debugging-port=0", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so its helpers go with it
    )
    try:
        active = profile / "DevToolsActivePort"  # "port\npath", once Chromium listens
        async with asyncio.timeout(WAIT_S):
            while True:
                written = active.read_text().split() if active.exists() else []
                if len(written) == 2:
                    break
                await asyncio.sleep(0.05)
        async with connect(f"ws://127.0.0.1:{written[0]}{written[1]}", max_size=None) as ws:
            tools = DevTools(ws)
            try:
                found = await tools.send("Target.getTargets", {"filter": [{"type": "tab"}]})
                [tab] = [t for t in found["targetInfos"] if t["type"] == "tab"]
                attached = await tools.send("Target.attachToTarget", {"targetId": tab["targetId"], "flatten": True})
                await tools.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False,
                                                          "flatten": True}, attached["sessionId"])
                page = await tools.event("Target.attachedToTarget", lambda p: p["targetInfo"]["type"] == "page")
                yield tools, page["sessionId"]
            finally:
                tools.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tools.reader
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
