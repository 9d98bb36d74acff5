"""Threads for blocking store calls, with the cheapest hand-off to and from the event loop.

`loop.run_in_executor` plus `asyncio.shield` goes through a concurrent.futures.Future (its lock,
condition and callbacks), an asyncio future chained to it and the shield's outer future: measured,
about a quarter of a store call's CPU at the event loop's side. Here a call is a plain object on a
queue; the thread that ran it sets the awaiting asyncio future from the loop's own thread
(call_soon_threadsafe), so no future ever crosses threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("loop", "future", "function", "args", "kwargs", "value", "error", "finished", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop, function: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.value: T | None = None
        self.error: BaseException | None = None
        # Both only read and written in the loop's thread.
        self.finished = False
        self.woken: asyncio.Future[None] | None = None


class _Idle:
    """How many threads wait for a call (or are about to): a call finds one, or a new thread starts."""

    __slots__ = ("lock", "count")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0


class StoreThreads:
    """Up to `max_threads` threads, started as calls find none idle; `run` awaits a call in one."""

    def __init__(self, max_threads: int, name: str = "relay-store") -> None:
        self.max_threads = max_threads
        self.name = name
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        self._idle = _Idle()
        self._threads: list[threading.Thread] = []
        self._closed = False
        # The threads hold the queue, not this object: one dropped without shutdown lets them end.
        weakref.finalize(self, self._calls.put, None)
        _open.add(self)

    @property
    def threads(self) -> int:
        return len(self._threads)

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` in a thread; its exception, if any, is raised here.

        The call always runs to its end: a caller cancelled meanwhile (once or more) waits for it,
        then the cancellation goes on, so a write is never left half-known.
        """
        call = _Call(asyncio.get_running_loop(), function, args, kwargs)
        future = call.future
        self._submit(call)
        try:
            return await future
        except asyncio.CancelledError:
            await _finished(call)
            raise

    def _submit(self, call: _Call[Any]) -> None:
        idle = self._idle
        with idle.lock:
            if self._closed:
                raise RuntimeError("the store threads are shut down")
            self._calls.put(call)
            if idle.count:
                idle.count -= 1
                return
            if len(self._threads) >= self.max_threads:
                return
            thread = threading.Thread(target=_work, args=(self._calls, idle), name=f"{self.name}_{len(self._threads)}")
            self._threads.append(thread)
        thread.start()

    def shutdown(self, wait: bool = True) -> None:
        """Take no more calls; the queued ones still run. With `wait`, return once all have."""
        with self._idle.lock:
            self._closed = True
            # Behind every call accepted: each thread passes it on to the next and ends.
            self._calls.put(None)
            threads = list(self._threads)
        _open.discard(self)
        if wait:
            for thread in threads:
                thread.join()


async def _finished(call: _Call[Any]) -> None:
    while not call.finished:
        call.woken = woken = call.loop.create_future()
        # A further cancellation changes nothing: the call still has to end first.
        with contextlib.suppress(asyncio.CancelledError):
            await woken


def _work(calls: queue.SimpleQueue[_Call[Any] | None], idle: _Idle) -> None:
    while True:
        call = calls.get()
        if call is None:
            calls.put(None)
            return
        _run(call)
        # Counted idle before the caller hears of the end, so its next call reuses this thread
        # instead of starting another (it waits in the queue for the moment it takes to get there).
        with idle.lock:
            idle.count += 1
        # RuntimeError: the caller's loop closed meanwhile, and no one is left to tell.
        with contextlib.suppress(RuntimeError):
            call.loop.call_soon_threadsafe(_deliver, call)
        del call


def _run(call: _Call[Any]) -> None:
    try:
        call.value = call.function(*call.args, **call.kwargs)
    except BaseException as error:
        if isinstance(error, StopIteration):
            # A future refuses StopIteration (it would leave the caller waiting forever).
            wrapped = RuntimeError("a store call raised StopIteration")
            wrapped.__cause__ = error
            error = wrapped
        call.error = error
        # The traceback holds this frame: let it not hold the call as well (a cycle through the error).
        del call


def _deliver(call: _Call[Any]) -> None:
    """In the caller's loop: hand over the outcome, unless the caller stopped waiting for it."""
    call.finished = True
    woken = call.woken
    if woken is not None and not woken.done():
        woken.set_result(None)
    future = call.future
    if future.done():
        return
    if call.error is None:
        future.set_result(call.value)
    else:
        future.set_exception(call.error)


# At exit, like concurrent.futures: the interpreter joins non-daemon threads, so the idle ones are
# told to end first (after the calls queued before). Runs before that join, unlike atexit.
_open: weakref.WeakSet[StoreThreads] = weakref.WeakSet()


def _at_exit() -> None:
    for threads in list(_open):
        threads.shutdown(wait=False)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
