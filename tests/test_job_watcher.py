"""The job watcher: the relay polls its unfinished jobs itself, paced, under a lease, and settles
them whether or not a client ever asks again."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from conftest import Relay, Sandbox, run_sql
from test_relay import CREATE, auth

from relay.accounts import remove_account, reset_account, set_enabled
from relay.jobs.pacing import AccountPacer
from relay.records import Video

BACKENDS = ("sqlite", "postgresql")
V = "/openai/v1/videos"
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, within: float = 15.0) -> T:
    """The probe's first truthy value; a bound, not a measurement: slower machines only wait longer."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "the condition did not come about in time"
        time.sleep(0.05)


def watching(make_relay: Any, sandbox: Sandbox, **overrides: Any) -> Relay:
    relay: Relay = make_relay(**{"job_watcher": True, "job_poll_seconds": 0.1, **overrides})
    relay.add_account("main", sandbox.base_api())
    return relay


def create(relay: Relay, key: str, prompt: str = "A lighthouse") -> str:
    created = relay.client.post(V, json={**CREATE, "prompt": prompt}, headers=auth(key))
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def never_ending_jobs(relay: Relay, key: str, prompt: str, count: int = 20) -> dict[str, float | None]:
    """Jobs the sandbox never finishes, by id, with when each is first due a poll (read as soon as
    it is created, before the watcher can have moved it)."""
    first_due = {}
    for n in range(count):
        video_id = create(relay, key, prompt=f"{prompt} {n} [never]")
        first_due[video_id] = video(relay, video_id).watch_next_at
    return first_due


def video(relay: Relay, video_id: str) -> Video:
    found = relay.state.store.video(video_id)
    assert found is not None
    return found


def polls(sandbox: Sandbox, video_id: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "GET" and r["path"].endswith(f"/videos/{video_id}")]


def between_polls(relay: Relay, query: str) -> list[dict[str, Any]]:
    """The query's rows read while the watcher holds no lease: a job it is polling right now is
    claimed for the poll's few milliseconds, and is not one it claimed only to hand back."""

    def at_rest() -> list[dict[str, Any]] | None:
        rows = run_sql(relay.state.store, query)
        return None if any(row["watch_owner"] for row in rows) else rows

    return eventually(at_rest)


