"""Budgets and admission: request slots, reservations of creates in flight, usage, and the holders
whose leases keep reservations alive (relay.holders)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..budget_blocks import DUST
from ..limits import fits_account_cap
from ..records import Usage
from .backend import Aggregate, Connection
from .charges import charged_in_period

if TYPE_CHECKING:
    from ..holders import Holder

R = TypeVar("R")

# A reservation counts while the process that wrote it holds its lease (relay.holders); rows
# from versions without owners keep only their own expiry. Takes the current time.time().
_HELD_BY_LIVE_OWNER = "(owner IS NULL OR owner IN (SELECT id FROM holders WHERE expires_at > ?))"

# Slot claims, reservations, budget blocks and their releases commit without waiting for
# PostgreSQL's WAL flush (transaction(durable=False)), sparing a create one flush. What a crash
# of the database server can lose: those of the last moments (wal_writer_delay, 200 ms by
# default). A lost reservation stops counting while its create is in flight (the job's own record
# is durable); a lost block, what its process admits from it in the rest of its 10 s (at most a
# sixteenth of what the key had left); a lost slot claim lets a few requests past a per-minute
# limit; a lost release or write-off leaves a row that expires.

# Rows of one create each: a budget block (relay.budget_blocks) is several creates' worth held
# ahead, counted in what a key holds but not as a create in flight.
_CREATES_IN_FLIGHT = "coalesce(sum(CASE WHEN substr(id, 1, 4) = 'blk_' THEN 0 ELSE 1 END), 0)"

# What a key or an account has used: (its charged jobs since a time, its creates in flight).
# Charges 'reserved' and 'settled' count against budgets; 'released' ones do not.
_USAGE_STATEMENTS = {
    "key": (
        "SELECT coalesce(sum(billable_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd FROM videos"
        " WHERE key_name = ? AND charged_at >= ? AND charge_state IN ('reserved', 'settled')",
        f"SELECT {_CREATES_IN_FLIGHT} AS n, coalesce(sum(video_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd"
        f" FROM reservations WHERE key_name = ? AND expires_at > ? AND id != ? AND {_HELD_BY_LIVE_OWNER}",
    ),
    "account": (
        "SELECT coalesce(sum(billable_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd FROM videos"
        " WHERE account = ? AND charged_at >= ? AND charge_state IN ('reserved', 'settled')",
        "SELECT count(*) AS n, coalesce(sum(video_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd"
        f" FROM reservations WHERE account = ? AND expires_at > ? AND id != ? AND {_HELD_BY_LIVE_OWNER}",
    ),
}


def _usage(conn: Connection, of: str, name: str, *, since: float, now: float, exclude: str = "") -> Usage:
    """`of` is "key" or "account". Since the start of a day or month, the jobs' charges come
    from their running totals (relay.store.charges); since any other time, from the jobs."""
    return _usages(conn, of, name, (since,), now=now, exclude=exclude)[1][since]


def _usages(
    conn: Connection, of: str, name: str, starts: Sequence[float], *, now: float, exclude: str = ""
) -> tuple[Usage, dict[float, Usage]]:
    """The creates in flight alone, and `_usage` since each of `starts`: the creates in flight
    are read once for all of them."""
    jobs_sql, flying_sql = _USAGE_STATEMENTS[of]
    flying = conn.execute(flying_sql, (name, now, exclude, time.time())).fetchone()
    in_flight = Usage(in_flight=int(flying["n"]), video_seconds=float(flying["seconds"]), usd=float(flying["usd"]))
    usages = {}
    for since in starts:
        charged = charged_in_period(conn, of, name, since, now)
        if charged is None:
            jobs = conn.execute(jobs_sql, (name, since)).fetchone()
            charged = float(jobs["seconds"]), float(jobs["usd"])
        usages[since] = Usage(
            in_flight=in_flight.in_flight,
            video_seconds=charged[0] + in_flight.video_seconds,
            usd=charged[1] + in_flight.usd,
        )
    return in_flight, usages


# A block's id, and video seconds and USD its row gives up.
BlockLeftover = tuple[str, float, float]


def shrink_block(conn: Connection, block_id: str, video_seconds: float, usd: float) -> None:
    """Take from a block's row (to a job's charge, or written off); gone once nothing is left."""
    # Two statements whose answers nobody reads: on PostgreSQL they travel with the transaction's
    # next round trip, where an UPDATE whose count decided on a DELETE took one of its own.
    conn.execute(
        "DELETE FROM reservations WHERE id = ? AND video_seconds - ? <= ? AND usd - ? <= ?",
        (block_id, video_seconds, DUST, usd, DUST),
    )
    conn.execute("UPDATE reservations SET video_seconds = video_seconds - ?, usd = usd - ? WHERE id = ?", (video_seconds, usd, block_id))


class Reservations(Aggregate):
    def take_request_slots(self, key_name: str, *, now: float, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """Admit up to `wanted` requests into the key's sliding window: (how many were granted,
        0.0) or, when the window is full, (0, seconds until a slot frees)."""
        with self.transaction(durable=False) as conn:
            conn.execute("DELETE FROM request_log WHERE key_name = ? AND ts <= ?", (key_name, now - window))
            row = conn.execute(
                "SELECT coalesce(sum(slots), 0) AS n, min(ts) AS oldest FROM request_log WHERE key_name = ?", (key_name,)
            ).fetchone()
            granted = min(wanted, limit - int(row["n"]))
            if granted <= 0:
                return 0, max(0.0, float(row["oldest"]) + window - now)
            conn.execute("INSERT INTO request_log (key_name, ts, slots) VALUES (?, ?, ?)", (key_name, now, granted))
            return granted, 0.0

    def key_usage(self, key_name: str, *, since: float, now: float) -> Usage:
        with self.reading() as conn:
            return _usage(conn, "key", key_name, since=since, now=now)

    def account_usage(self, account: str, *, since: float, now: float) -> Usage:
        with self.reading() as conn:
            return _usage(conn, "account", account, since=since, now=now)

    def reserve(
        self,
        reservation_id: str,
        *,
        key_name: str,
        video_seconds: float,
        usd: float,
        now: float,
        expires_at: float,
        periods: Sequence[float],
        refuse: Callable[[Usage, dict[float, Usage]], R | None],
        owner: str | None = None,
    ) -> R | None:
        """Reserve a create against its key's limits, atomically across workers and the CLI.

        `refuse` sees the key's usage (in flight, and per period start in `periods`) and names
        the limit the create would break, or None; only then is the reservation written.
        Because this runs in one write transaction, concurrent creates racing for the last of
        a budget are admitted one at a time and cannot overspend it.
        """
        # A reservation is a block of one create.
        refused, _ = self.claim_budget_block(
            reservation_id,
            key_name=key_name,
            video_seconds=video_seconds,
            usd=usd,
            now=now,
            expires_at=expires_at,
            periods=periods,
            refuse=refuse,
            size=lambda _usage: 1,
            owner=owner,
        )
        return refused

    def claim_budget_block(
        self,
        block_id: str,
        *,
        key_name: str,
        video_seconds: float,
        usd: float,
        now: float,
        expires_at: float,
        periods: Sequence[float],
        refuse: Callable[[Usage, dict[float, Usage]], R | None],
        size: Callable[[dict[float, Usage]], int],
        owner: str | None,
        retiring: BlockLeftover | None = None,
    ) -> tuple[R | None, int]:
        """A budget block (relay.budget_blocks; `reserve` is a block of one create): when `refuse`
        admits this create, write `size` creates' worth as one row and return (None, that
        number); else (the refusal, 0).
        `retiring` (the key's previous block and what it has left) is written off first.

        Expired rows and those of processes that are gone do not count here; renew_holder deletes them."""
        with self.transaction(durable=False) as conn:
            if retiring is not None:
                shrink_block(conn, *retiring)
            flying, by_period = _usages(conn, "key", key_name, periods, now=now)
            refused = refuse(flying, by_period)
            if refused is not None:
                return refused, 0
            jobs = size(by_period)
            conn.execute(
                "INSERT INTO reservations (id, key_name, account, video_seconds, usd, created_at, expires_at, owner)"
                " VALUES (?, ?, NULL, ?, ?, ?, ?, ?)",
                (block_id, key_name, video_seconds * jobs, usd * jobs, now, expires_at, owner),
            )
            return None, jobs

    def shrink_blocks(self, leftovers: Sequence[BlockLeftover]) -> None:
        """Write off what blocks hold that no create will take (retired, or a share given back)."""
        with self.transaction(durable=False) as conn:
            for leftover in leftovers:
                shrink_block(conn, *leftover)

    def claim_account_capacity(
        self,
        reservation_id: str,
        *,
        key_name: str,
        account: str,
        video_seconds: float,
        usd: float,
        cap: float,
        day_start: float,
        now: float,
        expires_at: float,
        owner: str | None = None,
    ) -> bool:
        """Book a create's seconds on a capped account if they fit under its daily cap."""
        with self.transaction(durable=False) as conn:
            used = _usage(conn, "account", account, since=day_start, now=now, exclude=reservation_id)
            if not fits_account_cap(cap, used.video_seconds, video_seconds):
                return False
            conn.execute(
                "INSERT INTO reservations (id, key_name, account, video_seconds, usd, created_at, expires_at, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET account = excluded.account",
                (reservation_id, key_name, account, video_seconds, usd, now, expires_at, owner),
            )
            return True

    def release_reservation(self, reservation_id: str) -> None:
        with self.transaction(durable=False) as conn:
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def live_reservations(self, now: float) -> list[dict[str, Any]]:
        """The reservations that count: not expired, and held by a live process (or by no process)."""
        with self.reading() as conn:
            return [
                dict(row)
                for row in conn.execute(f"SELECT * FROM reservations WHERE expires_at > ? AND {_HELD_BY_LIVE_OWNER}", (now, time.time()))
            ]

    def key_holdings(self, key_name: str, now: float) -> list[dict[str, Any]]:
        """A key's unexpired reservations, oldest first, with their owner and whether it holds its lease."""
        with self.reading() as conn:
            return [
                {**dict(row), "alive": bool(row["alive"])}
                for row in conn.execute(
                    "SELECT r.id, r.owner, r.account, r.video_seconds, r.usd, r.created_at, r.expires_at,"
                    " h.hostname, h.pid, h.expires_at AS lease_expires_at,"
                    " (r.owner IS NULL OR coalesce(h.expires_at > ?, false)) AS alive"
                    " FROM reservations r LEFT JOIN holders h ON h.id = r.owner"
                    " WHERE r.key_name = ? AND r.expires_at > ? ORDER BY r.created_at, r.id",
                    (time.time(), key_name, now),
                )
            ]

    def renew_holder(self, holder: Holder, *, now: float, lease: float, exited: Callable[[dict[str, Any]], bool]) -> int:
        """Register or renew this process's lease; forget processes that are gone; return holdings freed.

        A holder is gone when its lease lapsed or when `exited` says so (a dead pid on this
        machine). Their reservations are deleted here, by whichever live process renews first.
        """
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO holders (id, host, hostname, pid, process_started, started_at, renewed_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET renewed_at = excluded.renewed_at,"
                " expires_at = excluded.expires_at",
                (holder.owner, holder.host, holder.hostname, holder.pid, holder.process_started, now, now, now + lease),
            )
            others = conn.execute("SELECT * FROM holders WHERE id != ?", (holder.owner,)).fetchall()
            gone = [row["id"] for row in others if row["expires_at"] <= now or exited(dict(row))]
            conn.executemany("DELETE FROM holders WHERE id = ?", [(owner,) for owner in gone])
            # Expired rows no longer count anywhere; clearing them here keeps them off the create's path.
            conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (now,))
            return conn.execute("DELETE FROM reservations WHERE owner IS NOT NULL AND owner NOT IN (SELECT id FROM holders)").rowcount

    def release_holder(self, owner: str) -> None:
        """A process that stops cleanly gives up its lease and whatever it still held."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM reservations WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM holders WHERE id = ?", (owner,))
