"""Running totals of what each key and account has been charged, per UTC day and month.

A budget check needs "USD and video seconds charged to this key since the start of the month".
Summing the month's jobs made every create slower as a key's jobs piled up (a busy key's month
holds tens of thousands); the totals make it one row. They are kept in the same transactions
that change a job's charge: recorded (`reserved`), released when it fails or is given up, and
counted again when a given-up job completes after all. `settled` counts as `reserved` did.
"""

from __future__ import annotations

from typing import Any

from ..limits import PERIODS, period_bounds
from .backend import Connection

# Charges that count against budgets and caps.
COUNTED_STATES = ("reserved", "settled")
_CHARGE_COLUMNS = "key_name, account, charged_at, charge_state, billable_seconds, usd"


_ADDED_TO_TOTALS = (
    " ON CONFLICT (subject, name, period, starts_at) DO UPDATE SET"
    " video_seconds = charge_totals.video_seconds + excluded.video_seconds, usd = charge_totals.usd + excluded.usd"
)


def add_charge(
    conn: Connection,
    *,
    key_name: str,
    account: str,
    charged_at: float,
    video_seconds: float | None,
    usd: float | None,
    sign: int = 1,
    unless_recorded: str | None = None,
) -> None:
    """Add (or with sign=-1 take away) one job's charge in its day's and month's totals; with
    `unless_recorded` (a job's id), only if no job holds that id yet. Inside the write lock
    nothing can record it between this statement and the job's own INSERT after it."""
    rows = [
        (subject, name, period, period_bounds(period, charged_at)[0], sign * (video_seconds or 0.0), sign * (usd or 0.0))
        for period in PERIODS
        for subject, name in (("key", key_name), ("account", account))
    ]
    # One statement for the four rows: one round trip on PostgreSQL, inside the write lock.
    values = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in rows)
    parameters = tuple(value for row in rows for value in row)
    if unless_recorded is None:
        source = f"VALUES {values}"
    else:
        # A WHERE needs a SELECT; it also settles SQLite's reading of the ON CONFLICT after it.
        source = f"SELECT * FROM (VALUES {values}) AS charge WHERE NOT EXISTS (SELECT 1 FROM videos WHERE id = ?)"
        parameters += (unless_recorded,)
    conn.execute(f"INSERT INTO charge_totals (subject, name, period, starts_at, video_seconds, usd) {source}{_ADDED_TO_TOTALS}", parameters)


def add_job_charge(conn: Connection, job: Any, sign: int = 1) -> None:
    """`add_charge` for a job's row (key_name, account, charged_at, billable_seconds, usd)."""
    add_charge(
        conn,
        key_name=job["key_name"],
        account=job["account"],
        charged_at=job["charged_at"],
        video_seconds=job["billable_seconds"],
        usd=job["usd"],
        sign=sign,
    )


def charge_of(conn: Connection, video_id: str) -> Any:
    """The job's charge as it stands (read inside the transaction that may change it)."""
    return conn.execute(f"SELECT {_CHARGE_COLUMNS} FROM videos WHERE id = ?", (video_id,)).fetchone()


def note_charge_change(conn: Connection, before: Any, video_id: str) -> None:
    """After an update in the same transaction: move the totals if the job's charge began or
    stopped counting."""
    if before is None or before["charged_at"] is None:
        return
    after = charge_of(conn, video_id)
    was, now = before["charge_state"] in COUNTED_STATES, after is not None and after["charge_state"] in COUNTED_STATES
    if was != now:
        add_job_charge(conn, before, sign=1 if now else -1)


def charged_in_period(conn: Connection, subject: str, name: str, since: float, now: float) -> tuple[float, float] | None:
    """(video seconds, USD) charged to the key or account since `since`, when `since` starts
    the UTC month or day that holds `now` (the periods budgets and caps count); None for any
    other time."""
    for period in ("month", "day"):
        if period_bounds(period, now)[0] == since:
            row = conn.execute(
                "SELECT video_seconds, usd FROM charge_totals WHERE subject = ? AND name = ? AND period = ? AND starts_at = ?",
                (subject, name, period, since),
            ).fetchone()
            # Additions and subtractions of floats leave dust: budgets compare at cent fractions.
            return (0.0, 0.0) if row is None else (round(float(row["video_seconds"]), 9), round(float(row["usd"]), 9))
    return None
