"""A database that is locked, failing or gone: the store raises StoreUnavailable (never a driver
error), the relay answers 503 `database_unavailable` in the envelope (never a 500) and resumes by
itself when the database is back, the recorder holds its rows meanwhile, relayctl says one line."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RelayProcess, Sandbox
from test_account_faults import eventually, outcome_rows
from test_relay import CREATE, assert_envelope, auth

from relay.recorder import KeyUse, Recorder
from relay.records import Outcome
from relay.store import Store, StoreUnavailable

V = "/openai/v1/videos"
BUSY_TIMEOUT = 0.3


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection (as relayctl or a backup tool would) holds the database's write lock."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def outcome(request_id: str) -> Outcome:
    return Outcome(
        ts=time.time(),
        request_id=request_id,
        key_name="alice",
        account="a",
        account_type="openai-responses",
        route="videos.retrieve",
        upstream_status=200,
        error_class="none",
        latency_ms=1.0,
    )


def test_a_locked_database_is_a_503_and_the_relay_resumes_by_itself(relay_process: Any, sandbox: Sandbox) -> None:
    relay: RelayProcess = relay_process(extra_env={"RELAY_DATABASE_BUSY_TIMEOUT_SECONDS": str(BUSY_TIMEOUT)})
    relay.add_accounts(sandbox, "a")
    key = relay.issue_key("alice")
    # A key with a budget books its create in the database before anything goes upstream.
    booked = relay.relayctl("keys", "issue", "bob", "--permission", "openai", "--usd-per-day", "100", "--json")
    assert booked.returncode == 0, booked.stderr
    budget_key = json.loads(booked.stdout)["key"]
    time.sleep(0.6)  # the relay polls for the account every 0.2 s
    done = httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(key), timeout=30)
    assert done.status_code == 200, done.text
    finished = done.json()["id"]

    def completed() -> None:
        assert _status(relay, key, finished) == "completed"

    eventually(completed)
    fresh = httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(key), timeout=30).json()["id"]
    time.sleep(0.5)  # the sandbox completes it after 0.3 s: the next retrieve has news to store
    sent_before = len(sandbox.requests())

    with write_locked(Path(relay.env["RELAY_DATABASE"])):
        create = httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(budget_key), timeout=30)
        error = assert_envelope(create, 503, "database_unavailable")
        assert error["type"] == "service_unavailable"
        assert create.headers["retry-after"] == "1" and create.headers["x-should-retry"] == "true"
        assert len(sandbox.requests()) == sent_before, "a create the relay could not admit reached the upstream"
        # Without a budget the create goes upstream first: once the upstream took it, a retry would
        # start the work twice, so the 503 says not to retry.
        unrecorded = httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(key), timeout=30)
        assert_envelope(unrecorded, 503, "database_unavailable")
        assert unrecorded.headers["x-should-retry"] == "false"
        # Reads need no write lock: what the relay can serve safely, it serves.
        listed = httpx.get(f"{relay.url}{V}", headers=auth(key), timeout=30)
        assert listed.status_code == 200 and {video["id"] for video in listed.json()["data"]} == {finished, fresh}
        served = httpx.get(f"{relay.url}{V}/{finished}", headers=auth(key), timeout=30)
        assert served.status_code == 200
        # A retrieve whose news (completed) cannot be stored is refused, so the next poll stores it.
        assert_envelope(httpx.get(f"{relay.url}{V}/{fresh}", headers=auth(key), timeout=30), 503, "database_unavailable")

    for retry in (key, budget_key):
        again = httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(retry), timeout=30)
        assert again.status_code == 200, again.text
    assert _status(relay, key, fresh) == "completed"

    def recorded() -> None:
        assert served.headers["x-request-id"] in {row["request_id"] for row in outcome_rows(relay)}

    # The outcome of the retrieve served while the database was locked was held, not lost.
    eventually(recorded)
    log = relay.log()
    assert "database unavailable" in log and "Traceback" not in log
    assert " 500 " not in log and "internal_error" not in log


def _status(relay: RelayProcess, key: str, video_id: str) -> str:
    answer = httpx.get(f"{relay.url}{V}/{video_id}", headers=auth(key), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["status"]  # type: ignore[no-any-return]


def test_a_damaged_file_raises_store_unavailable_and_service_resumes_when_it_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    good = tmp_path / "good.db"
    made = Store(path)
    made.ensure_schema()
    made.set_meta_if_absent("secret_check", "x")
    made.close()
    shutil.copy(path, good)
    path.write_bytes(b"this is not a database, it is garbage " * 200)

    store = Store(path, busy_timeout_seconds=BUSY_TIMEOUT)
    for read in (lambda: store.get_meta("secret_check"), store.list_keys, store.config_version, store.integrity_check):
        with pytest.raises(StoreUnavailable, match="the file is not a database"):
            read()
    with pytest.raises(StoreUnavailable, match="the file is not a database"):
        store.set_meta_if_absent("other", "y")
    assert isinstance(StoreUnavailable("x"), Exception) and not isinstance(StoreUnavailable("x"), sqlite3.Error)

    shutil.copy(good, path)
    assert store.get_meta("secret_check") == "x"
    assert store.set_meta_if_absent("other", "y") == "y"
    store.close()


def test_a_failed_write_leaves_no_transaction_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=BUSY_TIMEOUT)
    store.ensure_schema()
    with write_locked(tmp_path / "relay.db"):
        with pytest.raises(StoreUnavailable, match="locked"):
            store.set_meta_if_absent("k", "v")
        assert store.get_meta("k") is None  # reads go on while another connection writes
    assert store.set_meta_if_absent("k", "v") == "v"
    store.close()


def test_the_recorder_holds_its_rows_through_an_outage_and_writes_them_after(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=BUSY_TIMEOUT)
    store.ensure_schema()
    recorder = Recorder(store)
    recorder.start()
    try:
        with write_locked(tmp_path / "relay.db"):
            recorder.put(outcome("req_during_1"))
            recorder.put(KeyUse("key_1", time.time()))
            assert not recorder.flush(timeout=1.0), "written while the database was locked?"
            recorder.put(outcome("req_during_2"))
            assert recorder._thread.is_alive()
        assert recorder.flush(timeout=10.0)
        assert {row["request_id"] for row in store.list_outcomes(limit=10)} == {"req_during_1", "req_during_2"}
    finally:
        recorder.close()
        store.close()


def test_relayctl_says_one_line_when_the_database_is_unavailable(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("keys", "issue", "alice", "--permission", "openai")

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk I/O error")

    monkeypatch.setattr(Store, "list_keys", unavailable)
    output = cli("keys", "list", code=1).output
    assert output.strip() == "Error: the database is unavailable: disk I/O error"


def test_relayctl_on_a_locked_database_says_one_line(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("keys", "issue", "alice", "--permission", "openai")
    monkeypatch.setenv("RELAY_DATABASE_BUSY_TIMEOUT_SECONDS", str(BUSY_TIMEOUT))
    with write_locked(tmp_path / "relay.db"):
        output = cli("keys", "issue", "bob", "--permission", "openai", code=1).output
    assert len(output.strip().splitlines()) == 1 and "locked" in output, output
    listed = json.loads(cli("keys", "list", "--json").output)
    assert [key["name"] for key in listed] == ["alice"]


def test_background_tasks_log_an_outage_once_not_every_tick(caplog: pytest.LogCaptureFixture) -> None:
    from relay.state import Retrying

    retrying = Retrying("renew the lease")
    with caplog.at_level(logging.WARNING, logger="relay"):
        for _ in range(20):
            retrying.failed(StoreUnavailable("it stayed locked"))
        retrying.succeeded()
        retrying.succeeded()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "could not renew the lease: the database is unavailable: it stayed locked; retrying",
        "the database answers again: renew the lease works",
    ]
    assert not any(record.exc_info for record in caplog.records)
    caplog.clear()
    try:
        raise ValueError("a bug")
    except ValueError as error:
        retrying.failed(error)
    assert caplog.records[0].exc_info is not None  # a bug keeps its traceback
