"""The click log's own Redis connection, against the real Redis: replies, errors, scripts,
pipelining, and what happens when Redis goes away or stops answering; and its Redis Cluster
client, against a real cluster of the test's own that is resharded and failed over."""

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ResponseError

from service.store import resp
from tests.cluster import LocalCluster
from tests.conftest import REDIS_DB, REDIS_HOST, REDIS_PORT, REDIS_URL, one_redis_node, redis_url_via
from tests.faults import Proxy


def key() -> str:
    return f"test:resp:{uuid.uuid4().hex}"


@one_redis_node
async def test_replies_come_back_as_redis_py_gives_them() -> None:
    conn = resp.Connection(REDIS_URL)
    k = key()
    try:
        assert await conn.call("SET", k, "välue", "EX", 60) == b"OK"
        assert await conn.call("GET", k) == "välue".encode()
        assert await conn.call("GET", key()) is None
        assert await conn.call("RPUSH", k + "l", b"a", 2) == 2
        assert await conn.call("LRANGE", k + "l", 0, -1) == [b"a", b"2"]
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.call("LPUSH", k, "x")
        assert await conn.call("DEL", k, k + "l") == 2  # an error reply leaves the connection usable
    finally:
        await conn.close()


@one_redis_node
async def test_the_url_database_is_selected() -> None:
    conn = resp.Connection(REDIS_URL)  # database 15 in the tests
    plain = aioredis.Redis.from_url(REDIS_URL)
    db0 = aioredis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/0")
    k = key()
    try:
        await conn.call("SET", k, "1", "EX", 60)
        assert await plain.get(k) == b"1"
        assert await db0.get(k) is None
    finally:
        await conn.close()
        await plain.aclose()
        await db0.aclose()


@one_redis_node
async def test_a_password_in_the_url_is_sent_before_any_command() -> None:
    # The test Redis has no password, so it refuses the AUTH: proof that the AUTH was sent.
    conn = resp.Connection(REDIS_URL.replace("redis://", "redis://:not-the-password@"))
    with pytest.raises(ResponseError, match="AUTH"):
        await conn.call("PING")


@one_redis_node
async def test_scripts_run_by_sha_and_are_sent_whole_only_when_redis_lacks_them() -> None:
    conn = resp.Connection(REDIS_URL)
    plain = aioredis.Redis.from_url(REDIS_URL)
    script = resp.Script(f"-- {uuid.uuid4().hex}\nreturn {{ARGV[1], #ARGV}}")
    try:
        assert await plain.script_exists(script.sha.decode()) == [False]
        assert await conn.evalsha(script, [], "a", "b", 3) == [b"a", 3]
        assert await plain.script_exists(script.sha.decode()) == [True]
        assert await conn.evalsha(script, [], "again") == [b"again", 1]
    finally:
        await conn.close()
        await plain.aclose()


@one_redis_node
async def test_concurrent_calls_share_one_connection_and_get_their_own_replies() -> None:
    conn = resp.Connection(REDIS_URL)
    plain = aioredis.Redis.from_url(REDIS_URL)
    try:
        before = (await plain.info("clients"))["connected_clients"]
        replies = await asyncio.gather(*(conn.call("ECHO", f"reply {i}") for i in range(500)))
        assert conn.protocol is not None and conn.protocol.transport is not None
        sock = conn.protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert replies == [f"reply {i}".encode() for i in range(500)]
        assert (await plain.info("clients"))["connected_clients"] == before + 1
    finally:
        await conn.close()
        await plain.aclose()


@one_redis_node
async def test_a_lost_connection_fails_its_calls_and_the_next_call_connects_again() -> None:
    proxy = await Proxy(REDIS_PORT, REDIS_HOST).start()
    conn = resp.Connection(redis_url_via(proxy.port))
    try:
        assert await conn.call("PING") == b"PONG"
        blocked = asyncio.ensure_future(conn.call("BLPOP", key(), 5))  # in flight when Redis goes
        await asyncio.sleep(0.05)
        await proxy.cut()
        with pytest.raises(ConnectionError):
            await blocked
        with pytest.raises(OSError):  # refused: nothing listens
            await conn.call("PING")
        await proxy.restore()
        assert await conn.call("PING") == b"PONG"
    finally:
        await conn.close()
        await proxy.close()


