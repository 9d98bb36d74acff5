"""``python -m relay.sandbox``: serve every provider's emulator on one port."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .app import run_sandbox
from .faults import FAIL_ALIASES, PRESETS


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.sandbox", description="Local emulators of the providers the relay forwards to.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--complete-after", type=float, default=1.0, metavar="SECONDS", help="seconds until a job completes")
    parser.add_argument("--fail", choices=[*FAIL_ALIASES, *PRESETS], help="fail every request")
    parser.add_argument("--content-bytes", type=int, metavar="N", help="pad video downloads to N bytes")
    parser.add_argument("--seed", type=int, metavar="N", help="seed for fault rules with a probability")
    args = parser.parse_args(argv)
    origin = f"http://{args.host}:{args.port}"
    bases = {
        "OpenAI": "/v1",
        "Azure": "/openai/v1",
        "Gemini": "/v1beta",
        "BytePlus": "/byteplus/api/v3",
        "fal": "/fal",
        "Runway": "/runway/v1",
    }
    print("sandbox upstream on " + ", ".join(f"{origin}{path} ({name})" for name, path in bases.items()), flush=True)
    run_sandbox(
        args.host,
        args.port,
        complete_after_seconds=args.complete_after,
        fail=args.fail,
        content_bytes=args.content_bytes,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
