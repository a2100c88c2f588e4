"""A pipelined Redis connection that speaks RESP itself, for the one Redis call on a buyer's path.

redis-py's asyncio client spends about 95 µs of CPU on a script call on the benchmark machine
(connection pool, retry wrapper, stream reader, argument packing); this one spends about 30:
each command is written to one socket as it comes, and replies are matched to commands in the
order they arrive (Redis answers in order), parsed by hiredis. Everything else in the service
keeps redis-py; this only sends commands and returns their replies.

A command that times out (the caller's asyncio.timeout) closes the connection, and with it every
command in flight on it: their replies can no longer be trusted to arrive. The next command
connects again.

On a Redis Cluster (`Cluster`, chosen by `Redis` when the first node that answers says so) there
is one such connection per master, and each call goes to the owner of its keys' slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ResponseError

log = logging.getLogger("mcode.resp")

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

    def __init__(self, url: str, connect_timeout: float = 2.0, address: tuple[str, int] | None = None) -> None:
        self.url = url
        options: dict[str, Any] = dict(parse_url(url))
        if address is not None:  # a node of a cluster: the URL's credentials and TLS, at this address
            options.update(host=address[0], port=address[1], db=0)
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

    async def asking(self, *args: Arg) -> Any:
        """A command for a slot this node is importing (after an ASK): ASKING and the command
        are written together, so no other command comes between them."""
        protocol = self.protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        asked = protocol.send(encode((b"ASKING",)))
        future = protocol.send(encode(args))
        try:
            await asked
            return await future
        except asyncio.CancelledError:
            protocol.abort()
            raise

    async def evalsha(self, script: Script, keys: Sequence[Arg], *args: Arg) -> Any:
        try:
            return await self.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call(b"EVAL", script.body, len(keys), *keys, *args)  # EVAL also caches it

    async def ping(self) -> None:
        await self.call(b"PING")

    def failed_over(self) -> set[int]:
        """Slots that moved to a replica since last asked: one Redis node has none."""
        return set()

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


Address = tuple[str, int]
# How often a call is tried again after MOVED, ASK, TRYAGAIN, CLUSTERDOWN or a broken connection;
# the caller's own timeout bounds the time (a buyer's click goes to the spool instead).
CLUSTER_ATTEMPTS = 6
# The slot map is read again at least this often, to notice a failover that no call ran into.
CLUSTER_REFRESH_S = 1.0
# A node asked for the slot map answers in well under a millisecond; one that does not within
# this is skipped for the next.
CLUSTER_ASK_S = 0.5


def slot(key: Arg) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


class Cluster:
    """Redis Cluster, for the click log's calls: a Connection per master, each call sent to the
    owner of its keys' slot. The slot map is learnt at the first call, read again each second
    and at once on MOVED; ASK is followed for one call; a call that meets a broken connection,
    TRYAGAIN (a slot half moved) or CLUSTERDOWN is tried again on the slot's owner as the map
    then has it. Slots whose owner became one of its replicas (a failover: writes the old master
    acknowledged may be missing) are reported by failed_over()."""

    def __init__(self, urls: Sequence[str], connect_timeout: float = 2.0) -> None:
        self.urls = list(urls)
        self.connect_timeout = connect_timeout
        self.seeds = [Connection(url, connect_timeout, address=address(url)) for url in self.urls]
        self.nodes: dict[Address, Connection] = {}
        self.owners: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self.replicas: list[frozenset[Address]] = [frozenset()] * REDIS_CLUSTER_HASH_SLOTS
        self.moved_to_replica: set[int] = set()
        self.refreshed = -float("inf")
        self.refreshing = asyncio.Lock()
        self.refresher: asyncio.Task[None] | None = None

    def node(self, address: Address) -> Connection:
        conn = self.nodes.get(address)
        if conn is None:
            conn = self.nodes[address] = Connection(self.urls[0], self.connect_timeout, address=address)
        return conn

    async def refresh(self, force: bool = True) -> None:
        """Read the slot map from the first node that answers (known masters first, then the seeds)."""
        async with self.refreshing:
            if not force and time.monotonic() - self.refreshed < CLUSTER_REFRESH_S:
                return  # another caller just did
            conn, ranges = await first_answer([*self.nodes.values(), *self.seeds], CLUSTER_ASK_S, b"CLUSTER", b"SLOTS")
            self._learn(ranges, conn.host)
            self.refreshed = time.monotonic()

    def _learn(self, ranges: list[Any], asked: str) -> None:
        owners: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        replicas: list[frozenset[Address]] = [frozenset()] * REDIS_CLUSTER_HASH_SLOTS
        for start, end, master, *others in ranges:
            start, end = int(start), int(end) + 1
            # a node that does not know its own address reports an empty host: the one we asked
            owner = ((master[0] or asked.encode()).decode(), int(master[1]))
            theirs = frozenset(((r[0] or asked.encode()).decode(), int(r[1])) for r in others)
            if owner in self.replicas[start] or owner in self.replicas[end - 1]:
                self.moved_to_replica.update(range(start, end))  # a replica promoted keeps the range
            owners[start:end] = [owner] * (end - start)
            replicas[start:end] = [theirs] * (end - start)
        self.owners, self.replicas = owners, replicas
        for address in set(self.nodes) - set(owners):
            conn = self.nodes.pop(address)
            if conn.protocol is not None:
                conn.protocol.abort()

    def failed_over(self) -> set[int]:
        """Slots whose master was replaced by its replica since last asked (and forgets them)."""
        slots, self.moved_to_replica = self.moved_to_replica, set()
        return slots

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(CLUSTER_REFRESH_S)
            try:
                await self.refresh(force=False)
            except (OSError, ResponseError, TimeoutError):
                pass  # no node answers now: the calls find out for themselves, and the next round asks again
            except Exception:  # a reply we cannot read must not end the refreshing for good
                log.exception("redis cluster: reading the slot map failed")

    async def call_in(self, number: int, *args: Arg) -> Any:
        """A command for the keys of one slot, on that slot's owner."""
        if self.refresher is None:  # noticed in the background, off the caller's time
            self.refresher = asyncio.get_running_loop().create_task(self._keep_refreshing())
        asking: Address | None = None
        for attempt in range(CLUSTER_ATTEMPTS):
            owner = asking or self.owners[number]
            if owner is None:
                await self.refresh()
                owner = self.owners[number]
                if owner is None:
                    raise ConnectionError(f"no node of the Redis Cluster serves slot {number}")
            conn = self.node(owner)
            try:
                if asking:
                    return await conn.asking(*args)
                return await conn.call(*args)
            except ResponseError as exc:
                kind, _, rest = str(exc).partition(" ")
                if kind == "MOVED":
                    self.owners[number] = _redirected(rest, owner)
                    asking = None
                    continue
                if kind == "ASK":
                    asking = _redirected(rest, owner)
                    continue
                if kind not in ("TRYAGAIN", "CLUSTERDOWN") or attempt == CLUSTER_ATTEMPTS - 1:
                    raise
            except OSError:
                if attempt == CLUSTER_ATTEMPTS - 1:
                    raise
                with contextlib.suppress(OSError):
                    await self.refresh()
            asking = None
            await asyncio.sleep(0.02 * (attempt + 1))
        raise ConnectionError(f"slot {number} was redirected {CLUSTER_ATTEMPTS} times: the cluster map keeps changing")

    async def call(self, *args: Arg) -> Any:
        """A command without keys, on the owner of slot 0."""
        return await self.call_in(0, *args)

    async def evalsha(self, script: Script, keys: Sequence[Arg], *args: Arg) -> Any:
        number = slot(keys[0]) if keys else 0
        try:
            return await self.call_in(number, b"EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call_in(number, b"EVAL", script.body, len(keys), *keys, *args)

    async def ping(self) -> None:
        """Every master answers."""
        await self.refresh()
        masters = {owner for owner in self.owners if owner is not None}
        if len(masters) == 0:
            raise ConnectionError("the Redis Cluster has no master")
        await asyncio.gather(*(self.node(m).call(b"PING") for m in masters))

    async def close(self) -> None:
        if self.refresher is not None:
            self.refresher.cancel()
        for conn in [*self.nodes.values(), *self.seeds]:
            await conn.close()


def address(url: str) -> Address:
    options = parse_url(url)
    return options.get("host", "localhost"), int(options.get("port", 6379))


def _redirected(rest: str, current: Address) -> Address:
    """The node of a MOVED or ASK answer (`<slot> <host>:<port>`; the host may be empty)."""
    host, _, port = rest.split(" ")[-1].rpartition(":")
    return (host or current[0], int(port))


async def detect(urls: Sequence[str], connect_timeout: float = 2.0) -> Connection | Cluster:
    """One node, or a Redis Cluster when the first node that answers says it is one."""
    probes = [Connection(url, connect_timeout) for url in urls]
    try:
        probe, info = await first_answer(probes, connect_timeout, b"INFO", b"cluster")
    finally:
        for each in probes:
            await each.close()
    if b"cluster_enabled:1" in info:  # the node that answered is asked first from now on
        return Cluster([probe.url, *(u for u in urls if u != probe.url)], connect_timeout)
    return Connection(probe.url, connect_timeout)


async def first_answer(conns: Sequence[Connection], within_s: float, *command: Arg) -> tuple[Connection, Any]:
    """The first of `conns`, in order, that answers `command` within `within_s`, and its answer."""
    errors = []
    for conn in conns:
        try:
            async with asyncio.timeout(within_s):
                return conn, await conn.call(*command)
        except (OSError, ResponseError, TimeoutError) as exc:
            errors.append(f"{conn.host}:{conn.port}: {exc or type(exc).__name__}")
    raise ConnectionError("no Redis node answers: " + "; ".join(errors))


def split_urls(urls: str) -> list[str]:
    """MCODE_REDIS_URL: one URL, or several separated by commas (nodes of one cluster)."""
    return [u.strip() for u in urls.split(",") if u.strip()]


class Redis:
    """The click log's Redis as MCODE_REDIS_URL names it, one node or a cluster: found out at the
    first call that reaches it (Redis may be down when the service starts)."""

    def __init__(self, urls: str, connect_timeout: float = 2.0) -> None:
        self.urls = split_urls(urls)
        self.connect_timeout = connect_timeout
        self.found: Connection | Cluster | None = None
        self.finding = asyncio.Lock()

    async def _found(self) -> Connection | Cluster:
        if self.found is None:
            async with self.finding:
                if self.found is None:
                    self.found = await detect(self.urls, self.connect_timeout)
        return self.found

    async def call(self, *args: Arg) -> Any:
        return await (self.found or await self._found()).call(*args)

    async def evalsha(self, script: Script, keys: Sequence[Arg], *args: Arg) -> Any:
        return await (self.found or await self._found()).evalsha(script, keys, *args)

    async def ping(self) -> None:
        await (await self._found()).ping()

    def failed_over(self) -> set[int]:
        return self.found.failed_over() if self.found is not None else set()

    async def close(self) -> None:
        if self.found is not None:
            await self.found.close()
