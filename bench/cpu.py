"""The relay's CPU per request, for several relays side by side: what a change costs or saves.

    python -m bench.cpu <commit|directory|work> [...] [--rounds 3] [--seconds 3] [--no-limits] [--floor]

Latency on 2 shared cores moves with whatever else the machine does; the CPU a relay process
(its event loop and its store and recorder threads together) spends per request moves much less.
Each relay given (a commit, extracted with `git archive`; a directory holding a relay's source;
or `work`, the working tree) gets its own SQLite database prepared by its own relayctl, with the
benchmark's key (bench.targets.KEY_LIMITS, or none with --no-limits), and all take turns in
interleaved rounds against one nginx mock: wrk at concurrency 1, retrieve then create. Prints,
per relay and operation, the median over rounds of CPU microseconds per request and of wrk's p50.
With --floor, bench/floor_asgi.py's two apps (uvicorn and the relay's upstream client passing
requests on, nothing else; the same through starlette's router, as the relay used it up to its
fifteenth pass) take their turns too: what the relay's stack, and its stack with that
framework, spend per request.

Creates in a relay whose budgets sum the month's jobs grow slower round by round, as the run's
own creates pile up: read the rounds, not only the median, for those.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

from . import floors, targets
from .ab import source_of
from .load import wrk
from .mock import start_nginx
from .procs import cpu_seconds, workspace
from .run import url_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("relays", nargs="+", help="commits, directories with a relay's source, or `work`")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="per wrk run")
    parser.add_argument("--no-limits", action="store_true", help="a key without limits")
    parser.add_argument("--floor", action="store_true", help="also the relay's stack and framework alone (bench/floor_asgi.py)")
    args = parser.parse_args(argv)
    limits = () if args.no_limits else targets.KEY_LIMITS
    with contextlib.ExitStack() as stack:
        sources: dict[str, Path | None] = {}
        for given in args.relays:
            source = stack.enter_context(source_of(given))
            sources[Path(given).name if Path(given).is_dir() else given] = source
        workdir, servers = stack.enter_context(workspace("relay-cpu-"))
        mock = start_nginx(workdir, file_bytes=1 << 20)
        servers.append(mock)
        relays = {}
        for name, source in sources.items():
            (workdir / name).mkdir()
            env, key = targets.prepare_relay_database(workdir / name, mock.url + "/v1", source=source, key_limits=limits)
            relay = targets.start_relay(workdir / name, env, key, workers=1, name=name, cwd=source or targets.REPO)
            servers.append(relay)
            relays[name] = (relay, {relay.name: targets.create_video(relay)})
        if args.floor:
            for floor in floors.start(("floor-asgi", "floor-starlette"), workdir, mock, servers, file_bytes=1 << 20):
                relays[floor.name] = (floor, {floor.name: targets.create_video(floor)})
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        names = list(relays)
        for round_number in range(args.rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                relay, video = relays[name]
                for operation in ("retrieve", "create"):
                    url = url_for(relay, operation, video)
                    wrk(url, operation, key=relay.key, connections=1, seconds=1)  # warm up
                    before = cpu_seconds(relay.process.pid)
                    run = wrk(url, operation, key=relay.key, connections=1, seconds=args.seconds)
                    spent = cpu_seconds(relay.process.pid) - before
                    figures.setdefault((name, operation), []).append((spent / max(run.requests, 1) * 1e6, run.p50_us))
    for (name, operation), rounds in figures.items():
        cpu = statistics.median(value for value, _ in rounds)
        p50 = statistics.median(value for _, value in rounds)
        shown = ", ".join(f"{value:.0f}" for value, _ in rounds)
        print(f"{name:>12} {operation:<8} CPU {cpu:6.0f} µs/request (rounds: {shown}); wrk p50 {p50:6.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
