"""Who holds a reservation: every relay process, under a lease it keeps renewing.

A create's reservation (its in-flight slot, reserved seconds and USD) belongs to the process
that wrote it. Each relay process (every uvicorn worker, every replica) registers a random
owner id in the `holders` table and renews a lease there (relay.state.keep_fresh). A
reservation whose owner's lease has lapsed no longer counts, and any live process deletes
it: a process killed with -9 frees what it held within the lease, not after the
reservation's own expiry (up to (connect + read timeout) x attempts + 60 s).

Leases are compared with time.time() on whichever machine checks them, like every other
timestamp in the store, so replicas sharing a database need clocks that agree to well under
the lease (NTP does). On the same machine a process that has exited is known dead at once:
its pid is gone or belongs to a process started later. A pid means nothing on another
machine or in another pid namespace, so that check applies only to holders registered from
this machine's kernel boot, pid namespace and user; elsewhere the lease decides.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Renewals per lease: a process must miss this many in a row before it is taken for dead.
RENEWALS_PER_LEASE = 4


@dataclass(frozen=True)
class Holder:
    """This process, as the holders table knows it."""

    owner: str
    # Same value only for processes that can see each other's pids (see module docstring).
    host: str | None
    hostname: str
    pid: int
    # Start time of the pid (clock ticks since boot), so a reused pid is not taken for this process.
    process_started: str | None


def this_process() -> Holder:
    pid = os.getpid()
    return Holder(
        owner=secrets.token_hex(8),
        host=_pid_space(),
        hostname=socket.gethostname()[:255],
        pid=pid,
        process_started=_own_start(pid),
    )


def short(owner: str) -> str:
    """How operators see an owner id: enough to tell the processes of one database apart."""
    return owner[:8]


def _pid_space() -> str | None:
    """An id shared exactly by the processes whose pids this one can check.

    Same kernel boot, same pid namespace, same user (/proc may hide other users' processes).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}/{os.getuid()}"


def _own_start(pid: int) -> str | None:
    try:
        return running_since(pid)
    except OSError:
        return None  # then no one can tell this process has exited but by its lease


def running_since(pid: int) -> str | None:
    """When a running process started (clock ticks since boot, Linux); None if it has exited.

    A zombie (killed, not yet reaped by its parent) has exited: it holds nothing any more.
    Raises OSError when /proc cannot tell.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces: count from its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def exited(me: Holder, row: Mapping[str, Any]) -> bool:
    """Whether a registered holder is a process of this machine that is no longer running."""
    if me.host is None or row["host"] != me.host or row["id"] == me.owner or row["process_started"] is None:
        return False
    try:
        return bool(running_since(int(row["pid"])) != row["process_started"])
    except OSError:
        return False  # unreadable proves nothing: the lease decides
