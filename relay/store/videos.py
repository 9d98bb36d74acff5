"""Videos and characters the relay created: which account and key own them (job affinity), and their charges."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from ..records import TERMINAL_STATUSES, Video
from .backend import Aggregate, Connection
from .charges import COUNTED_STATES, add_charge, charge_of, note_charge_change
from .meta import bump_deletions
from .reservations import BlockLeftover, shrink_block
from .webhooks import enqueue_video_event

# Pages of a key's live videos (list_videos), oldest or newest first; (created_at, id) is the cursor.
_FIRST_PAGE_ASC = "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL ORDER BY created_at ASC, id ASC LIMIT ?"
_FIRST_PAGE_DESC = "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?"
_NEXT_PAGE_ASC = (
    "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL AND (created_at, id) > (?, ?) ORDER BY created_at ASC, id ASC LIMIT ?"
)
_NEXT_PAGE_DESC = (
    "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL AND (created_at, id) < (?, ?) ORDER BY created_at DESC, id DESC LIMIT ?"
)


# A watched job the watcher may claim: not deleted nor finished (the terms of idx_videos_unfinished,
# as written there, so both databases see that it serves), and not leased to a live process.
_CLAIMABLE = (
    "deleted_at IS NULL AND status NOT IN ('completed', 'failed')"
    " AND (watch_until IS NULL OR watch_until < ? OR watch_owner NOT IN (SELECT id FROM holders WHERE expires_at > ?))"
)


@functools.cache
def _due_of_accounts(accounts: int) -> str:
    """The claimable jobs of `accounts` accounts, each account's oldest due first up to its own
    limit, then the oldest of them all up to the claim's limit."""
    parts = " UNION ALL ".join(
        f"SELECT * FROM (SELECT * FROM videos WHERE account = ? AND watch_next_at <= ? AND {_CLAIMABLE}"
        f" ORDER BY watch_next_at LIMIT ?) AS account_{n}"
        for n in range(accounts)
    )
    return f"SELECT * FROM ({parts}) AS due ORDER BY watch_next_at LIMIT ?"


