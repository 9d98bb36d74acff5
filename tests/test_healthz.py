"""/healthz says whether this instance reaches its database: a load balancer in front of several
replicas takes one that cannot out of rotation."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import pytest

from relay import app as relay_app


def test_healthy_relay_reports_its_database(relay: Any) -> None:
    answer = relay.client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok"}


def test_database_error_is_503_and_names_no_path(relay: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise sqlite3.OperationalError("unable to open database file /srv/secret-place/relay.db")

    monkeypatch.setattr(relay.state.store, "config_version", broken)
    with caplog.at_level(logging.WARNING, logger="relay"):
        answer = relay.client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "database": "error"}
    assert "OperationalError" in caplog.text
    assert "secret-place" not in caplog.text + answer.text

    monkeypatch.undo()
    answer = relay.client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "database": "ok"})


def test_database_that_does_not_answer_is_503_in_time(relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_app, "HEALTHZ_DATABASE_TIMEOUT_SECONDS", 0.3)
    released = threading.Event()
    read = relay.state.store.config_version

    def stuck() -> int:
        released.wait(10)
        return read()  # type: ignore[no-any-return]

    monkeypatch.setattr(relay.state.store, "config_version", stuck)
    try:
        started = time.monotonic()
        answer = relay.client.get("/healthz")
        assert time.monotonic() - started < 3
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "database": "timeout"}
    finally:
        released.set()
    monkeypatch.setattr(relay.state.store, "config_version", read)
    answer = relay.client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "database": "ok"})
