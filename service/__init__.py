"""Marketing Code service."""

import multiprocessing
import os
import shutil
import tempfile


def _metrics_dir() -> str:
    """Where this process and its sibling workers keep their Prometheus counters.

    prometheus-client picks its multiprocess mode when it is first imported, so this runs on
    the package's import. Workers spawned by one uvicorn or `mcode serve` share their parent's
    folder; a lone process gets a fresh one of its own.
    """
    root = os.path.join(tempfile.gettempdir(), "mcode-metrics")
    parent = multiprocessing.parent_process()
    owner = parent.pid if parent is not None else os.getpid()
    path = os.path.join(root, f"{owner}-{_started(owner)}")
    if parent is None:
        shutil.rmtree(path, ignore_errors=True)
        _remove_orphans(root)
    os.makedirs(path, exist_ok=True)
    return path


def _started(pid: int | None) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _remove_orphans(root: str) -> None:
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        pid, _, started = name.partition("-")
        if pid.isdigit() and _started(int(pid)) != started:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir()
