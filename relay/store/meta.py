"""The meta table: settings the relay keeps in the database, and the config version relays poll."""

from __future__ import annotations

from .backend import Aggregate, Connection


class Meta(Aggregate):
    def get_meta(self, key: str) -> str | None:
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else row["value"]

    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value is there already; return the stored one."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()["value"])

    def config_version(self) -> int:
        return int(self.get_meta("config_version") or 0)

    def versions(self) -> tuple[int, int]:
        """(the config version, the video deletion counter), in one read: what relays poll."""
        with self.reading() as conn:
            rows = conn.execute("SELECT key, value FROM meta WHERE key IN ('config_version', 'videos_deleted')").fetchall()
        values = {row["key"]: int(row["value"]) for row in rows}
        return values.get("config_version", 0), values.get("videos_deleted", 0)


def bump_deletions(conn: Connection) -> None:
    """Every video deletion moves this counter: running relays poll it to forget the videos they
    remember (relay.video_cache). Call inside the deletion's transaction."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('videos_deleted', '1')"
        " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS text)"
    )


def bump_config_version(conn: Connection) -> None:
    """Every change to keys, accounts or prices bumps it: running relays poll it to refresh their
    in-memory snapshots within a fraction of a second. Call inside the change's transaction."""
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'")
