"""Two `make bench` runs side by side: did the relay's SQLite path move?

    python -m bench.compare bench/results/<earlier>.json bench/results/<later>.json

Absolute figures from different runs on a shared machine differ by whatever else ran, so each
figure is first taken against the direct baseline of its own run (nginx answering without the
relay, measured in the same interleaved rounds): added latency is relay minus direct, throughput
is relay ÷ direct. The last column is later ÷ earlier of those (1.00: no change; above 1 is more
added latency, or a larger share of direct's rate); the one before it compares the raw figures.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SQLITE_TARGETS = ("relay-1w", "relay-2w")


@dataclass(frozen=True)
class Figure:
    """One SQLite-path figure in both runs, each with its run's direct baseline."""

    title: str
    kind: str  # "latency" (ms, lower is better) or "rate" (requests/s, higher is better)
    earlier: float
    earlier_direct: float
    later: float
    later_direct: float

    @property
    def raw_ratio(self) -> float | None:
        return self.later / self.earlier if self.earlier else None

    @property
    def baselined_ratio(self) -> float | None:
        """Later ÷ earlier of relay minus direct (latency) or relay ÷ direct (rate)."""
        if self.kind == "latency":
            before, after = self.earlier - self.earlier_direct, self.later - self.later_direct
        else:
            if not (self.earlier_direct and self.later_direct):
                return None
            before, after = self.earlier / self.earlier_direct, self.later / self.later_direct
        return after / before if before else None


def figures(earlier: dict[str, Any], later: dict[str, Any]) -> list[Figure]:
    """Every SQLite-path figure both runs have."""
    found: list[Figure] = []
    for operation, by_target in later["latency"].items():
        before = earlier["latency"].get(operation, {})
        if "relay-1w" not in by_target or "relay-1w" not in before:
            continue
        for quantile in ("p50", "p99"):
            key = f"{quantile}_us"
            found.append(
                Figure(
                    f"{quantile} ms, {operation}, c=1, relay-1w",
                    "latency",
                    before["relay-1w"][key] / 1000,
                    before["direct"][key] / 1000,
                    by_target["relay-1w"][key] / 1000,
                    by_target["direct"][key] / 1000,
                )
            )
    for operation, by_concurrency in later["throughput"].items():
        for connections, by_target in by_concurrency.items():
            before = earlier["throughput"].get(operation, {}).get(connections, {})
            for name in SQLITE_TARGETS:
                if name not in by_target or name not in before:
                    continue
                for key, title in (("rate_within_p99_limit", "rate with p99 < 50 ms"), ("peak_rate", "peak rate")):
                    found.append(
                        Figure(
                            f"{title}, {operation}, c={connections}, {name}",
                            "rate",
                            before[name][key],
                            before["direct"][key],
                            by_target[name][key],
                            by_target["direct"][key],
                        )
                    )
    return found


def markdown(earlier: dict[str, Any], later: dict[str, Any]) -> str:
    first, second = earlier["date"][:10], later["date"][:10]
    lines = [
        f"| figure | {first}: relay (direct) | {second}: relay (direct) | {second} ÷ {first} | same, against direct |",
        "|---|---|---|---|---|",
    ]
    for figure in figures(earlier, later):
        places = 3 if figure.kind == "latency" else 0
        cells = [f"{figure.earlier:,.{places}f} ({figure.earlier_direct:,.{places}f})"]
        cells.append(f"{figure.later:,.{places}f} ({figure.later_direct:,.{places}f})")
        cells += [_ratio(figure.raw_ratio), _ratio(figure.baselined_ratio)]
        lines.append(f"| {figure.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("earlier", type=Path)
    parser.add_argument("later", type=Path)
    args = parser.parse_args(argv)
    print(markdown(json.loads(args.earlier.read_text()), json.loads(args.later.read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
