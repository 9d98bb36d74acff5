"""What the database keeps, and pruning the rest.

Expired sticky sessions, expired Idempotency-Key answers and request-log rows past every window
are never read again: they always go. Outcomes (one row per upstream attempt) and finished webhook
deliveries are the relay's history; they go after the windows the operator sets
(RELAY_KEEP_OUTCOMES_DAYS, RELAY_KEEP_WEBHOOK_DELIVERIES_DAYS), and are kept for good when unset.
Jobs (the videos table) are never pruned: they are how a follow-up finds its owner, and what
usage reports and budgets count.

Each table is pruned in batches: the batch's keys are read without the write lock, then deleted
in a short transaction that checks the condition again (a row changed meanwhile stays). So a
create waits for one batch's delete at most, never for a whole table's, which on SQLite (one
writer) is what keeps pruning out of the relay's latency. `pruning` does one batch per step: the
relay's task (relay.retention) pauses between them, `relayctl db prune` runs them in a row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backend import Aggregate

if TYPE_CHECKING:
    from . import Store

# Rows per batch. Deleting 250 outcomes took 0.57 ms on SQLite (the write lock's hold) and 0.80 ms
# on PostgreSQL, 1.3 ms at p99; 1,000 took 1.9 ms and 8.3 ms (docs/deployment.md, "Pruning").
BATCH_ROWS = 250


@dataclass(frozen=True)
class Rule:
    """One table's prunable rows: `condition` over its columns, with one parameter (a time).

    A rule without `keys` is pruned in one statement: for tables whose prunable rows stay few.
    """

    table: str
    keys: tuple[str, ...]
    condition: str
    # (table, column naming this table's key): rows that belong to a pruned row and go with it.
    belonging: tuple[tuple[str, str], ...] = ()


# What may go at `cutoff`: each rule's parameter is the time before which its rows are done with.
EXPIRED_RULES = (
    Rule("sessions", ("session_hash",), "expires_at <= ?"),
    Rule("idempotency", ("key_name", "idempotency_key"), "expires_at <= ?"),
)
# The request log's longest window is a minute (RPM limits), and each key's old rows are dropped
# as it is used: what is left belongs to keys no longer used, at most their limit's worth each.
REQUEST_LOG_RULE = Rule("request_log", (), "ts <= ?")
OUTCOMES_RULE = Rule("outcomes", ("id",), "ts < ?")
# Pending deliveries are work still to do: never pruned, however old.
DELIVERIES_RULE = Rule(
    "webhook_deliveries", ("id",), "state != 'pending' AND created_at < ?", belonging=(("webhook_attempts", "delivery_id"),)
)

# Every table pruning touches (metrics label each with one of these).
PRUNED_TABLES = tuple(rule.table for rule in (*EXPIRED_RULES, REQUEST_LOG_RULE, OUTCOMES_RULE, DELIVERIES_RULE))


class Retention(Aggregate):
    def prunable(self, rule: Rule, cutoff: float, *, limit: int = BATCH_ROWS) -> list[tuple[Any, ...]]:
        """Up to `limit` keys of rows `rule` (one with keys) lets go at `cutoff`, read without the write lock."""
        with self.reading() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(rule.keys)} FROM {rule.table} WHERE {rule.condition} LIMIT ?", (cutoff, limit)
            ).fetchall()
        return [tuple(row) for row in rows]

    def count_prunable(self, rule: Rule, cutoff: float) -> int:
        with self.reading() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {rule.table} WHERE {rule.condition}", (cutoff,)).fetchone()[0])

    def prune_rows(self, rule: Rule, cutoff: float, keys: Sequence[tuple[Any, ...]]) -> int:
        """Delete the rows of `keys` that `rule` still lets go at `cutoff`; how many went.

        The rows that belong to them go too. Nothing here moves a charge or a job, so the
        commit does not wait for PostgreSQL's WAL flush: rows a crash brings back are pruned again.
        """
        if not rule.keys:
            with self.transaction(durable=False) as conn:
                return int(conn.execute(f"DELETE FROM {rule.table} WHERE {rule.condition}", (cutoff,)).rowcount)
        if not keys:
            return 0
        chosen = _keys_in(rule.keys, len(keys))
        parameters = [value for key in keys for value in key]
        with self.transaction(durable=False) as conn:
            for table, column in rule.belonging:
                conn.execute(
                    f"DELETE FROM {table} WHERE {column} IN (SELECT {rule.keys[0]} FROM {rule.table} WHERE {chosen} AND {rule.condition})",
                    (*parameters, cutoff),
                )
            cursor = conn.execute(f"DELETE FROM {rule.table} WHERE {chosen} AND {rule.condition}", (*parameters, cutoff))
            return int(cursor.rowcount)


def _keys_in(columns: tuple[str, ...], count: int) -> str:
    if len(columns) == 1:
        return f"{columns[0]} IN ({', '.join('?' * count)})"
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"({', '.join(columns)}) IN (VALUES {', '.join([row] * count)})"


DAY_SECONDS = 24 * 3600.0
# The shortest history window: the relay's own readers of outcomes look back minutes (account
# error rates), an operator's `observe` and `usage` hours to days.
MIN_KEEP_DAYS = 1.0
REQUEST_LOG_KEEP_SECONDS = DAY_SECONDS


@dataclass(frozen=True)
class RetentionPolicy:
    """How many days of history to keep; None keeps it for good."""

    outcomes_days: float | None = None
    webhook_deliveries_days: float | None = None

    def cutoffs(self, now: float) -> list[tuple[Rule, float]]:
        """Each rule that applies, with the time before which its rows may go."""
        chosen = [(rule, now) for rule in EXPIRED_RULES]
        chosen.append((REQUEST_LOG_RULE, now - REQUEST_LOG_KEEP_SECONDS))
        if self.outcomes_days is not None:
            chosen.append((OUTCOMES_RULE, now - self.outcomes_days * DAY_SECONDS))
        if self.webhook_deliveries_days is not None:
            chosen.append((DELIVERIES_RULE, now - self.webhook_deliveries_days * DAY_SECONDS))
        return chosen


def pruning(store: Store, policy: RetentionPolicy, now: float) -> Iterator[tuple[str, int]]:
    """Prune what `policy` lets go at `now`, one batch per step: yields (table, rows deleted)."""
    for rule, cutoff in policy.cutoffs(now):
        if not rule.keys:
            yield rule.table, store.prune_rows(rule, cutoff, ())
            continue
        while keys := store.prunable(rule, cutoff):
            deleted = store.prune_rows(rule, cutoff, keys)
            yield rule.table, deleted
            if deleted == 0:  # every row read changed before the delete: the next pass takes them
                break


def prune(store: Store, policy: RetentionPolicy, now: float) -> dict[str, int]:
    """Every batch in a row: rows deleted per table (every table the policy covers, 0s too)."""
    deleted = {rule.table: 0 for rule, _ in policy.cutoffs(now)}
    for table, count in pruning(store, policy, now):
        deleted[table] += count
    return deleted


def count_prunable(store: Store, policy: RetentionPolicy, now: float) -> dict[str, int]:
    """What `prune` would delete now, per table."""
    return {rule.table: store.count_prunable(rule, cutoff) for rule, cutoff in policy.cutoffs(now)}
