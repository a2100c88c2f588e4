"""The local spool: where a process keeps answered clicks while Redis cannot take them.

Each process appends to a file of its own and fsyncs before the buyer gets the answer. As soon
as Redis answers again the process puts its files back into Redis (the click log), and a writer
on the host moves any it finds into Postgres. Files of a process that died are taken over by any
live process on the host (an atomic rename claims them), so nothing waits for a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

_ACTIVE = "active"
_READY = "ready"
_CLAIMED = "claimed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: str, namespace: str = "") -> None:
        self.dir = Path(directory) / hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.active = self.dir / f"{_ACTIVE}-{self.pid}.jsonl"
        self.lock = threading.Lock()
        self.sequence = 0
        # Files this process is replaying now: its click log and its writer must not both take one.
        self.busy: set[Path] = set()

    def append(self, entries: Sequence[tuple[str, bool]]) -> None:
        """Write (click payload, was a dedup candidate) lines and fsync them."""
        data = "".join(json.dumps([payload, dedup]) + "\n" for payload, dedup in entries).encode()
        with self.lock:
            fd = os.open(self.active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def rotate(self) -> None:
        """Close this process's active file for replay."""
        with self.lock:
            if self.active.exists() and self.active.stat().st_size > 0:
                self.sequence += 1
                self.active.rename(self.dir / f"{_READY}-{self.pid}-{self.sequence}.jsonl")

    def claim(self) -> Iterator[Path]:
        """Files this process may now replay: ready ones, and any left by dead processes. Each is
        busy until done() or release() says what became of it."""
        for path in self._claim():
            with self.lock:
                if path in self.busy:
                    continue
                self.busy.add(path)
            yield path

    def done(self, path: Path) -> None:
        """Every click in `path` is safe elsewhere."""
        path.unlink(missing_ok=True)
        with self.lock:
            self.busy.discard(path)

    def release(self, path: Path) -> None:
        """`path` could not be replayed now; it stays claimed by this process for the next try."""
        with self.lock:
            self.busy.discard(path)

    def _claim(self) -> Iterator[Path]:
        self.rotate()
        for path in sorted(self.dir.glob("*.jsonl")):
            kind, _, rest = path.stem.partition("-")
            owner = int(rest.split("-", 1)[0]) if rest.split("-", 1)[0].isdigit() else 0
            mine = owner == self.pid
            if kind == _ACTIVE and (mine or _alive(owner)):
                continue
            if kind == _CLAIMED and not mine and _alive(owner):
                continue
            if kind == _CLAIMED and mine:
                yield path
                continue
            target = self.dir / f"{_CLAIMED}-{self.pid}-{path.name}"
            try:
                path.rename(target)
            except FileNotFoundError:
                continue  # another process claimed it first
            yield target

    def pending(self) -> int:
        """Clicks spooled on this host and not replayed yet."""
        total = 0
        for path in self.dir.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
        return total

    @staticmethod
    def read(path: Path) -> list[tuple[str, bool]]:
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                payload, dedup = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write was never answered
            entries.append((payload, bool(dedup)))
        return entries
