"""Usage reports against hand-computed figures, relayctl's limits, prices and usage commands, and
concurrent creates racing for the last of a budget on a real two-worker relay."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import TOKEN, Relay, Sandbox
from test_cli_ops import add, store_of
from test_lifecycle import V
from test_relay import auth, tokens_seen

from ops.cli import main as relayctl

# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


def run_cli(relay: Relay, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(
        relayctl,
        ["--help"] if not args else list(args),
        env={"RELAY_DATABASE": relay.settings.database.raw, "RELAY_SECRET_KEY": relay.settings.secret_key or ""},
    )
    assert result.exit_code == code, result.output
    return result.output


def create(relay: Relay, key: str, **fields: Any) -> str:
    response = relay.client.post(V, json={"prompt": "a cat", "size": "720x1280", **fields}, headers=auth(key))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_usage_report_matches_hand_computed_figures(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    alice, bob = relay.issue_key("alice"), relay.issue_key("bob")
    # Least recently used alternates a, b, a, b.
    ok = create(relay, alice, seconds="8")  # a: sora-2 8 s = $0.80, completes
    pro = create(relay, alice, model="sora-2-pro", size="1280x720", seconds="4")  # b: $0.30 x 4 = $1.20, completes
    failing = create(relay, alice, prompt="a cat [fail]", seconds="4")  # a: fails, costs nothing
    create(relay, bob, seconds="12")  # b: $1.20 reserved, never polled
    assert tokens_seen(sandbox) == ["tok-a", "tok-b", "tok-a", "tok-b"]
    time.sleep(1.0)  # the sandbox finishes jobs 0.3 s after creation
    for video_id in (ok, pro, failing):  # one poll each sees the final status
        assert relay.client.get(f"{V}/{video_id}", headers=auth(alice)).json()["status"] in ("completed", "failed")
    relay.flush()
    since = time.time() - 3600
    store = relay.state.store
    figures = ["requests", "jobs", "completed", "failed", "video_seconds", "usd", "usd_reserved"]

    def table(by: str) -> dict[str, list[float]]:
        return {row[by]: [row[f] for f in figures] for row in store.usage_report(by, since=since)}

    assert table("key") == {
        "alice": [6, 3, 2, 1, 12, pytest.approx(2.0), 0],
        "bob": [1, 1, 0, 0, 0, 0, pytest.approx(1.2)],
    }
    assert table("account") == {
        "a": [4, 2, 1, 1, 8, pytest.approx(0.8), 0],
        "b": [3, 2, 1, 0, 4, pytest.approx(1.2), pytest.approx(1.2)],
    }
    assert table("model") == {
        "sora-2": [3, 3, 1, 1, 8, pytest.approx(0.8), pytest.approx(1.2)],
        "sora-2-pro": [1, 1, 1, 0, 4, pytest.approx(1.2), 0],
    }
    assert store.usage_report("key", since=time.time() + 60) == []

    rows = json.loads(run_cli(relay, "usage", "--by", "key", "--since", "1d", "--json"))
    assert [(r["key"], r["usd"], r["usd_reserved"]) for r in rows] == [("alice", 2.0, 0), ("bob", 0, 1.2)]
    parsed = list(csv.DictReader(io.StringIO(run_cli(relay, "usage", "--by", "model", "--since", "7d", "--csv"))))
    assert [(r["model"], r["jobs"], r["video_seconds"], r["usd"]) for r in parsed] == [
        ("sora-2", "3", "8.0", "0.8"),
        ("sora-2-pro", "1", "4.0", "1.2"),
    ]
    text = run_cli(relay, "usage", "--by", "account")
    assert text.splitlines()[0].split() == ["account", *figures]
    assert "choose --csv or --json" in run_cli(relay, "usage", "--csv", "--json", code=2)


def test_keys_limits_commands(cli: Any, tmp_path: Path) -> None:
    issued = json.loads(cli("keys", "issue", "alice", "--usd-per-month", "300", "--models", "sora-2, sora-2-pro", "--json").output)
    assert issued["key"].startswith("rk-")
    shown = json.loads(cli("keys", "limits", "alice", "--json").output)
    assert shown["usd_per_month"] == 300 and shown["models"] == ["sora-2", "sora-2-pro"]
    assert shown["usd_left_month"] == 300 and shown["requests_per_minute"] is None
    changed = json.loads(
        cli("keys", "limits", "alice", "--requests-per-minute", "60", "--usd-per-day", "20", "--models", "none", "--json").output
    )
    assert (changed["requests_per_minute"], changed["usd_per_day"], changed["models"], changed["usd_per_month"]) == (60, 20, None, 300)
    assert "usd_per_day" in cli("keys", "limits", "alice").output
    assert "requests_per_minute" in cli("keys", "show", "alice").output
    assert "not a number" in cli("keys", "limits", "alice", "--usd-per-day", "lots", code=2).output
    assert ">= 1" in cli("keys", "limits", "alice", "--requests-per-minute", "0", code=1).output
    assert ">= 0" in cli("keys", "limits", "alice", "--usd-per-day", "-5", code=1).output
    assert "finite" in cli("keys", "limits", "alice", "--usd-per-day", "nan", code=1).output
    assert "no key named 'bob'" in cli("keys", "limits", "bob", "--usd-per-day", "1", code=1).output
    cli("keys", "limits", "alice", "--usd-per-day", "none", "--usd-per-month", "none", "--requests-per-minute", "none")
    assert store_of(tmp_path).key_by_name("alice").limits_json is None  # nothing left: no limits at all


def test_accounts_limits_and_show(cli: Any, tmp_path: Path) -> None:
    add(cli, "main")
    capped = json.loads(cli("accounts", "limits", "main", "--max-video-seconds-per-day", "600", "--json").output)
    assert capped == {"name": "main", "max_video_seconds_per_day": 600, "video_seconds_today": 0, "capped": False}
    shown = json.loads(cli("accounts", "show", "main", "--json").output)
    assert shown["max_video_seconds_per_day"] == 600 and shown["upstream_requests_remaining"] is None
    assert (
        json.loads(cli("accounts", "limits", "main", "--max-video-seconds-per-day", "none", "--json").output)["max_video_seconds_per_day"]
        is None
    )
    assert "not a number" in cli("accounts", "limits", "main", "--max-video-seconds-per-day", "x", code=2).output
    assert "from 0 to 1,000,000,000" in cli("accounts", "limits", "main", "--max-video-seconds-per-day", "-1", code=1).output
    assert "no account named 'nope'" in cli("accounts", "limits", "nope", code=1).output


def test_prices_commands(cli: Any, tmp_path: Path) -> None:
    cli("prices", "set", "sora-2", "720x1280", "0.12")
    cli("prices", "set", "acme-video", "*", "0.04")
    listed = json.loads(cli("prices", "list", "--json").output)
    assert {"model": "sora-2-pro", "size": "1792x1024", "usd_per_second": 0.5, "source": "default"} in listed
    listed = {(p["model"], p["size"]): (p["usd_per_second"], p["source"]) for p in json.loads(cli("prices", "list", "--json").output)}
    assert listed[("sora-2", "720x1280")] == (0.12, "override") and listed[("acme-video", "*")] == (0.04, "override")
    prices_json = tmp_path / "prices.json"
    prices_json.write_text(json.dumps({"acme-video": {"1920x1080": 0.07}, "sora-2": {"1280x720": 0.11}}))
    assert "Loaded 2 price(s)" in cli("prices", "load", str(prices_json)).output
    prices_csv = tmp_path / "prices.csv"
    prices_csv.write_text("model,size,usd_per_second\n# a comment\nother,*,0.02\n")
    cli("prices", "load", str(prices_csv))
    table = store_of(tmp_path).list_prices()
    assert table[("acme-video", "1920x1080")] == 0.07 and table[("sora-2", "1280x720")] == 0.11 and table[("other", "*")] == 0.02
    prices_csv.write_text("sora-2,720x1280,free\n")
    assert "not a price" in cli("prices", "load", str(prices_csv), code=1).output
    prices_json.write_text("{not json")
    assert "not valid JSON" in cli("prices", "load", str(prices_json), code=1).output
    assert ">= 0" in cli("prices", "set", "sora-2", "720x1280", "--", "-1", code=1).output
    assert ">= 0" in cli("prices", "set", "sora-2", "720x1280", "-1", code=1).output  # a number, not an option
    assert "WIDTHxHEIGHT" in cli("prices", "set", "sora-2", "huge", "0.1", code=1).output
    cli("prices", "unset", "acme-video", "*")
    assert "no price override" in cli("prices", "unset", "acme-video", "*", code=1).output
    assert ("sora-2", "720x1280") in store_of(tmp_path).list_prices()
    assert TOKEN not in cli("prices", "list").output


def test_concurrent_creates_cannot_overspend_a_budget(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(workers=2)
    relay.add_accounts(sandbox, "a", "b")
    key = relay.issue_key("alice")
    done = relay.relayctl("keys", "limits", "alice", "--usd-per-day", "2.0")  # five 4-second sora-2 creates
    assert done.returncode == 0, done.stderr
    sandbox.fault(method="POST", path_contains="/videos", status=None, delay_seconds=0.2)  # widen the race
    time.sleep(1.0)  # both workers see the new limit

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as client:
            return await asyncio.gather(
                *[client.post("/openai/v1/videos", json={"prompt": f"cat {i}", "seconds": "4"}, headers=auth(key)) for i in range(20)]
            )

    answers = asyncio.run(race())
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 15, [r.text for r in answers if r.status_code not in (200, 429)]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} == {"relay_budget_exceeded"}
    usage = json.loads(relay.relayctl("keys", "limits", "alice", "--json").stdout)
    assert usage["usd_used_day"] == pytest.approx(2.0) and usage["usd_left_day"] == pytest.approx(0)
    assert len([r for r in sandbox.requests() if r["method"] == "POST"]) == 5
    metrics = httpx.get(f"{relay.url}/metrics").text
    assert 'relay_key_budget_remaining_usd{key="alice",period="day"} 0.0' in metrics
