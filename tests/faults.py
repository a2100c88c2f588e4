"""Faults caused for real: a TCP proxy a test can cut and restore, and Redis and PostgreSQL
servers of a test's own that it can kill, pause, stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        await self.server.wait_closed()
        self.server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class OwnRedis:
    """A redis-server of the test's own, under .local/, that the test may kill, pause and restart
    for real (the machine's shared Redis is never touched)."""

    def __init__(self, folder: Path, appendonly: bool = False, appendfsync: str = "everysec") -> None:
        folder = self.folder = folder.resolve()
        self.port = free_port()
        self.options = ["--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync, "--save", ""]
        self.proc: subprocess.Popen[bytes] | None = None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--logfile", str(self.folder / "redis.log"), *self.options])
        if not _wait_port(self.port):
            raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own under .local/ (initdb'd once, as the postgres user
    when run as root), started and stopped for real."""

    def __init__(self, folder: Path) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = found[-1] if found else Path(shutil.which("initdb") or "initdb")
        self.bin = initdb.parent
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            # The postgres user must reach the folder, and a work tree can sit below one it cannot
            # enter (a 0700 temporary folder, a home): /tmp it can, so the cluster lives there.
            tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
            folder = Path(tempfile.gettempdir()) / f"mcode-own-pg-{tag}"
        folder = self.folder = folder.resolve()
        if not (folder / "PG_VERSION").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            if self.as_postgres:
                shutil.chown(folder, "postgres")
            done = subprocess.run([*self.as_postgres, str(self.bin / "initdb"), "-D", str(folder), "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip()}")

    @staticmethod
    def available() -> bool:
        return bool(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb"))

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/mcode"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, str(self.bin / "pg_ctl"), "-D", str(self.folder), *args],
                       check=True, capture_output=True)

    def start(self) -> OwnPostgres:
        self._ctl("-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder} "
                  "-c fsync=off -c full_page_writes=off", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")