def metric(relay: Relay, line_start: str) -> float:
    for line in relay.metrics().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_job_nobody_polls_completes_settles_and_is_counted(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    video_id = create(relay, key)
    done = eventually(lambda: (v := video(relay, video_id)).status == "completed" and v)
    assert done.charge_state == "settled" and done.finished_at is not None and done.watch_next_at is None
    usage = relay.state.store.key_usage("alice", since=0, now=time.time())
    assert usage.video_seconds == pytest.approx(float(CREATE["seconds"]))
    assert metric(relay, 'relay_videos_total{status="completed"}') == 1
    assert metric(relay, 'relay_watcher_polls_total{result="changed"}') >= 1
    # The watcher forwards no client's headers: only the account's credential went up.
    names = {name for name, _ in polls(sandbox, video_id)[0]["headers"]}
    assert "authorization" in names and not names & {"openai-organization", "x-request-id", "cookie"}
    # Once final, the job is not polled again.
    seen = len(polls(sandbox, video_id))
    time.sleep(0.5)
    assert len(polls(sandbox, video_id)) == seen


def test_a_failed_job_releases_its_reservation(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    video_id = create(relay, key, prompt="A storm [fail]")
    failed = eventually(lambda: (v := video(relay, video_id)).status == "failed" and v)
    assert failed.charge_state == "released"
    assert relay.state.store.key_usage("alice", since=0, now=time.time()).usd == 0


def test_watcher_polls_are_paced_per_account(make_relay: Any, sandbox: Sandbox) -> None:
    # 60 a minute: a burst of 6, then one a second, however many jobs are due.
    relay = watching(make_relay, sandbox, watcher_polls_per_minute=60)
    key = relay.issue_key()
    # Polls start with the first job: the pace counts from there (creating 20 takes a while on a busy machine).
    started = time.monotonic()
    ids = [create(relay, key, prompt=f"Forever {n} [never]") for n in range(20)]
    time.sleep(2.0)
    elapsed = time.monotonic() - started
    sent = sum(len(polls(sandbox, video_id)) for video_id in ids)
    assert 1 <= sent <= 6 + elapsed * 1 + 1


def test_the_pacer_tells_an_accounts_spare_polls_without_counting_them() -> None:
    pacer = AccountPacer(per_minute=60)  # a burst of 6, then one a second
    assert pacer.spare("a", now=100.0) == pacer.spare("a", now=100.0) == 6
    for _ in range(6):
        assert pacer.take("a", now=100.0) == 0.0
    assert pacer.spare("a", now=100.0) == 0 and pacer.take("a", now=100.0) > 0
    assert pacer.spare("a", now=102.5) == 2 and pacer.spare("b", now=100.0) == 6


def test_jobs_an_account_may_not_poll_yet_wait_in_the_database_unclaimed(make_relay: Any, sandbox: Sandbox) -> None:
    # Claimed only to be handed back, each cost a write under the writers' lock, every round.
    relay = watching(make_relay, sandbox, watcher_polls_per_minute=60)
    key = relay.issue_key()
    first_due = never_ending_jobs(relay, key, "Forever")
    time.sleep(2.0)
    rows = between_polls(relay, "SELECT id, watch_next_at, watch_owner, watch_polls FROM videos")
    unpolled = [row for row in rows if row["watch_polls"] == 0]
    assert 0 < len(unpolled) < 20  # the pace polled some, not all
    assert [(row["watch_next_at"], row["watch_owner"]) for row in unpolled] == [(first_due[row["id"]], None) for row in unpolled]


def test_each_account_gives_the_watcher_only_the_jobs_it_has_polls_for(make_relay: Any, sandbox: Sandbox) -> None:
    """With one account's backlog older than another's, a claim of the oldest due jobs across
    accounts took the backlog's, up to the other's spare polls, and handed them back."""
    relay = watching(make_relay, sandbox, watcher_polls_per_minute=60)
    key = relay.issue_key()
    first_due = never_ending_jobs(relay, key, "Forever")
    relay.add_account("second", sandbox.base_api())
    set_enabled(relay.state.store, "main", False)  # new work goes to "second"; main's jobs are still polled
    relay.state.reload()
    first_due |= never_ending_jobs(relay, key, "Forever too")
    time.sleep(2.0)
    rows = between_polls(relay, "SELECT id, account, watch_next_at, watch_owner, watch_polls FROM videos")
    assert {row["account"] for row in rows if row["watch_polls"]} == {"main", "second"}
    unpolled = [row for row in rows if row["watch_polls"] == 0]
    assert {row["account"] for row in unpolled} == {"main", "second"}  # the pace polled some of each, not all
    assert [(row["watch_next_at"], row["watch_owner"]) for row in unpolled] == [(first_due[row["id"]], None) for row in unpolled]


def test_a_429_on_a_watcher_poll_rests_the_account_and_the_watcher(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=30, method="GET", times=1)
    video_id = create(relay, key, prompt="Slowly [never]")
    eventually(lambda: relay.state.store.account("main").state == "rate_limited")  # type: ignore[union-attr]
    assert metric(relay, 'relay_watcher_polls_total{result="rate_limited"}') == 1
    seen = len(polls(sandbox, video_id))
    time.sleep(0.8)  # eight poll intervals: none goes to the resting account
    assert len(polls(sandbox, video_id)) == seen
    assert video(relay, video_id).watch_next_at is not None  # still watched, later


def test_an_unauthorized_accounts_jobs_wait_unclaimed_until_an_operator_resets_it(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="unauthorized", method="GET", times=1)
    ids = [create(relay, key, prompt=f"Waiting {n} [never]") for n in range(5)]
    eventually(lambda: relay.state.store.account("main").state == "unauthorized")  # type: ignore[union-attr]
    time.sleep(0.3)  # polls already under way end
    seen = sum(len(polls(sandbox, video_id)) for video_id in ids)

    def jobs() -> list[tuple[str, float, str | None, int]]:
        rows = run_sql(relay.state.store, "SELECT id, watch_next_at, watch_owner, watch_polls FROM videos ORDER BY id")
        return [(row["id"], row["watch_next_at"], row["watch_owner"], row["watch_polls"]) for row in rows]

    waiting = jobs()
    time.sleep(0.5)  # five poll intervals
    assert sum(len(polls(sandbox, video_id)) for video_id in ids) == seen  # no upstream call while it is unauthorized
    # Nor claimed and handed back, each a write, every round: they wait in the database, due.
    assert jobs() == waiting
    assert all(owner is None and due <= time.time() for _, due, owner, _ in waiting)
    reset_account(relay.state.store, "main")
    relay.state.reload()
    eventually(lambda: sum(len(polls(sandbox, video_id)) for video_id in ids) >= seen + len(ids))


def test_a_job_claimed_as_its_account_turns_unauthorized_is_paused_until_an_operator_resets_it(make_relay: Any, sandbox: Sandbox) -> None:
    quiet: Relay = make_relay()  # no watcher: the job is claimed and paused as a watcher would
    quiet.add_account("main", sandbox.base_api())
    key = quiet.issue_key()
    video_id = create(quiet, key)
    store, now = quiet.state.store, time.time()
    (claimed,) = store.claim_jobs_to_watch("worker-1", per_account={"main": 1}, limit=1, now=now + 60, lease_seconds=60, holders_now=now)
    store.watch_later(claimed.id, "worker-1", next_poll_at=now + 300, polled=False, reason="account_unauthorized")
    relay: Relay = make_relay(job_watcher=True, job_poll_seconds=0.1, secret_key=quiet.settings.secret_key)
    time.sleep(0.5)
    assert polls(sandbox, video_id) == [] and video(relay, video_id).watch_stopped == "account_unauthorized"
    # The reset makes the paused job due at once (not after its pause of 30 poll intervals).
    reset_account(store, "main")
    done = eventually(lambda: (v := video(relay, video_id)).status == "completed" and v)
    assert done.watch_stopped is None and done.charge_state == "settled"


def test_a_pause_ends_with_the_job_and_a_give_up_keeps_its_reason(make_relay: Any, sandbox: Sandbox) -> None:
    """However the end is seen (here straight after the pause, as when the upstream finished the
    job meanwhile), a paused job that ends shows no pause; a given-up one keeps why it was."""
    relay: Relay = make_relay()
    relay.add_account("main", sandbox.base_api())
    key = relay.issue_key()
    paused, given_up = create(relay, key), create(relay, key)
    store, now = relay.state.store, time.time()
    claimed = store.claim_jobs_to_watch("worker-1", per_account={"main": 5}, limit=5, now=now + 60, lease_seconds=60, holders_now=now)
    assert {job.id for job in claimed} == {paused, given_up}
    store.watch_later(paused, "worker-1", next_poll_at=now + 300, polled=True, reason="account_unauthorized")
    store.stop_watching(given_up, "worker-1", reason="max_age")
    for video_id in (paused, given_up):
        assert store.update_video(video_id, status="completed", progress=100, expires_at=None, resource="{}", now=now)
    ended = video(relay, paused)
    assert ended.watch_stopped is None and ended.watch_next_at is None and ended.charge_state == "settled"
    kept = video(relay, given_up)
    assert kept.watch_stopped == "max_age" and kept.charge_state == "settled"


def test_a_removed_accounts_jobs_stop_with_a_reason(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox, job_poll_seconds=0.5)
    key = relay.issue_key()
    video_id = create(relay, key, prompt="Gone [never]")
    remove_account(relay.state.store, "main", force=True)
    relay.state.reload()
    stopped = eventually(lambda: (v := video(relay, video_id)).watch_stopped and v)
    assert stopped.watch_stopped == "account_removed" and stopped.watch_next_at is None
    assert stopped.charge_state == "released"  # nobody can follow it: it no longer blocks the budget
    assert metric(relay, 'relay_watcher_stops_total{reason="account_removed"}') == 1
    assert metric(relay, 'relay_jobs_in_flight{status="unwatched"}') == 1


def test_a_job_past_the_maximum_age_is_given_up_and_a_late_completion_still_charges(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox, job_max_age_seconds=0.5)
    key = relay.issue_key()
    video_id = create(relay, key, prompt="Forever [never]")
    given_up = eventually(lambda: (v := video(relay, video_id)).watch_stopped and v)
    assert given_up.watch_stopped == "max_age" and given_up.charge_state == "released"
    assert relay.state.store.key_usage("alice", since=0, now=time.time()).usd == 0
    # The upstream finishes it after all, and a client asks: it is charged then, once.
    relay.state.store.update_video(video_id, status="in_progress", progress=99, expires_at=None, resource="{}", now=time.time())
    relay.state.store.update_video(video_id, status="completed", progress=100, expires_at=None, resource="{}", now=time.time())
    assert video(relay, video_id).charge_state == "settled"


def test_a_jobs_age_counts_from_when_the_relay_recorded_it(make_relay: Any, sandbox: Sandbox) -> None:
    """An upstream's created_at is another clock (a gateway's, or a constant in a mock): a job it
    dates a year back is polled as the young job it is, not given up as past the maximum age."""
    relay = watching(make_relay, sandbox, job_max_age_seconds=3600)
    key = relay.issue_key()
    video_id = create(relay, key, prompt="Slowly [never]")
    with relay.state.store.transaction() as conn:
        conn.execute("UPDATE videos SET created_at = created_at - ? WHERE id = ?", (365 * 86400.0, video_id))
    eventually(lambda: len(polls(sandbox, video_id)) >= 3)
    assert video(relay, video_id).watch_stopped is None
    assert metric(relay, 'relay_watcher_stops_total{reason="max_age"}') == 0


def test_a_clients_news_counts_as_the_watchers_poll(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox, job_poll_seconds=30)
    key = relay.issue_key()
    video_id = create(relay, key)
    first = video(relay, video_id).watch_next_at
    assert first is not None
    time.sleep(0.1)
    retrieved = relay.client.get(f"{V}/{video_id}", headers=auth(key))
    assert retrieved.status_code == 200 and retrieved.json()["status"] in ("in_progress", "completed")
    after = video(relay, video_id)
    if after.status != "completed":
        assert after.watch_next_at is not None and after.watch_next_at > first
    assert polls(sandbox, video_id) == polls(sandbox, video_id)[:1]  # the client's only


def test_settlement_happens_once_however_many_see_the_end(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    ids = [create(relay, key) for _ in range(5)]
    time.sleep(0.4)  # done upstream: clients and the watcher now race to see it

    def retrieve(video_id: str) -> int:
        return relay.client.get(f"{V}/{video_id}", headers=auth(key)).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(retrieve, ids * 4)) == {200}
    eventually(lambda: all(video(relay, video_id).status == "completed" for video_id in ids))
    assert metric(relay, 'relay_videos_total{status="completed"}') == 5
    usage = relay.state.store.key_usage("alice", since=0, now=time.time())
    assert usage.video_seconds == pytest.approx(5 * float(CREATE["seconds"]))


def test_a_job_the_upstream_no_longer_knows_is_given_up_after_two_404s_in_a_row(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    video_id = create(relay, key, prompt="Lost [never]")
    sandbox.fault(status=404, body={"error": {"message": "No such video", "type": "invalid_request_error"}}, method="GET", times=1)
    # One 404 alone is noted, and the next poll finds the job again.
    eventually(lambda: metric(relay, 'relay_watcher_polls_total{result="not_found"}') == 1)
    eventually(lambda: video(relay, video_id).watch_stopped is None and metric(relay, 'relay_watcher_polls_total{result="unchanged"}') >= 1)
    assert video(relay, video_id).watch_next_at is not None
    sandbox.fault(status=404, body={"error": {"message": "No such video", "type": "invalid_request_error"}}, method="GET", times=2)
    stopped = eventually(lambda: (v := video(relay, video_id)).watch_next_at is None and v)
    assert stopped.watch_stopped == "not_found" and stopped.charge_state == "released"
    assert metric(relay, 'relay_watcher_stops_total{reason="not_found"}') == 1


def test_a_dead_processs_claims_are_taken_over_once_its_holder_lease_lapses(make_relay: Any, sandbox: Sandbox) -> None:
    quiet: Relay = make_relay()  # no watcher: the job waits, claimed by a process that died mid-poll
    quiet.add_account("main", sandbox.base_api())
    key = quiet.issue_key()
    video_id = create(quiet, key)
    now = time.time()
    (claimed,) = quiet.state.store.claim_jobs_to_watch(
        "dead-process", per_account={"main": 5}, limit=5, now=now + 60, lease_seconds=3600, holders_now=now
    )
    assert claimed.id == video_id
    # The same database and key; its own holder is live. (It adds "main" again: already there.)
    relay: Relay = make_relay(job_watcher=True, job_poll_seconds=0.1, secret_key=quiet.settings.secret_key)
    done = eventually(lambda: (v := video(relay, video_id)).status == "completed" and v)
    assert done.charge_state == "settled"


def test_the_watchers_outcome_rows_name_the_jobs_key(make_relay: Any, sandbox: Sandbox) -> None:
    relay = watching(make_relay, sandbox)
    key = relay.issue_key()
    create(relay, key)
    relay.flush()

    def watch_rows() -> list[Any]:
        relay.flush()
        return run_sql(relay.state.store, "SELECT key_name, request_id FROM outcomes WHERE route = 'watch'")

    rows = eventually(watch_rows)
    assert all(row[0] == "alice" and row[1].startswith("watch-") for row in rows)
