"""Reservations belong to a live relay process: a killed relay's in-flight slots and reserved USD free up in seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from conftest import Sandbox, relay_settings, run_sql
from starlette.testclient import TestClient
from test_soak import descendants, query, wait_dead

from relay import holders
from relay.app import create_app
from relay.holders import Holder, this_process
from relay.state import RelayState
from relay.store import Store

CREATE = "/openai/v1/videos"


def reserve(store: Store, reservation_id: str, owner: str | None, *, now: float) -> None:
    store.reserve(
        reservation_id,
        key_name="alice",
        video_seconds=4,
        usd=0.4,
        now=now,
        expires_at=now + 600,
        periods=[],
        refuse=lambda *_: None,
        owner=owner,
    )


# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


def other_process(**changes: Any) -> Holder:
    return dataclasses.replace(this_process(), **changes)


def never_exited(_: dict[str, Any]) -> bool:
    return False


def exited_pid() -> int:
    """The pid of a process that has run and been reaped (so none runs under it, for now)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


# --------------------------------------------------------------------------- the store's rule


def test_a_reservation_counts_only_while_its_owner_holds_its_lease(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    now = time.time()
    live, stale = other_process(), other_process()
    for holder in (live, stale):
        store.renew_holder(holder, now=now, lease=10, exited=never_exited)
    reserve(store, "res_old", None, now=now)  # written by a version without owners: its expiry decides
    reserve(store, "res_live", live.owner, now=now)
    reserve(store, "res_stale", stale.owner, now=now)
    # The stale process last renewed its lease 100 s ago (it died, or hangs).
    run_sql(store, "UPDATE holders SET renewed_at = ?, expires_at = ? WHERE id = ?", (now - 100, now - 90, stale.owner))

    usage = store.key_usage("alice", since=now - 60, now=now)
    assert (usage.in_flight, usage.usd) == (2, 0.8)
    assert {r["id"] for r in store.live_reservations(now)} == {"res_live", "res_old"}
    rows = {row["id"]: row for row in store.key_holdings("alice", now)}
    assert (rows["res_live"]["alive"], rows["res_stale"]["alive"], rows["res_old"]["alive"]) == (True, False, True)
    # A new reservation does not count what a dead owner held; a live process's next lease renewal deletes it.
    reserve(store, "res_next", live.owner, now=now)
    assert store.key_usage("alice", since=now - 60, now=now).in_flight == 3
    assert {row["id"] for row in store.key_holdings("alice", now)} == {"res_live", "res_old", "res_next", "res_stale"}
    assert store.renew_holder(live, now=now, lease=10, exited=never_exited) == 1
    assert {row["id"] for row in store.key_holdings("alice", now)} == {"res_live", "res_old", "res_next"}


def test_a_lease_renewal_deletes_expired_reservations(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    now = time.time()
    live = other_process()
    store.renew_holder(live, now=now, lease=10, exited=never_exited)
    reserve(store, "res_done", live.owner, now=now - 700)
    reserve(store, "res_open", live.owner, now=now)
    assert store.key_usage("alice", since=now - 600, now=now).in_flight == 1
    store.renew_holder(live, now=now, lease=10, exited=never_exited)
    assert [row[0] for row in run_sql(store, "SELECT id FROM reservations")] == ["res_open"]


def test_renewing_a_lease_forgets_processes_that_are_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    now = time.time()
    me = this_process()
    lapsed = other_process()
    # Still within its lease, but its pid has exited on this machine: known dead at once.
    killed = other_process(pid=exited_pid())
    for holder in (me, lapsed, killed):
        store.renew_holder(holder, now=now, lease=10, exited=never_exited)
        reserve(store, f"res_{holder.owner}", holder.owner, now=now)
    run_sql(store, "UPDATE holders SET expires_at = ? WHERE id = ?", (now - 20, lapsed.owner))
    assert store.key_usage("alice", since=now - 60, now=now).in_flight == 2

    assert store.renew_holder(me, now=now, lease=10, exited=lambda row: holders.exited(me, row)) == 2
    assert [row["owner"] for row in store.key_holdings("alice", now)] == [me.owner]
    assert [row[0] for row in run_sql(store, "SELECT id FROM holders")] == [me.owner]
    # A live process elsewhere (another machine: another pid space) is left to its lease.
    elsewhere = other_process(host="another-machine", pid=exited_pid())
    store.renew_holder(elsewhere, now=now, lease=10, exited=never_exited)
    reserve(store, "res_elsewhere", elsewhere.owner, now=now)
    assert store.renew_holder(me, now=now, lease=10, exited=lambda row: holders.exited(me, row)) == 0
    assert store.key_usage("alice", since=now - 60, now=now).in_flight == 2
    # A stopping process gives up its lease and what it held.
    store.release_holder(elsewhere.owner)
    assert [row["owner"] for row in store.key_holdings("alice", now)] == [me.owner]


def test_a_live_process_is_not_taken_for_dead() -> None:
    me = this_process()
    row = {"id": "someone", "host": me.host, "pid": me.pid, "process_started": me.process_started}
    assert me.host is not None and me.process_started is not None  # Linux: the fast path is on
    assert not holders.exited(me, row)
    assert holders.exited(me, {**row, "process_started": "1"})  # the pid now belongs to a later process
    assert holders.exited(me, {**row, "pid": exited_pid()})
    assert not holders.exited(me, {**row, "pid": exited_pid(), "host": "elsewhere"})


def test_a_relay_renews_its_lease_and_gives_it_up_when_it_stops(tmp_path: Path) -> None:
    settings = relay_settings(tmp_path, holder_lease_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        state: RelayState = client.app.state.relay  # type: ignore[attr-defined]
        owner = state.holder.owner
        lease = "SELECT renewed_at, expires_at FROM holders WHERE id = ?"
        first = run_sql(state.store, lease, (owner,))[0]
        assert first["expires_at"] == first["renewed_at"] + 1.0  # registered before serving
        time.sleep(0.8)  # renewed every quarter of the lease
        assert run_sql(state.store, lease, (owner,))[0]["renewed_at"] > first["renewed_at"]
    with closing(sqlite3.connect(settings.database.sqlite_path())) as conn:
        assert conn.execute("SELECT count(*) FROM holders").fetchone()[0] == 0


# --------------------------------------------------------------------------- relayctl keys limits


def test_keys_limits_shows_what_is_held_since_when_and_by_which_process(cli: Any, tmp_path: Path) -> None:
    cli("keys", "issue", "alice", "--max-concurrent-creates", "3", "--usd-per-day", "5")
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    now = time.time()
    live, gone = this_process(), other_process(pid=exited_pid())
    for holder in (live, gone):
        store.renew_holder(holder, now=now, lease=10, exited=never_exited)
    reserve(store, "res_live", live.owner, now=now - 5)
    reserve(store, "res_gone", gone.owner, now=now - 3)
    run_sql(store, "UPDATE holders SET expires_at = ? WHERE id = ?", (now - 1, gone.owner))  # its lease lapsed

    shown = json.loads(cli("keys", "limits", "alice", "--json").output)
    assert shown["creates_in_flight"] == 1
    assert (shown["held_video_seconds"], shown["held_usd"]) == (4, 0.4)  # what the gone process held does not count
    assert shown["held_since"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5))
    assert 5 <= shown["held_for_seconds"] < 60
    by = {process["process"]: process for process in shown["held_by"]}
    assert by[live.owner[:8]] == {
        "process": live.owner[:8],
        "hostname": live.hostname,
        "pid": os.getpid(),
        "alive": True,
        "creates": 1,
        "blocks": 0,
        "video_seconds": 4,
        "usd": 0.4,
        "since": shown["held_since"],
    }
    assert by[gone.owner[:8]]["alive"] is False and by[gone.owner[:8]]["creates"] == 1

    table = cli("keys", "limits", "alice").output
    held_by = next(line for line in table.splitlines() if line.startswith("held_by"))
    assert f"{live.owner[:8]} ({live.hostname} pid {os.getpid()}, alive): 1 create(s), 4 s, $0.40 since {shown['held_since']}" in held_by
    assert f"{gone.owner[:8]} ({gone.hostname} pid {gone.pid}, gone, not counted): 1 create(s)" in held_by
    assert any(line.split() == ["held_usd", "0.4"] for line in table.splitlines())

    store.release_holder(live.owner)
    store.renew_holder(this_process(), now=now, lease=10, exited=never_exited)  # a relay that forgets the gone one
    shown = json.loads(cli("keys", "limits", "alice", "--json").output)
    assert (shown["creates_in_flight"], shown["held_usd"], shown["held_since"], shown["held_by"]) == (0, 0, None, [])
    assert "held_by" in cli("keys", "limits", "alice").output


# --------------------------------------------------------------------------- a real crash


def test_a_relay_killed_with_creates_in_flight_holds_nothing_once_a_new_one_starts(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(workers=1)
    relay.add_accounts(sandbox, "a")
    key = relay.issue_key("alice")
    limited = relay.relayctl("keys", "limits", "alice", "--max-concurrent-creates", "2", "--usd-per-day", "1", "--models", "sora-2")
    assert limited.returncode == 0, limited.stderr
    headers = {"Authorization": f"Bearer {key}"}
    create = {"prompt": "a cat", "seconds": "4", "size": "720x1280"}  # $0.40 each at the default price
    wait_for_limits(relay, headers)
    sandbox.fault(method="POST", path_contains="/videos", delay_seconds=30)

    def send() -> None:
        with contextlib.suppress(httpx.TransportError):  # the relay is killed under it
            httpx.post(f"{relay.url}{CREATE}", json=create, headers=headers, timeout=30, trust_env=False)

    senders = [threading.Thread(target=send) for _ in range(2)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 10
    while (held := limits(relay))["creates_in_flight"] < 2:
        assert time.monotonic() < deadline, (held, sandbox.requests())
        time.sleep(0.05)
    assert (held["held_usd"], [(p["pid"], p["alive"], p["creates"]) for p in held["held_by"]]) == (0.8, [(relay.pid, True, 2)])
    third = httpx.post(f"{relay.url}{CREATE}", json=create, headers=headers, timeout=10, trust_env=False)
    assert third.status_code == 429 and third.json()["error"]["code"] == "relay_concurrency_limited"

    killed = [relay.pid, *descendants(relay.pid)]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_dead(killed, within=10)
    for sender in senders:
        sender.join(30)
    sandbox.reset()

    again = relay_process(workers=1, extra_env={"RELAY_SECRET_KEY": relay.env["RELAY_SECRET_KEY"]})
    fresh = httpx.post(f"{again.url}{CREATE}", json=create, headers=headers, timeout=10, trust_env=False)
    recovered_in = time.monotonic() - killed_at
    assert fresh.status_code == 200, fresh.text
    # Before the lease (10 s) lapsed: the new relay saw the killed process's pid gone as it started.
    assert recovered_in < 10, recovered_in
    after = limits(again)
    assert (after["creates_in_flight"], after["held_usd"], after["held_by"]) == (0, 0, [])
    assert after["usd_used_day"] == 0.4  # the new job's own charge, which is not an in-flight holding
    assert "freed 2 reservation(s)" in again.log()
    assert query(again, "SELECT count(*) FROM holders WHERE pid = ?", relay.pid)[0][0] == 0


def limits(relay: Any) -> dict[str, Any]:
    shown = relay.relayctl("keys", "limits", "alice", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def wait_for_limits(relay: Any, headers: dict[str, str]) -> None:
    """Until the relay refuses a model outside the key's allow-list, it has not read the new limits.

    The upstream refuses the probe's length (400), so a probe sent too early makes no job.
    """
    deadline = time.monotonic() + 10
    while True:
        probe = {"prompt": "x", "model": "sora-2-pro", "seconds": "5"}
        refused = httpx.post(f"{relay.url}{CREATE}", json=probe, headers=headers, timeout=10, trust_env=False)
        if refused.status_code == 403:
            return
        assert time.monotonic() < deadline, refused.text
        time.sleep(0.05)
