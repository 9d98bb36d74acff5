"""Writes outcome rows and last-used times off the request path.

Handlers put records on a queue (never blocking the event loop on disk); one thread
drains it in batches, one transaction a batch. `close()` flushes what is pending.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from .records import AccountQuota, Outcome
from .store import Store

log = logging.getLogger("relay.recorder")

_BATCH_LIMIT = 500
# Each attempt already waits out the store's busy timeout; a few more cover a long checkpoint.
_WRITE_ATTEMPTS = 3
# How often the recorder copies the WAL into the database (see Store.checkpoint_manually).
_CHECKPOINT_INTERVAL_SECONDS = 1.0
_STOP = object()


@dataclass(frozen=True)
class KeyUse:
    key_id: str
    ts: float


@dataclass(frozen=True)
class AccountUse:
    account: str
    ts: float


@dataclass(frozen=True)
class SessionUse:
    session_hash: str
    ts: float
    expires_at: float


@dataclass(frozen=True)
class QuotaSeen:
    quota: AccountQuota


Record = Outcome | KeyUse | AccountUse | SessionUse | QuotaSeen


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: Record) -> None:
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything put so far is written (tests and shutdown)."""
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        self._store.checkpoint_manually()
        checkpointed = time.monotonic()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < _BATCH_LIMIT:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in batch)
            self._write(batch)
            if time.monotonic() - checkpointed >= _CHECKPOINT_INTERVAL_SECONDS:
                self._checkpoint()
                checkpointed = time.monotonic()
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    def _checkpoint(self) -> None:
        try:
            self._store.checkpoint()
        except Exception:
            log.exception("could not checkpoint the database's write-ahead log; will try again")

    def _write(self, batch: list[object]) -> None:
        outcomes = [item for item in batch if isinstance(item, Outcome)]
        keys: dict[str, float] = {}
        accounts: dict[str, float] = {}
        sessions: dict[str, tuple[float, float]] = {}
        quotas: dict[str, AccountQuota] = {}
        for item in batch:
            if isinstance(item, KeyUse):
                keys[item.key_id] = max(item.ts, keys.get(item.key_id, 0.0))
            elif isinstance(item, AccountUse):
                accounts[item.account] = max(item.ts, accounts.get(item.account, 0.0))
            elif isinstance(item, SessionUse):
                used, expires = sessions.get(item.session_hash, (0.0, 0.0))
                sessions[item.session_hash] = (max(used, item.ts), max(expires, item.expires_at))
            elif isinstance(item, QuotaSeen):
                known = quotas.get(item.quota.account)
                if known is None or known.observed_at <= item.quota.observed_at:
                    quotas[item.quota.account] = item.quota
        if not (outcomes or keys or accounts or sessions or quotas):
            return
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                self._store.write_batch(outcomes, keys, accounts, sessions, list(quotas.values()))
                return
            except Exception:
                if attempt == _WRITE_ATTEMPTS - 1:
                    log.exception("could not write %d outcome rows; they are lost", len(outcomes))
                else:
                    time.sleep(0.2 * (attempt + 1))
