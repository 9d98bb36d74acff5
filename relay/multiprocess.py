"""Prometheus multiprocess mode, so `uvicorn relay.app:app --workers N` exports true totals.

uvicorn's supervisor spawns N workers and each imports the app; a scrape reaches one of them.
prometheus_client's multiprocess mode has every worker write its samples to memory-mapped
files in one directory (`PROMETHEUS_MULTIPROC_DIR`) and has `/metrics` add the files up.

The directory must be shared by the workers of one relay start and by no earlier start
(stale files would add old counts). The relay sets it up itself when it runs as a spawned
worker and the variable is unset: a directory named after the supervisor's pid and start
time, so every worker of one start (and any worker uvicorn restarts) finds the same one,
while the next start gets a fresh one. Directories left by supervisors that have exited are
removed. A single process (`uvicorn relay.app:app`, tests in-process) keeps plain in-memory
metrics. An operator who sets `PROMETHEUS_MULTIPROC_DIR` must empty it before each start.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from prometheus_client import multiprocess, values

from .holders import running_since

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_PREFIX = "video-relay-metrics-"
_DIR_NAME = re.compile(re.escape(DIR_PREFIX) + r"(\d+)-(\d+)$")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def configure(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Turn multiprocess mode on when this process is one of several workers; return the directory.

    Must run before this process creates its first metric (the app's lifespan calls it).
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV) or environ.get(ENV.lower())
    if configured:
        path = Path(configured)
    elif multiprocessing.parent_process() is not None:
        path = _supervisor_dir(os.getppid())
        environ[ENV] = str(path)
    else:
        return None
    path.mkdir(parents=True, exist_ok=True)
    # prometheus_client picks its value class when it is first imported; pick again now that
    # the variable is set, so metrics created from here on write to the shared files.
    values.ValueClass = values.get_value_class()
    return path


def active_dir(environ: MutableMapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV) or environ.get(ENV.lower())
    return Path(configured) if configured else None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None when it is gone, "0" when unknown."""
    try:
        return running_since(pid)
    except OSError:
        return "0"


def _supervisor_dir(supervisor: int) -> Path:
    base = Path(tempfile.gettempdir())
    ticks = _start_ticks(supervisor) if Path("/proc").is_dir() else "0"
    path = base / f"{DIR_PREFIX}{supervisor}-{ticks or 0}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if path.stat().st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to another user; set {ENV} to a directory of your own")
    _remove_stale(base)
    return path


def _remove_stale(base: Path) -> None:
    """Directories of relay starts whose supervisor has exited (a pid reused later has another start time)."""
    for entry in base.glob(DIR_PREFIX + "*"):
        match = _DIR_NAME.match(entry.name)
        if match is None:
            continue
        pid, ticks = int(match.group(1)), match.group(2)
        if _start_ticks(pid) != ticks and ticks != "0":
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_workers(path: Path) -> None:
    """Drop live gauges (in-flight requests) of workers that exited without saying so (kill -9).

    Their counters stay: what they counted happened.
    """
    for entry in path.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match is not None and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(path))


def worker_exiting(path: Path | None) -> None:
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), str(path))
