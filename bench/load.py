"""Load from Debian's wrk: fixed connections, exact percentiles, and the p99 < 50 ms rate search."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

WRK_DIR = Path(__file__).parent / "wrk"
P99_LIMIT_US = 50_000


@dataclass(frozen=True)
class Run:
    connections: int
    delay_ms: int
    requests: int
    seconds: float
    errors: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def within_limit(self) -> bool:
        return self.errors == 0 and self.requests > 0 and self.p99_us < P99_LIMIT_US

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rate": round(self.rate, 1), "within_limit": self.within_limit}


def wrk(url: str, operation: str, *, key: str, connections: int, seconds: float, delay_ms: int = 0) -> Run:
    """One wrk run of `operation` (create or retrieve) against `url`."""
    threads = min(connections, 2)
    command = [
        shutil.which("wrk") or "/usr/bin/wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / f"{operation}.lua"),
        url,
    ]
    env = {**os.environ, "BENCH_KEY": key, "BENCH_WRK_DIR": str(WRK_DIR), "BENCH_DELAY_MS": str(delay_ms)}
    output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    figures = json.loads(line.removeprefix("BENCH "))
    return Run(
        connections=connections,
        delay_ms=delay_ms,
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        errors=figures["errors"],
        p50_us=figures["p50_us"],
        p90_us=figures["p90_us"],
        p99_us=figures["p99_us"],
        max_us=figures["max_us"],
    )


def pacing_for(run: Run, fraction: float) -> int:
    """The pause per connection (ms) that brings the offered rate to `fraction` of `run`'s."""
    if run.rate <= 0:
        return 1000
    target_rate = run.rate * fraction
    per_request_ms = run.connections / target_rate * 1000
    return max(1, round(per_request_ms - run.p50_us / 1000))


def best_rate(
    url: str, operation: str, *, key: str, connections: int, seconds: float, resume: Run | None = None
) -> tuple[Run, Run, list[Run]]:
    """(best within p99 < 50 ms and no errors, flat-out peak, every run tried).

    Closed-loop load at a fixed concurrency queues at the server once it saturates, so p99
    grows with the queue; pacing each connection (wrk's delay()) lowers the offered rate until
    p99 fits. `resume` is the pacing an earlier round settled on, tried before searching again.
    A `best` that is not `within_limit` means no tested rate met the limit.
    """
    peak = wrk(url, operation, key=key, connections=connections, seconds=seconds)
    tried = [peak]
    if peak.within_limit:
        return peak, peak, tried
    run = peak
    if resume is not None and resume.delay_ms > 0:
        run = wrk(url, operation, key=key, connections=connections, seconds=seconds, delay_ms=resume.delay_ms)
        tried.append(run)
        if run.within_limit or not resume.within_limit:
            return run, peak, tried
    for fraction in (0.7, 0.5, 0.3, 0.15, 0.05):
        delay = pacing_for(peak, fraction)
        if delay <= run.delay_ms:
            continue
        run = wrk(url, operation, key=key, connections=connections, seconds=seconds, delay_ms=delay)
        tried.append(run)
        if run.within_limit:
            break
    return run, peak, tried
