"""Outcomes of upstream attempts (what the recorder batches), their summaries and the usage report."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from ..records import AccountQuota, Outcome
from .backend import Aggregate

# An Outcome's fields, in the order of the outcome table's columns that hold them.
_OUTCOME_COLUMNS = (
    "ts",
    "request_id",
    "key_name",
    "account",
    "account_type",
    "route",
    "upstream_status",
    "error_class",
    "latency_ms",
    "job_status",
)
_INSERT_OUTCOME = f"INSERT INTO outcomes ({', '.join(_OUTCOME_COLUMNS)}) VALUES ({', '.join('?' * len(_OUTCOME_COLUMNS))})"
_outcome_row = attrgetter(*_OUTCOME_COLUMNS)

# The usage report's statements per grouping, made once from these fixed column names.
_REPORT_COLUMNS = {"key": "key_name", "account": "account", "model": "model"}
_JOBS_BY = {
    by: f"SELECT coalesce({column}, 'unknown') AS name, count(*) AS jobs,"
    " sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,"
    " sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,"
    " coalesce(sum(CASE WHEN status = 'completed' THEN billable_seconds END), 0) AS video_seconds,"
    " coalesce(sum(CASE WHEN charge_state = 'settled' THEN usd END), 0) AS usd,"
    " coalesce(sum(CASE WHEN charge_state = 'reserved' THEN usd END), 0) AS usd_reserved"
    " FROM videos WHERE coalesce(charged_at, recorded_at) >= ? GROUP BY 1"
    for by, column in _REPORT_COLUMNS.items()
}
_REQUESTS_BY = {
    by: f"SELECT {column} AS name, count(*) AS n FROM outcomes WHERE ts >= ? AND {column} IS NOT NULL GROUP BY 1"
    for by, column in _REPORT_COLUMNS.items()
    if by != "model"
}


class Outcomes(Aggregate):
    def write_batch(
        self,
        outcomes: Sequence[Outcome],
        key_last_used: dict[str, float],
        account_last_used: dict[str, float],
        session_touches: dict[str, tuple[float, float]],
        quotas: Sequence[AccountQuota] = (),
    ) -> None:
        """Everything the recorder collected, in one transaction.

        The rows are built before the transaction: under load this thread waits for the GIL
        between statements, and every writer waits for the write lock as long as it holds it.
        It commits without waiting for PostgreSQL's WAL flush, which every replica's writers would
        wait out behind it: a database crash can take the last moments' records, as a relay crash
        takes the records still queued in its memory. None of them moves a charge.
        """
        quota_rows = [(q.account, q.observed_at, q.limit_requests, q.remaining_requests, q.resets_at) for q in quotas]
        outcome_rows = [_outcome_row(outcome) for outcome in outcomes]
        key_rows = [(ts, key_id) for key_id, ts in key_last_used.items()]
        account_rows = [(ts, name) for name, ts in account_last_used.items()]
        session_rows = [(used, expires, session_hash) for session_hash, (used, expires) in session_touches.items()]
        with self.transaction(durable=False) as conn:
            conn.executemany(
                "INSERT INTO account_quota (account, observed_at, limit_requests, remaining_requests, resets_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET observed_at = excluded.observed_at,"
                " limit_requests = excluded.limit_requests, remaining_requests = excluded.remaining_requests,"
                " resets_at = excluded.resets_at WHERE excluded.observed_at >= account_quota.observed_at",
                quota_rows,
            )
            conn.executemany(
                _INSERT_OUTCOME,
                outcome_rows,
            )
            conn.executemany("UPDATE keys SET last_used_at = greatest(last_used_at, ?) WHERE id = ?", key_rows)
            conn.executemany("UPDATE accounts SET last_used_at = greatest(last_used_at, ?) WHERE name = ?", account_rows)
            conn.executemany(
                "UPDATE sessions SET last_used_at = greatest(last_used_at, ?), expires_at = greatest(expires_at, ?) WHERE session_hash = ?",
                session_rows,
            )

    def list_outcomes(
        self,
        *,
        limit: int = 100,
        account: str | None = None,
        key_name: str | None = None,
        since: float | None = None,
        status: int | None = None,
        error_class: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered."""
        clauses, params = _outcome_filters(account=account, key_name=key_name, since=since, status=status, error_class=error_class)
        sql = f"SELECT * FROM outcomes {clauses} ORDER BY id DESC LIMIT ?"
        with self.reading() as conn:
            return [dict(row) for row in conn.execute(sql, (*params, limit))]

    def outcome_latencies(self, *, since: float) -> list[dict[str, Any]]:
        """(account, error_class, latency_ms) of every attempt since a time, for summaries."""
        with self.reading() as conn:
            return [
                dict(row)
                for row in conn.execute(
                    "SELECT account, error_class, latency_ms FROM outcomes WHERE ts >= ? AND account IS NOT NULL"
                    " ORDER BY account, latency_ms",
                    (since,),
                )
            ]

    def error_rates(self, since: float) -> dict[str, tuple[int, int]]:
        """account -> (attempts, attempts that failed) since a time."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT account, count(*) AS total, sum(CASE WHEN error_class != 'none' THEN 1 ELSE 0 END) AS errors FROM outcomes"
                " WHERE ts >= ? AND account IS NOT NULL GROUP BY account",
                (since,),
            )
            return {row["account"]: (int(row["total"]), int(row["errors"] or 0)) for row in rows}

    def usage_report(self, by: str, *, since: float) -> list[dict[str, Any]]:
        """Per key, account or model since a time: requests, jobs, completions, failures, seconds, USD."""
        with self.reading() as conn:
            jobs = {row["name"]: dict(row) for row in conn.execute(_JOBS_BY[by], (since,))}
            requests: dict[str, int] = {}
            if by in _REQUESTS_BY:  # outcome rows know keys and accounts, not models
                requests = {row["name"]: int(row["n"]) for row in conn.execute(_REQUESTS_BY[by], (since,))}
            report = []
            for name in sorted(set(jobs) | set(requests)):
                row = jobs.get(name, {})
                report.append(
                    {
                        by: name,
                        "requests": requests.get(name, 0) if by in _REQUESTS_BY else int(row.get("jobs") or 0),
                        "jobs": int(row.get("jobs") or 0),
                        "completed": int(row.get("completed") or 0),
                        "failed": int(row.get("failed") or 0),
                        "video_seconds": round(float(row.get("video_seconds") or 0), 3),
                        "usd": round(float(row.get("usd") or 0), 6),
                        "usd_reserved": round(float(row.get("usd_reserved") or 0), 6),
                    }
                )
            return report


def _outcome_filters(**filters: Any) -> tuple[str, list[Any]]:
    columns = {
        "account": "account = ?",
        "key_name": "key_name = ?",
        "since": "ts >= ?",
        "status": "upstream_status = ?",
        "error_class": "error_class = ?",
    }
    clauses = [columns[name] for name, value in filters.items() if value is not None]
    params = [value for value in filters.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
