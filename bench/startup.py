"""How much a start costs: relayctl answering and a relay worker getting ready, side by side.

    python -m bench.startup <commit|directory|work> [...] [--rounds 5]

Operators and scripts run relayctl many times a day, and a relay's workers start anew on every
deploy and restart. For each relay given (a commit, extracted with `git archive`; a directory
holding a relay's source; or `work`, the working tree), byte-compiled first as `make` does, each
round times, in turns: `relayctl --help`; `relayctl keys list` on an up-to-date database; and a
relay (uvicorn, one worker, the flags of `make run`) from its start until /healthz answers. The
baseline, timed in the same rounds, is a bare `python -c pass`. Prints, per relay and start, the
median over rounds of the CPU it took (user plus system: the machine's other work moves it far
less than wall time) and that as a multiple of the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import targets
from .ab import source_of
from .procs import Server, cpu_seconds, stop, workspace

BASELINE = "python -c pass"
STARTS = ("relayctl --help", "relayctl keys list", "relay ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("relays", nargs="+", help="commits, directories with a relay's source, or `work`")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir, servers = stack.enter_context(workspace("relay-startup-"))
        runs: dict[str, Callable[[], float]] = {BASELINE: lambda: child_cpu([sys.executable, "-c", "pass"], dict(os.environ))}
        for given in args.relays:
            source = stack.enter_context(source_of(given))
            name = Path(given).name if Path(given).is_dir() else given
            (workdir / name).mkdir()
            runs |= starts_of(name, source, workdir / name, servers)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for round_number in range(args.rounds):
            names = list(runs)
            # Each round in another order: no start always follows the same one.
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                seconds[name].append(runs[name]())
    baseline = statistics.median(seconds[BASELINE])
    print(f"{'start':<40} {'CPU ms (median)':>16} {'x ' + BASELINE:>20}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<40} {median * 1000:>16.0f} {median / baseline:>20.1f}")
    return 0


def starts_of(name: str, source: Path | None, workdir: Path, servers: list[Server]) -> dict[str, Callable[[], float]]:
    """The three starts of one relay, its database prepared by its own relayctl."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "relay", "ops"], cwd=source or targets.REPO, check=True)
    env, _ = targets.prepare_relay_database(workdir, "http://127.0.0.1:9/v1", source=source)
    relayctl = [str(targets.RELAY_BIN / "relayctl")]
    if source is not None:
        relayctl = [sys.executable, "-P", "-c", "from ops.cli import main; main()"]
    return {
        f"{name}: relayctl --help": lambda: child_cpu([*relayctl, "--help"], env),
        f"{name}: relayctl keys list": lambda: child_cpu([*relayctl, "keys", "list"], env),
        f"{name}: relay ready": lambda: relay_ready_cpu(env, source or targets.REPO, workdir, servers),
    }


def child_cpu(command: list[str], env: dict[str, str]) -> float:
    """CPU seconds a command took, run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def relay_ready_cpu(env: dict[str, str], cwd: Path, workdir: Path, servers: list[Server]) -> float:
    """CPU seconds a relay took from its start until /healthz answered."""
    server = targets.start_relay(workdir, env, "", workers=1, name="relay-startup", cwd=cwd)
    servers.append(server)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10):
            return cpu_seconds(server.process.pid)
    finally:
        stop(server)
        servers.remove(server)


if __name__ == "__main__":
    sys.exit(main())
