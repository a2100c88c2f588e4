"""A real Redis Cluster on this machine: redis-server processes with --cluster-enabled yes under
.local/, joined by `redis-cli --cluster create`, that tests kill, fail over and reshard for real.

    python -m tests.cluster start .local/cluster     prints the URLs (MCODE_REDIS_URL) of its masters
    python -m tests.cluster stop .local/cluster
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# A failover within a few seconds of a master's death (the default, 15 s, is for real networks).
NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, start: int = 7100) -> list[int]:
    """`count` ports that are free, each with its cluster bus port (+10000) free too."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port + 10000 > 65535:
            raise RuntimeError("no free ports for a Redis Cluster")
        if _free(port) and _free(port + 10000):
            ports.append(port)
        port += 1
    return ports


def _cli(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class LocalCluster:
    """`masters` masters with `replicas` replicas each, AOF on (everysec), as deploy/ advises."""

    def __init__(self, folder: Path, masters: int = 3, replicas: int = 1) -> None:
        self.folder = folder.resolve()
        self.masters_count = masters
        self.replicas = replicas
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> str:
        """MCODE_REDIS_URL for the cluster: every node, so any one may be down at start."""
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports)

    @property
    def url(self) -> str:
        return self.urls

    def start(self) -> LocalCluster:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed (Debian: apt-get install redis-server)")
        self.stop_recorded()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.ports = free_ports(self.masters_count * (1 + self.replicas))
        for port in self.ports:
            self.launch(port)
        for port in self.ports:
            self.wait_answering(port)
        _cli("--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes", timeout=120)
        self.wait_ok()
        (self.folder / "ports").write_text(" ".join(map(str, self.ports)))
        return self

    def launch(self, port: int) -> None:
        home = self.folder / str(port)
        home.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen([
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home),
            "--logfile", str(home / "redis.log"), "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # a master down costs its own slots only, not the whole cluster
            "--cluster-require-full-coverage", "no",
            # a master emptied by a reshard stays a master, so slots can be moved back to it
            "--cluster-allow-replica-migration", "no",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # they outlive `start`
        (home / "pid").write_text(str(self.procs[port].pid))

    def wait_answering(self, port: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if _cli("-p", str(port), "PING", timeout=5).strip() == "PONG":
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"redis-server on {port} did not start; see {self.folder / str(port) / 'redis.log'}")

    def wait_ok(self, seconds: float = 60) -> None:
        """Until every live node says the cluster is ok and they agree on who owns what."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            live = [p for p in self.ports if self.alive(p)]
            try:
                states = [_cli("-p", str(p), "CLUSTER", "INFO", timeout=5) for p in live]
                # who owns what, as each node sees it (replicas are listed in no fixed order)
                maps = {tuple(sorted(self._ranges(p))) for p in live}
            except (RuntimeError, subprocess.TimeoutExpired):
                states, maps = [], set()
            if states and all("cluster_state:ok" in s for s in states) and len(maps) == 1 and self.synced(live):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the cluster under {self.folder} did not become ok")

    def synced(self, live: list[int]) -> bool:
        """Every live replica has its master's data (a replica that never synced may not take over)."""
        for port in live:
            info = _cli("-p", str(port), "INFO", "replication", timeout=5)
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def alive(self, port: int) -> bool:
        proc = self.procs.get(port)
        return proc is not None and proc.poll() is None

    def nodes(self) -> list[tuple[str, int, str, str]]:
        """(node id, port, role, master id or '-') of every node, as a live node sees them."""
        live = next(p for p in self.ports if self.alive(p))
        out = []
        for line in _cli("-p", str(live), "CLUSTER", "NODES").splitlines():
            node_id, address, flags, master, *_ = line.split()
            port = int(address.split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in flags else "replica"
            if "fail" in flags.split(","):
                role += ",fail"
            out.append((node_id, port, role, master))
        return out

    def owners(self) -> list[int]:
        """The port of the master that owns each slot now (0 for a slot nobody serves)."""
        owners = [0] * 16384
        for start, end, port in self._ranges(next(p for p in self.ports if self.alive(p))):
            owners[start:end + 1] = [port] * (end - start + 1)
        return owners

    def _ranges(self, live: int) -> list[tuple[int, int, int]]:
        out = []
        for line in _cli("-p", str(live), "CLUSTER", "NODES").splitlines():
            _, address, flags, *_rest = line.split()
            if "master" not in flags or "fail" in flags.split(","):
                continue
            port = int(address.split("@")[0].rsplit(":", 1)[1])
            for part in line.split()[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated or imported
                low, _, high = part.partition("-")
                out.append((int(low), int(high or low), port))
        return out

    def masters(self) -> list[int]:
        return sorted(port for _, port, role, _ in self.nodes() if role == "master" and self.alive(port))

    def node_id(self, port: int) -> str:
        return _cli("-p", str(port), "CLUSTER", "MYID").strip()

    def kill(self, port: int) -> list[int]:
        """SIGKILL: no shutdown. Returns the ports of its replicas: one takes over once the others
        see it fail (wait_failover)."""
        dead_id = self.node_id(port)
        followers = [p for _, p, role, master in self.nodes() if role == "replica" and master == dead_id]
        proc = self.procs[port]
        proc.kill()
        proc.wait()
        return followers

    def wait_failover(self, followers: list[int], seconds: float = 30) -> int:
        """The port of the replica promoted in place of a killed master."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for port in followers:
                try:
                    if "role:master" in _cli("-p", str(port), "INFO", "replication", timeout=5):
                        self.wait_ok()
                        return port
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"none of {followers} took over")

    def restart(self, port: int) -> None:
        self.launch(port)
        self.wait_answering(port)

    def reshard(self, source: int, target: int, slots: int) -> None:
        """Move `slots` slots from one master to another with redis-cli, keys and all."""
        self.wait_ok()  # redis-cli refuses to reshard while the nodes disagree
        _cli("--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from", self.node_id(source),
             "--cluster-to", self.node_id(target), "--cluster-slots", str(slots), "--cluster-yes",
             "--cluster-pipeline", "100", timeout=600)
        self.wait_ok()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a node writing its first AOF will not stop on SIGTERM
                proc.kill()
                proc.wait()
        self.procs.clear()

    def stop_recorded(self) -> None:
        """Stop the nodes a previous run left under the folder (started by another process)."""
        for pid_file in self.folder.glob("*/pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if b"redis-server" in cmdline:
                subprocess.run(["kill", str(pid)], check=False)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    cluster = LocalCluster(args.folder)
    if args.action == "stop":
        cluster.stop_recorded()
        return
    cluster.start()
    # the processes outlive this command: start_new_session is not needed, Popen does not wait
    print(cluster.urls)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