class Videos(Aggregate):
    def insert_video(self, video: Video, *, reservation_id: str | None = None, block_share: BlockLeftover | None = None) -> Video:
        """Record who owns a new job, its charge taking over from the create's reservation (or
        its share of a budget block).

        A replayed id keeps its first owner: the record returned is the one that holds the id.
        Nothing in the transaction is read before it commits, so on PostgreSQL the whole record
        (BEGIN, the writers' lock, the booking's release, the charge, the row, COMMIT) is one
        round trip: the charge goes first, on the condition that no job holds the id yet.
        """
        with self.transaction() as conn:
            if reservation_id is not None:
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            if block_share is not None:
                shrink_block(conn, *block_share)
            if video.charged_at is not None and video.charge_state in COUNTED_STATES:
                add_charge(
                    conn,
                    key_name=video.key_name,
                    account=video.account,
                    charged_at=video.charged_at,
                    video_seconds=video.billable_seconds,
                    usd=video.usd,
                    unless_recorded=video.id,
                )
            inserted = conn.execute(
                "INSERT INTO videos (id, account, key_name, kind, source_video_id, model, seconds, billable_seconds,"
                " size, status, progress, created_at, recorded_at, updated_at, resource, usd, charge_state, charged_at,"
                " watch_next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    video.id,
                    video.account,
                    video.key_name,
                    video.kind,
                    video.source_video_id,
                    video.model,
                    video.seconds,
                    video.billable_seconds,
                    video.size,
                    video.status,
                    video.progress,
                    video.created_at,
                    video.recorded_at,
                    video.recorded_at,
                    video.resource,
                    video.usd,
                    video.charge_state,
                    video.charged_at,
                    None if video.status in TERMINAL_STATUSES else video.watch_next_at,
                ),
            )
        # Read once committed (on PostgreSQL its answer came back with the commit's).
        if inserted.rowcount == 1:
            return video
        with self.reading() as conn:
            return _video(conn.execute("SELECT * FROM videos WHERE id = ?", (video.id,)).fetchone())

    def video(self, video_id: str) -> Video | None:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
            return None if row is None else _video(row)

    def update_video(
        self,
        video_id: str,
        *,
        status: str,
        progress: int | None,
        expires_at: float | None,
        resource: str,
        now: float,
        next_poll_at: float | None = None,
    ) -> bool:
        """Store the latest status; True only for the one call that moved the job to a final status.

        The compare-and-set (`status` not already final) means a completion is counted once,
        however many workers, replicas, client polls and watchers see it: its charge (the price
        when it was created, times its seconds) is settled, or for a failure released, exactly
        once, and its webhook events are written to the outbox in the same transaction, so a
        crash can lose neither. News the caller brought counts as the watcher's poll: the next
        one waits until `next_poll_at`.
        """
        # Progress news commits without waiting for PostgreSQL's WAL flush, as the watcher's leases
        # do (claim_jobs_to_watch): losing it in a database crash only has the job polled again.
        # A final status moves a charge and writes webhook events: that commit is durable.
        final = status in TERMINAL_STATUSES
        with self.transaction(durable=final) as conn:
            # Only a final status moves a charge: progress news needs no read of it.
            before = charge_of(conn, video_id) if final else None
            cursor = conn.execute(
                "UPDATE videos SET status = ?, progress = ?, resource = ?, updated_at = ?, expires_at = ?,"
                " finished_at = CASE WHEN ? IN ('completed', 'failed') THEN ? ELSE NULL END,"
                # A job the watcher gave up (reservation released) that completes after all is charged.
                " charge_state = CASE WHEN ? = 'completed' AND charge_state = 'released'"
                "   AND watch_next_at IS NULL AND watch_stopped IS NOT NULL THEN 'settled'"
                "   WHEN charge_state != 'reserved' THEN charge_state"
                "   WHEN ? = 'completed' THEN 'settled' WHEN ? = 'failed' THEN 'released' ELSE charge_state END,"
                # A pause (the job still watched, waiting out its account's state) ends with the job;
                # a give-up's reason stays, as the line above reads it.
                " watch_stopped = CASE WHEN ? IN ('completed', 'failed') AND watch_next_at IS NOT NULL THEN NULL"
                "   ELSE watch_stopped END,"
                " watch_next_at = CASE WHEN ? IN ('completed', 'failed') OR watch_next_at IS NULL THEN NULL"
                "   ELSE COALESCE(CAST(? AS double precision), watch_next_at) END"
                " WHERE id = ? AND status NOT IN ('completed', 'failed')",
                (
                    status,
                    progress,
                    resource,
                    now,
                    expires_at,
                    status,
                    now,
                    status,
                    status,
                    status,
                    status,
                    status,
                    next_poll_at,
                    video_id,
                ),
            )
            # Progress news reads no answer: on PostgreSQL its transaction is one round trip.
            finished = final and cursor.rowcount == 1
            if finished:
                note_charge_change(conn, before, video_id)
                row = conn.execute("SELECT key_name FROM videos WHERE id = ?", (video_id,)).fetchone()
                enqueue_video_event(conn, key_name=row["key_name"], video_id=video_id, event_type=f"video.{status}", now=now)
            return finished

    # -- the job watcher (relay.watcher) ---------------------------------------------------------

    def claim_jobs_to_watch(
        self, owner: str, *, per_account: Mapping[str, int], limit: int, now: float, lease_seconds: float, holders_now: float
    ) -> list[Video]:
        """Unfinished jobs due a poll, oldest due first: at most `per_account[name]` of each
        account (the polls it has to spare), `limit` in all, and none of an account not named.
        They are leased to `owner` (this process's holder id, relay.holders), so one worker of
        one replica polls each at a time.

        Each account's jobs are read through idx_videos_unfinished, so the work is the
        jobs claimed, however many wait on accounts with no poll to spare. A lease is anyone's
        again once it runs out, or as soon as its owner's holder lease has lapsed (compared at the
        holders' wall-clock `holders_now`): a process killed mid-poll hands its jobs over within
        RELAY_HOLDER_LEASE_SECONDS, not after the poll's long lease.
        """
        wanted = [(name, n) for name, n in sorted(per_account.items()) if n > 0]
        if not wanted or limit <= 0:
            return []
        # Padded to a power of two, the statement has a few shapes, not one per number of accounts
        # (each shape is a prepared statement on PostgreSQL); a padding part matches no job.
        wanted += [("", 0)] * ((1 << (len(wanted) - 1).bit_length()) - len(wanted))
        statement = _due_of_accounts(len(wanted))
        parameters: list[Any] = []
        for name, n in wanted:
            parameters += (name, now, now, holders_now, n)
        parameters.append(limit)
        return self._claim(statement, parameters, owner, lease_until=now + lease_seconds)

    def claim_orphaned_jobs(
        self, owner: str, *, accounts: Sequence[str], limit: int, now: float, lease_seconds: float, holders_now: float
    ) -> list[Video]:
        """Watched jobs whose account is none of `accounts` (it was removed), due or not (nothing
        else will claim them), leased as in claim_jobs_to_watch, for the watcher to give up. It
        reads every watched job, so the watcher asks when the configuration changes and now and then."""
        others = f" AND account NOT IN ({', '.join('?' * len(accounts))})" if accounts else ""
        statement = f"SELECT * FROM videos WHERE watch_next_at IS NOT NULL AND {_CLAIMABLE}{others} ORDER BY watch_next_at LIMIT ?"
        return self._claim(statement, [now, holders_now, *accounts, limit], owner, lease_until=now + lease_seconds)

    def _claim(self, statement: str, parameters: Sequence[Any], owner: str, *, lease_until: float) -> list[Video]:
        with self.reading() as conn:
            # Most rounds find nothing due: a read spares every worker a write lock each second.
            if conn.execute(statement, parameters).fetchone() is None:
                return []
        # Leases and next-poll times commit without waiting for PostgreSQL's WAL flush: a round
        # writes up to one per claimed job, and each flush held every replica's writers' turn
        # (creates waited behind them). Losing them in a database crash only has jobs polled again.
        with self.transaction(durable=False) as conn:
            rows = conn.execute(statement, parameters).fetchall()
            if rows:
                leases = [(owner, lease_until, row["id"]) for row in rows]
                conn.executemany("UPDATE videos SET watch_owner = ?, watch_until = ? WHERE id = ?", leases)
            return [_video(row) for row in rows]

    def watch_later(self, video_id: str, owner: str, *, next_poll_at: float, polled: bool, reason: str | None = None) -> None:
        """Give a claimed job back until `next_poll_at`; `reason` says why it waits (shown while it does)."""
        with self.transaction(durable=False) as conn:  # see claim_jobs_to_watch
            conn.execute(
                "UPDATE videos SET watch_next_at = CASE WHEN watch_next_at IS NULL THEN NULL ELSE ? END, watch_owner = NULL,"
                " watch_until = NULL, watch_stopped = ?, watch_polls = COALESCE(watch_polls, 0) + ?"
                " WHERE id = ? AND watch_owner = ?",
                (next_poll_at, reason, 1 if polled else 0, video_id, owner),
            )

    def stop_watching(self, video_id: str, owner: str, *, reason: str) -> None:
        """The watcher gives a job up for good: its reservation is released, so the budget it
        blocked is free again (nobody can follow the job to know what it cost); should it
        complete after all and a client see it, it is charged then."""
        with self.transaction() as conn:
            before = charge_of(conn, video_id)
            conn.execute(
                "UPDATE videos SET watch_next_at = NULL, watch_owner = NULL, watch_until = NULL, watch_stopped = ?,"
                " charge_state = CASE WHEN charge_state = 'reserved' THEN 'released' ELSE charge_state END"
                " WHERE id = ? AND watch_owner = ?",
                (reason, video_id, owner),
            )
            note_charge_change(conn, before, video_id)

    def jobs_in_flight(self) -> dict[str, int]:
        """Unfinished, undeleted jobs by status, with `unwatched` for those the watcher gave up."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT CASE WHEN watch_next_at IS NULL THEN 'unwatched' ELSE status END AS status, count(*) AS n FROM videos"
                " WHERE deleted_at IS NULL AND status NOT IN ('completed', 'failed') GROUP BY 1"
            ).fetchall()
            return {row["status"]: int(row["n"]) for row in rows}

    def mark_video_deleted(self, video_id: str, now: float) -> None:
        # The charge stays as it is: the relay cannot know whether the upstream rendered (and
        # billed) the job before it was deleted, and under-billing is the worse mistake.
        with self.transaction() as conn:
            conn.execute("UPDATE videos SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now, video_id))
            bump_deletions(conn)

    def list_videos(self, key_name: str, *, after: Video | None, limit: int, order: str) -> tuple[list[Video], bool]:
        """A page of the key's live videos by creation time (id breaks ties), and whether more follow."""
        descending = order == "desc"
        if after is None:
            statement = _FIRST_PAGE_DESC if descending else _FIRST_PAGE_ASC
            params: tuple[Any, ...] = (key_name, limit + 1)
        else:
            statement = _NEXT_PAGE_DESC if descending else _NEXT_PAGE_ASC
            params = (key_name, after.created_at, after.id, limit + 1)
        with self.reading() as conn:
            rows = conn.execute(statement, params).fetchall()
            return [_video(row) for row in rows[:limit]], len(rows) > limit

    def live_video_count(self, account: str, now: float) -> int:
        with self.reading() as conn:
            return live_video_count(conn, account, now)

    def insert_character(self, character_id: str, *, account: str, key_name: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO characters (id, account, key_name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (character_id, account, key_name, now),
            )

    def character_count(self, account: str) -> int:
        with self.reading() as conn:
            return character_count(conn, account)

    def character_owner(self, character_id: str) -> tuple[str, str] | None:
        """(account, key name) of a character, if the relay created it."""
        with self.reading() as conn:
            row = conn.execute("SELECT account, key_name FROM characters WHERE id = ?", (character_id,)).fetchone()
            return None if row is None else (row["account"], row["key_name"])


def _video(row: Any) -> Video:
    return Video(
        id=row["id"],
        account=row["account"],
        key_name=row["key_name"],
        kind=row["kind"],
        source_video_id=row["source_video_id"],
        model=row["model"],
        seconds=row["seconds"],
        billable_seconds=row["billable_seconds"],
        size=row["size"],
        status=row["status"],
        progress=row["progress"],
        created_at=row["created_at"],
        recorded_at=row["recorded_at"],
        finished_at=row["finished_at"],
        deleted_at=row["deleted_at"],
        resource=row["resource"],
        expires_at=row["expires_at"],
        usd=row["usd"],
        charge_state=row["charge_state"],
        charged_at=row["charged_at"],
        watch_next_at=row["watch_next_at"],
        watch_stopped=row["watch_stopped"],
    )


def live_video_count(conn: Connection, account: str, now: float) -> int:
    """Videos of an account that can still be reached: not deleted, not finished-and-expired."""
    row = conn.execute(
        "SELECT count(*) AS n FROM videos WHERE account = ? AND deleted_at IS NULL"
        " AND (status NOT IN ('completed', 'failed') OR expires_at IS NULL OR expires_at > ?)",
        (account, now),
    ).fetchone()
    return int(row["n"])


def character_count(conn: Connection, account: str) -> int:
    """Characters an account created (they do not expire)."""
    row = conn.execute("SELECT count(*) AS n FROM characters WHERE account = ?", (account,)).fetchone()
    return int(row["n"])
