"""The official openai SDK, two versions, against a relay process and the sandbox upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Sandbox
from test_e2e import operator_setup

ASSETS = ROOT / "relay" / "sandbox_assets"
LEGACY_SDK_PYTHON = ROOT / ".venv-sdk2" / "bin" / "python"

pytestmark = pytest.mark.e2e


def sdk_python(version: str) -> Path:
    if version == "newest":
        return Path(sys.executable)
    if not LEGACY_SDK_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{LEGACY_SDK_PYTHON} is missing: `make test` installs it")
        pytest.skip("the openai 2.26 virtualenv is made by `make test`")
    return LEGACY_SDK_PYTHON


@pytest.mark.parametrize("version", ["2.26 (JSON create)", "newest"])
def test_sdk_lifecycle(relay_process: Any, sandbox: Sandbox, version: str) -> None:
    python = sdk_python("newest" if version == "newest" else "legacy")
    relay = relay_process(extra_env={"RELAY_POLL_AFTER_MS": "100"})
    key = operator_setup(relay, sandbox, "main")
    issued = relay.relayctl("keys", "issue", "bob", "--json")
    other_key = json.loads(issued.stdout)["key"]
    assert relay.relayctl("keys", "limits", "bob", "--usd-per-day", "0.5").returncode == 0
    done = subprocess.run(
        [str(python), str(ROOT / "tests" / "sdk_scenario.py"), relay.url, key, other_key, sandbox.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    if version == "newest":
        assert int(seen["sdk"].split(".")[0]) >= 3
    else:
        assert seen["sdk"] == "2.26.0"
    assert seen["content_bytes"] == len((ASSETS / "sample.mp4").read_bytes())
    assert seen["thumbnail_bytes"] == len((ASSETS / "thumbnail.webp").read_bytes())
    assert seen["listed"] == 5
    assert seen["other_key"] == "not_found" and seen["rate_limited"] == 429 and seen["bad_key"] == 401
    assert seen["budget"] == "relay_budget_exceeded"
    assert seen["outcome_unknown"] == [502, 1]
    creates = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1/videos"]
    kinds = {r["content_type"].split(";")[0] for r in creates}
    assert kinds == ({"multipart/form-data"} if version == "newest" else {"application/json"})
    # Poll pacing: the SDK waited as the relay asked instead of hammering the upstream.
    polls = [r for r in sandbox.requests() if r["method"] == "GET" and r["path"] == f"/v1/videos/{seen['created']}"]
    assert 1 <= len(polls) <= 10
