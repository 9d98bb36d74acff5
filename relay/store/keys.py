"""Relay API keys: their hashes, permissions and limits."""

from __future__ import annotations

import json
from typing import Any

from ..records import AlreadyExists, KeyRecord, NotFound
from .backend import Aggregate
from .meta import bump_config_version


class Keys(Aggregate):
    def insert_key(self, record: KeyRecord) -> None:
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE name = ?", (record.name,)).fetchone():
                raise AlreadyExists(f"a key named {record.name!r} exists already")
            conn.execute(
                "INSERT INTO keys (id, name, salt, hash, permissions, created_at, expires_at, revoked_at, note, limits)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.salt,
                    record.hash,
                    json.dumps(sorted(record.permissions)),
                    record.created_at,
                    record.expires_at,
                    record.revoked_at,
                    record.note,
                    record.limits_json,
                ),
            )
            bump_config_version(conn)

    def key_by_id(self, key_id: str) -> KeyRecord | None:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else _key(row)

    def key_by_name(self, name: str) -> KeyRecord:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no key named {name!r}")
            return _key(row)

    def list_keys(self) -> list[KeyRecord]:
        with self.reading() as conn:
            return [_key(row) for row in conn.execute("SELECT * FROM keys ORDER BY name")]

    def revoke_key(self, name: str, now: float) -> float | None:
        """Revoke key NAME (a second revocation keeps the first time); return when it was revoked before, if it was."""
        with self.transaction() as conn:
            row = conn.execute("SELECT revoked_at FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no key named {name!r}")
            conn.execute("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?", (now, name))
            bump_config_version(conn)
            return None if row["revoked_at"] is None else float(row["revoked_at"])

    def rotate_key_secret(self, name: str, *, salt: str, hash: str, grace_until: float | None, now: float) -> None:
        """New secret for a key; the old one stays valid until `grace_until` (None: not at all)."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE keys SET previous_salt = salt, previous_hash = hash, previous_valid_until = ?,"
                " salt = ?, hash = ?, rotated_at = ? WHERE name = ?",
                (grace_until, salt, hash, now, name),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            bump_config_version(conn)

    def set_key_permissions(self, name: str, permissions: frozenset[str]) -> None:
        with self.transaction() as conn:
            cursor = conn.execute("UPDATE keys SET permissions = ? WHERE name = ?", (json.dumps(sorted(permissions)), name))
            if cursor.rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            bump_config_version(conn)

    def set_key_limits(self, name: str, limits_json: str | None) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE keys SET limits = ? WHERE name = ?", (limits_json, name)).rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            bump_config_version(conn)


def _key(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        salt=row["salt"],
        hash=row["hash"],
        permissions=frozenset(json.loads(row["permissions"])),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        note=row["note"],
        previous_salt=row["previous_salt"],
        previous_hash=row["previous_hash"],
        previous_valid_until=row["previous_valid_until"],
        rotated_at=row["rotated_at"],
        limits_json=row["limits"],
    )
