"""Veo's default prices: in the table `relayctl prices list` shows, in what a Veo job reserves and
settles through a gemini account, and as the model label of the cost metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import Relay, Sandbox

from relay.pricing import ANY_SIZE, DEFAULT_PRICES, PriceTable

V = "/openai/v1/videos"
FAST = "veo-3.1-fast-generate-preview"
VEO_MODELS = (
    "veo-3.1-generate-preview",
    "veo-3.1-fast-generate-preview",
    "veo-3.0-generate-001",
    "veo-3.0-fast-generate-001",
    "veo-2.0-generate-001",
)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gemini_relay(relay: Relay, sandbox: Sandbox, **key_limits: Any) -> str:
    relay.add_account("veo", f"{sandbox.url}/v1beta", token="AIza-veo-key-0123456789", type="gemini")
    return relay.issue_key("alice", limits=key_limits or None)


def create(relay: Relay, key: str, **fields: Any) -> dict[str, Any]:
    created = relay.client.post(V, json={"prompt": "A lighthouse in a storm", **fields}, headers=auth(key))
    assert created.status_code == 200, created.text
    return created.json()  # type: ignore[no-any-return]


def poll_until_completed(relay: Relay, key: str, video_id: str) -> None:
    deadline = time.monotonic() + 10  # the sandbox finishes an operation 0.3 s after it starts
    while (status := relay.client.get(f"{V}/{video_id}", headers=auth(key)).json()["status"]) != "completed":
        assert status != "failed" and time.monotonic() < deadline, status
        time.sleep(0.1)


def by_model(relay: Relay) -> dict[str, tuple[Any, ...]]:
    relay.flush()
    report = relay.state.store.usage_report("model", since=time.time() - 3600)
    return {row["model"]: (row["video_seconds"], row["usd"], row["usd_reserved"]) for row in report}


@pytest.mark.parametrize(
    ("model", "size", "usd_per_second"),
    [
        ("veo-3.1-generate-preview", "1280x720", 0.40),
        ("veo-3.1-generate-preview", "1080x1920", 0.40),
        (FAST, "720x1280", 0.10),
        (FAST, "1920x1080", 0.12),
        (FAST, "2560x1440", 0.12),  # any other size: Veo renders 720p or 1080p, booked at the dearer
        ("veo-3.0-generate-001", "1920x1080", 0.40),
        ("veo-3.0-fast-generate-001", "720x1280", 0.15),
        ("veo-2.0-generate-001", "1280x720", 0.35),
    ],
)
def test_every_veo_model_is_priced_at_the_sizes_the_relay_asks_for(model: str, size: str, usd_per_second: float) -> None:
    table = PriceTable()
    assert table.knows(model)
    assert table.usd_per_second(model, size) == pytest.approx(usd_per_second)
    assert (model, ANY_SIZE) in DEFAULT_PRICES


def test_relayctl_prices_list_shows_the_veo_defaults(cli: Any) -> None:
    cli("db", "init")
    listed = {(p["model"], p["size"]): (p["usd_per_second"], p["source"]) for p in json.loads(cli("prices", "list", "--json").output)}
    assert {model for model, _ in listed if model.startswith("veo-")} >= set(VEO_MODELS)
    assert listed[(FAST, "1280x720")] == (0.10, "default") and listed[(FAST, "1920x1080")] == (0.12, "default")
    assert listed[("veo-2.0-generate-001", ANY_SIZE)] == (0.35, "default")
    cli("prices", "set", FAST, "1280x720", "0.2")  # an operator's row still wins over the default
    listed = {(p["model"], p["size"]): (p["usd_per_second"], p["source"]) for p in json.loads(cli("prices", "list", "--json").output)}
    assert listed[(FAST, "1280x720")] == (0.2, "override")


def test_a_veo_job_reserves_then_settles_price_times_seconds(relay: Relay, sandbox: Sandbox) -> None:
    key = gemini_relay(relay, sandbox)
    video = create(relay, key, model=FAST, size="1920x1080", seconds="8")
    assert by_model(relay) == {FAST: (0, 0, pytest.approx(0.12 * 8))}  # reserved while it renders
    poll_until_completed(relay, key, video["id"])
    assert by_model(relay) == {FAST: (8, pytest.approx(0.12 * 8), 0)}
    # The cost metrics name the model: the price table knows it, so it is not lumped into "other".
    metrics = relay.metrics()
    assert f'relay_cost_usd_total{{account="veo",key="alice",model="{FAST}"}} 0.96' in metrics
    assert f'relay_video_seconds_total{{account="veo",key="alice",model="{FAST}"}} 8.0' in metrics
    assert 'model="other"' not in metrics


def test_a_budget_admits_or_refuses_a_veo_create_by_its_price(relay: Relay, sandbox: Sandbox) -> None:
    # Without a price a budgeted key could not use Veo at all (relay_price_unknown).
    key = gemini_relay(relay, sandbox, usd_per_day=1.0)
    create(relay, key, model=FAST, size="1280x720", seconds="4")  # $0.40
    refused = relay.client.post(
        V, json={"prompt": "An epic", "model": "veo-3.1-generate-preview", "size": "1920x1080", "seconds": "8"}, headers=auth(key)
    )  # $3.20
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "relay_budget_exceeded", refused.text
    assert [r["path"] for r in sandbox.requests()] == [f"/v1beta/models/{FAST}:predictLongRunning"]