@one_redis_node
async def test_a_redis_that_stops_answering_times_out_and_its_connection_is_dropped() -> None:
    opened: list[asyncio.Event] = []  # one per connection, set when the client closes it

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed = asyncio.Event()
        opened.append(closed)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass  # reads every command, answers none
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = resp.Connection(f"redis://127.0.0.1:{port}")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await conn.call("PING")
        # the connection was given up: the server sees it close, and the next call opens another
        await asyncio.wait_for(opened[0].wait(), 2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await conn.call("PING")
        assert len(opened) == 2
    finally:
        await conn.close()
        server.close()


@one_redis_node
async def test_unix_socket_urls(tmp_path: Path) -> None:
    path = str(tmp_path / "redis.sock")

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_unix_server(forward, path)
    conn = resp.Connection(f"unix://{path}?db={REDIS_DB}")
    plain = aioredis.Redis.from_url(REDIS_URL)
    k = key()
    try:
        await conn.call("SET", k, "by unix socket", "EX", 60)
        assert await plain.get(k) == b"by unix socket"
    finally:
        await conn.close()
        await plain.aclose()
        server.close()


@one_redis_node
def test_under_uvloop_as_the_server_runs_it() -> None:
    async def main() -> list[bytes]:
        conn = resp.Connection(REDIS_URL)
        try:
            return list(await asyncio.gather(*(conn.call("ECHO", str(i)) for i in range(3))))
        finally:
            await conn.close()

    assert uvloop.run(main()) == [b"0", b"1", b"2"]


def test_tls_options_are_read_as_redis_py_reads_them() -> None:
    plain = resp.Connection("rediss://cache.example:6380/0")
    assert plain.ssl is not None
    assert (plain.ssl.verify_mode, plain.ssl.check_hostname, plain.port) == (ssl.CERT_REQUIRED, True, 6380)
    lax = resp.Connection("rediss://cache.example/0?ssl_cert_reqs=NONE")
    assert lax.ssl is not None and (lax.ssl.verify_mode, lax.ssl.check_hostname) == (ssl.CERT_NONE, False)
    no_host = resp.Connection("rediss://10.0.0.5/0?ssl_check_hostname=false")
    assert no_host.ssl is not None
    assert (no_host.ssl.verify_mode, no_host.ssl.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert resp.Connection("redis://cache.example/0").ssl is None
    # what it cannot honour stops the service at start instead of spooling every click
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        resp.Connection("rediss://cache.example/0?ssl_cert_reqs=sometimes")
    with pytest.raises(ValueError, match="ssl_ca_data"):
        resp.Connection("rediss://cache.example/0?ssl_ca_data=x")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (Debian: apt-get install redis-server)")
    own = LocalCluster(Path(__file__).resolve().parent.parent / ".local" / f"test-resp-cluster-{os.getpid()}").start()
    try:
        yield own
    finally:
        own.stop()
        shutil.rmtree(own.folder, ignore_errors=True)


def in_slot_of(port: int, cluster: LocalCluster) -> str:
    """A new key whose slot the master on `port` owns now."""
    owners = cluster.owners()
    while True:
        candidate = f"test:resp:{uuid.uuid4().hex}"
        if owners[resp.slot(candidate)] == port:
            return candidate


async def test_a_cluster_is_recognised_and_each_call_goes_to_the_owner_of_its_slot(cluster: LocalCluster) -> None:
    redis = resp.Redis(cluster.urls)
    script = resp.Script("return redis.call('SET', KEYS[1], ARGV[1])")
    try:
        await redis.ping()
        assert isinstance(redis.found, resp.Cluster)
        names = [f"test:resp:{uuid.uuid4().hex}" for _ in range(50)]  # spread over every master
        await asyncio.gather(*(redis.evalsha(script, [name], name) for name in names))
        owners = cluster.owners()
        for name in names:
            assert _get(owners[resp.slot(name)], name) == name
    finally:
        await redis.close()


async def test_moved_slots_are_followed_after_a_reshard(cluster: LocalCluster) -> None:
    redis = resp.Redis(cluster.urls)
    try:
        source, target, *_ = cluster.masters()
        name = in_slot_of(source, cluster)
        assert await redis.call(b"PING") == b"PONG"
        await redis.evalsha(resp.Script("return redis.call('INCR', KEYS[1])"), [name])
        # every slot of the source, keys and all, to the target (the client's map is now wrong)
        slots = cluster.owners().count(source)
        await asyncio.to_thread(cluster.reshard, source, target, slots)
        assert await redis.evalsha(resp.Script("return redis.call('INCR', KEYS[1])"), [name]) == 2
        assert _get(target, name) == "2"
        # a master without slots has no vote in a failover: give the source some back
        await asyncio.to_thread(cluster.reshard, target, source, slots // 2)
    finally:
        await redis.close()


async def test_a_failed_master_is_retried_on_its_promoted_replica_and_reported(cluster: LocalCluster) -> None:
    redis = resp.Redis(cluster.urls)
    incr = resp.Script("return redis.call('INCR', KEYS[1])")
    try:
        owners = cluster.owners()
        victim = next(p for p in cluster.masters() if p in owners)
        name = in_slot_of(victim, cluster)
        assert await redis.evalsha(incr, [name]) == 1
        assert redis.failed_over() == set()
        followers = await asyncio.to_thread(cluster.kill, victim)
        await asyncio.to_thread(cluster.wait_failover, followers)
        # within a bounded time the call reaches the new owner, the value it had replicated intact
        for _ in range(50):
            try:
                async with asyncio.timeout(1):
                    value = await redis.evalsha(incr, [name])
                break
            except (OSError, ResponseError, TimeoutError):
                await asyncio.sleep(0.2)
        assert value == 2
        await asyncio.sleep(resp.CLUSTER_REFRESH_S + 0.5)
        assert resp.slot(name) in redis.failed_over()  # the click log sends those shards' recent clicks again
        assert redis.failed_over() == set()
        cluster.restart(victim)
    finally:
        await redis.close()


def _get(port: int, name: str) -> str:
    import subprocess

    return subprocess.run(["redis-cli", "-p", str(port), "GET", name], capture_output=True, text=True).stdout.strip()
