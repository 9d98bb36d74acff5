"""Writes outcome rows and last-used times off the request path.

Handlers put records on a queue (never blocking the event loop on disk); one thread
drains it in batches, one transaction a batch. `close()` flushes what is pending.

The thread looks at the queue every _BATCH_INTERVAL_SECONDS rather than waking at each put: a
wake-up per request cost the event loop the GIL and a write transaction per request, where one
a batch interval does the same work.

When the database is unavailable (StoreUnavailable: locked, failing, gone) the batch is held and
tried again, with what arrived meanwhile, until the database is back: an outage loses no rows
unless it lasts long enough to hold more than _MAX_HELD_RECORDS, or the relay stops during it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from .records import AccountQuota, Outcome, StoreUnavailable
from .store import Store

log = logging.getLogger("relay.recorder")

_BATCH_LIMIT = 500
# How long a record waits, at most, before the recorder writes it (unless flushed sooner).
_BATCH_INTERVAL_SECONDS = 0.05
# Retries of a batch the database refused: 0.2 s after the first failure, doubling up to 5 s.
_FIRST_RETRY_SECONDS = 0.2
_LONGEST_RETRY_SECONDS = 5.0
# Records held through an outage at most (about 1 kB each); past that, the oldest are dropped.
_MAX_HELD_RECORDS = 100_000
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
        # Set by flush and close, which must not wait out the batch interval.
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: Record) -> None:
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything put so far is written (tests and shutdown)."""
        marker = threading.Event()
        self._queue.put(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._wake.set()
            self._thread.join(timeout)

    def _run(self) -> None:
        # Only sets a flag if the database is down now: connections made later get the pragma.
        with suppress(StoreUnavailable):
            self._store.checkpoint_manually()
        checkpointed = time.monotonic()
        held: list[object] = []  # a batch the database refused, written before anything newer
        retry_in = _FIRST_RETRY_SECONDS
        while True:
            batch = held + self._next_batch(wait=retry_in if held else None)
            stopping = any(item is _STOP for item in batch)
            written = self._write(batch, retrying=bool(held))
            if not written and not stopping:
                held = self._bounded([item for item in batch if item is not _STOP])
                retry_in = min(retry_in * 2, _LONGEST_RETRY_SECONDS)
                continue
            if not written:
                log.error("the relay stopped while the database was unavailable: %d record(s) not written", _count(batch))
            held, retry_in = [], _FIRST_RETRY_SECONDS
            if time.monotonic() - checkpointed >= _CHECKPOINT_INTERVAL_SECONDS:
                self._checkpoint()
                checkpointed = time.monotonic()
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if stopping:
                return

    def _next_batch(self, wait: float | None) -> list[object]:
        """Up to _BATCH_LIMIT queued items, after `wait` seconds (a refused batch's retry) or the
        batch interval; at once when a full batch is already waiting, or when flushed."""
        if wait is not None or self._queue.qsize() < _BATCH_LIMIT:
            self._wake.wait(_BATCH_INTERVAL_SECONDS if wait is None else wait)
            self._wake.clear()
        batch: list[object] = []
        while len(batch) < _BATCH_LIMIT:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    @staticmethod
    def _bounded(held: list[object]) -> list[object]:
        excess = _count(held) - _MAX_HELD_RECORDS
        if excess <= 0:
            return held
        log.error("the database has been unavailable too long: dropped the %d oldest record(s)", excess)
        records = [item for item in held if not isinstance(item, threading.Event)]
        return [item for item in held if isinstance(item, threading.Event)] + records[excess:]

    def _checkpoint(self) -> None:
        try:
            self._store.checkpoint()
        except StoreUnavailable as error:
            log.warning("could not checkpoint the database's write-ahead log (%s); will try again", error.reason)
        except Exception:
            log.exception("could not checkpoint the database's write-ahead log; will try again")

    def _write(self, batch: list[object], *, retrying: bool) -> bool:
        """Write the batch in one transaction; False if the database was unavailable (try again later)."""
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
            return True
        try:
            self._store.write_batch(outcomes, keys, accounts, sessions, list(quotas.values()))
        except StoreUnavailable as error:
            if not retrying:  # one line per outage, not one per retry
                log.warning("could not write %d record(s) (%s); holding them to try again", _count(batch), error.reason)
            return False
        except Exception:
            # Not the database being away but a bug: trying again would fail the same way.
            log.exception("could not write %d outcome rows; they are lost", len(outcomes))
            return True
        if retrying:
            log.warning("the database is back: wrote the %d record(s) held meanwhile", _count(batch))
        return True


def _count(batch: list[object]) -> int:
    return sum(1 for item in batch if not isinstance(item, threading.Event) and item is not _STOP)
