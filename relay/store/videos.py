"""Videos and characters the relay created: which account and key own them (job affinity), and their charges."""

from __future__ import annotations

from typing import Any

from ..records import TERMINAL_STATUSES, Video
from .backend import Aggregate, Connection

# Pages of a key's live videos (list_videos), oldest or newest first; (created_at, id) is the cursor.
_FIRST_PAGE_ASC = "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL ORDER BY created_at ASC, id ASC LIMIT ?"
_FIRST_PAGE_DESC = "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?"
_NEXT_PAGE_ASC = (
    "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL AND (created_at, id) > (?, ?) ORDER BY created_at ASC, id ASC LIMIT ?"
)
_NEXT_PAGE_DESC = (
    "SELECT * FROM videos WHERE key_name = ? AND deleted_at IS NULL AND (created_at, id) < (?, ?) ORDER BY created_at DESC, id DESC LIMIT ?"
)


class Videos(Aggregate):
    def insert_video(self, video: Video, *, reservation_id: str | None = None) -> Video:
        """Record who owns a new job, its charge taking over from the create's reservation.

        A replayed id keeps its first owner: the record returned is the one that holds the id.
        """
        with self.transaction() as conn:
            if reservation_id is not None:
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            inserted = conn.execute(
                "INSERT INTO videos (id, account, key_name, kind, source_video_id, model, seconds, billable_seconds,"
                " size, status, progress, created_at, recorded_at, updated_at, resource, usd, charge_state, charged_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
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
                ),
            )
            if inserted.rowcount == 1:
                return video
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
    ) -> bool:
        """Store the latest status; True only for the one call that moved the job to a final status.

        The compare-and-set (`status` not already final) means a completion is counted once,
        however many workers or polls see it: its charge (the price when it was created, times
        its seconds) is settled, or for a failure released, exactly once.
        """
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE videos SET status = ?, progress = ?, resource = ?, updated_at = ?, expires_at = ?,"
                " finished_at = CASE WHEN ? IN ('completed', 'failed') THEN ? ELSE NULL END,"
                " charge_state = CASE WHEN charge_state != 'reserved' THEN charge_state"
                "   WHEN ? = 'completed' THEN 'settled' WHEN ? = 'failed' THEN 'released' ELSE charge_state END"
                " WHERE id = ? AND status NOT IN ('completed', 'failed')",
                (status, progress, resource, now, expires_at, status, now, status, status, video_id),
            )
            return cursor.rowcount == 1 and status in TERMINAL_STATUSES

    def mark_video_deleted(self, video_id: str, now: float) -> None:
        # The charge stays as it is: the relay cannot know whether the upstream rendered (and
        # billed) the job before it was deleted, and under-billing is the worse mistake.
        with self.transaction() as conn:
            conn.execute("UPDATE videos SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now, video_id))

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
