#!/usr/bin/env python3
"""Start the LiteLLM proxy as a benchmark comparison point for the relay.

    .venv-bench-litellm/bin/python bench/litellm/launch.py \
        --port 4000 --upstream http://127.0.0.1:9000/v1 --workers 1

Serves the OpenAI Videos API (POST /v1/videos, GET /v1/videos/{id},
GET /v1/videos/{id}/content) on 127.0.0.1:<port> and forwards it to
<upstream> (an OpenAI-style base URL ending in /v1). Everything that would
reach the internet is switched off, there is no database and no per-request
logging. Clients authenticate with the master key (default sk-bench-litellm).

The proxy runs in the foreground (exec), so the launcher's pid is the proxy's
pid: stop it with SIGTERM/SIGINT. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Switches that keep LiteLLM 1.106.12 off the network: each one otherwise
# fetches a JSON/RSS file from GitHub or docs.litellm.ai at startup or on demand.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4000, help="port on 127.0.0.1 (default 4000)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; keep it on loopback)")
    parser.add_argument(
        "--upstream",
        required=True,
        help="upstream OpenAI-style base URL, e.g. http://127.0.0.1:9000/v1 (LiteLLM appends /videos)",
    )
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1, help="uvicorn worker processes (1 or 2)")
    parser.add_argument(
        "--upstream-key",
        default=os.environ.get("BENCH_UPSTREAM_API_KEY", "sk-bench-upstream"),
        help="bearer token LiteLLM sends upstream (default $BENCH_UPSTREAM_API_KEY or sk-bench-upstream)",
    )
    parser.add_argument(
        "--master-key",
        default=os.environ.get("LITELLM_MASTER_KEY", "sk-bench-litellm"),
        help="key clients must send as 'Authorization: Bearer ...' (default $LITELLM_MASTER_KEY or sk-bench-litellm)",
    )
    parser.add_argument("--config", default=str(HERE / "config.yaml"), help="LiteLLM config (default: config.yaml beside this file)")
    parser.add_argument(
        "--log-level",
        default="ERROR",
        help="LITELLM_LOG level; ERROR (default) also silences uvicorn's per-request access log",
    )
    args = parser.parse_args(argv)

    if not args.master_key.startswith("sk-"):
        parser.error("LiteLLM requires the master key to start with 'sk-'")

    env = dict(os.environ)
    # No database: without DATABASE_URL the proxy runs with the master key only.
    for name in ("DATABASE_URL", "DIRECT_URL", "REDIS_HOST", "REDIS_URL"):
        env.pop(name, None)
    env.update(OFFLINE_ENV)
    env.update(
        {
            "LITELLM_LOG": args.log_level.upper(),
            "LITELLM_MASTER_KEY": args.master_key,
            "BENCH_UPSTREAM_BASE_URL": args.upstream.rstrip("/"),
            "BENCH_UPSTREAM_API_KEY": args.upstream_key,
            # Never let a stray OPENAI_* variable redirect or authenticate requests.
            "OPENAI_API_KEY": args.upstream_key,
        }
    )
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_BASE", None)

    litellm_bin = Path(sys.executable).parent / "litellm"
    if not litellm_bin.exists():
        sys.stderr.write(
            f"{litellm_bin} not found: run this with the python of the LiteLLM virtualenv "
            "(.venv-bench-litellm/bin/python bench/litellm/launch.py ...)\n"
        )
        return 2

    cmd = [
        str(litellm_bin),
        "--config",
        args.config,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--num_workers",
        str(args.workers),
    ]
    sys.stderr.write("launch: " + " ".join(cmd) + f"  (upstream {env['BENCH_UPSTREAM_BASE_URL']})\n")
    sys.stderr.flush()
    os.execve(str(litellm_bin), cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
