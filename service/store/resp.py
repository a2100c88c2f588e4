"""A pipelined Redis connection that speaks RESP itself, for the one Redis call on a buyer's path.

redis-py's asyncio client spends about 95 µs of CPU on a script call on the benchmark machine
(connection pool, retry wrapper, stream reader, argument packing); this one spends about 30:
each command is written to one socket as it comes, and replies are matched to commands in the
order they arrive (Redis answers in order), parsed by hiredis. Everything else in the service
keeps redis-py; this only sends commands and returns their replies.

A command that times out (the caller's asyncio.timeout) closes the connection, and with it every
command in flight on it: their replies can no longer be trusted to arrive. The next command
connects again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import ssl
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

Arg = bytes | str | int


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP: an array of bulk strings. Built as one latin-1 string (where a
    character is a byte) and encoded once, which is cheaper than a bytes object per argument."""
    parts = [f"*{len(args)}\r\n"]
    for arg in args:
        if isinstance(arg, str):
            if not arg.isascii():
                arg = arg.encode().decode("latin-1")  # its UTF-8 bytes, one character each
        elif isinstance(arg, bytes):
            arg = arg.decode("latin-1")
        else:
            arg = str(arg)
        parts.append(f"${len(arg)}\r\n{arg}\r\n")
    return "".join(parts).encode("latin-1")


class Script:
    """A Lua script, called by its SHA1 and sent whole only when Redis does not have it cached."""

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()  # Redis names scripts so


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()  # IndexError: a reply nobody asked for
                if future.done():
                    continue  # its caller gave up (and the connection is closing)
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError):
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection to Redis closed")
        future = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        self.waiting.append(future)
        return future

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, and fails what is in flight


_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_SSL_OPTIONS = {"ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"}


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a rediss:// URL, read as redis-py reads them. An option this does not
    know stops the service at start: a URL that works for redis-py must not quietly send every
    click to the spool here."""
    unknown = {name for name in options if name.startswith("ssl_")} - _SSL_OPTIONS
    if unknown:
        raise ValueError(f"MCODE_REDIS_URL: {', '.join(sorted(unknown))} not supported by the click log's connection")
    verify = str(options.get("ssl_cert_reqs", "required")).lower()
    if verify not in _VERIFY:
        raise ValueError(f"MCODE_REDIS_URL: ssl_cert_reqs must be none, optional or required, not {verify!r}")
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path"))
    context.check_hostname = verify != "none" and bool(options.get("ssl_check_hostname", True))
    context.verify_mode = _VERIFY[verify]
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


def _keep_alive(sock: socket.socket | None) -> None:
    """Probe an idle connection each minute: a NAT or load balancer on the way keeps it open, and
    a peer gone silently is noticed before a buyer's click is sent into it."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):  # Linux names; macOS has only some of them
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Connection:
    """One connection to the Redis of a redis://, rediss:// or unix:// URL (as redis-py reads it),
    opened on first use and again after it breaks."""

    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        options: dict[str, Any] = dict(parse_url(url))
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.ssl = _ssl_context(options) if options.get("connection_class") is SSLConnection else None
        self.handshake: list[tuple[Arg, ...]] = []
        if options.get("password"):
            user = options.get("username")
            self.handshake.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if int(options.get("db", 0)):
            self.handshake.append(("SELECT", int(options["db"])))
        self.connect_timeout = connect_timeout
        self.protocol: _Protocol | None = None
        self.connecting = asyncio.Lock()

    async def call(self, *args: Arg) -> Any:
        protocol = self.protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        future = protocol.send(encode(args))
        try:
            return await future
        except asyncio.CancelledError:
            protocol.abort()  # timed out (or shutting down): what is in flight is in doubt
            raise

    async def evalsha(self, script: Script, *args: Arg) -> Any:
        try:
            return await self.call(b"EVALSHA", script.sha, 0, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call(b"EVAL", script.body, 0, *args)  # EVAL also caches it for next time

    async def _connect(self) -> _Protocol:
        async with self.connecting:
            if self.protocol is not None and not self.protocol.closed:
                return self.protocol  # another caller connected meanwhile
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    _, protocol = await loop.create_unix_connection(_Protocol, self.path)
                else:
                    transport, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.ssl)
                    _keep_alive(transport.get_extra_info("socket"))
                try:
                    for command in [protocol.send(encode(c)) for c in self.handshake]:
                        await command
                except BaseException:
                    protocol.abort()
                    raise
            self.protocol = protocol
            return protocol

    async def close(self) -> None:
        if self.protocol is not None:
            self.protocol.abort()
            self.protocol = None
