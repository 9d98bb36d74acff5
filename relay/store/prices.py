"""Operator price overrides per model and size."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import NotFound
from .backend import Aggregate
from .meta import bump_config_version


class Prices(Aggregate):
    def list_prices(self) -> dict[tuple[str, str], float]:
        with self.reading() as conn:
            rows = conn.execute("SELECT model, size, usd_per_second FROM prices")
            return {(row["model"], row["size"]): float(row["usd_per_second"]) for row in rows}

    def set_prices(self, rows: Sequence[tuple[str, str, float]], *, now: float) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO prices (model, size, usd_per_second, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model, size) DO UPDATE SET usd_per_second = excluded.usd_per_second,"
                " updated_at = excluded.updated_at",
                [(model, size, usd, now) for model, size, usd in rows],
            )
            bump_config_version(conn)

    def delete_price(self, model: str, size: str) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM prices WHERE model = ? AND size = ?", (model, size)).rowcount == 0:
                raise NotFound(f"no price override for model {model!r} size {size!r}")
            bump_config_version(conn)
