"""relay.store_threads: store calls in threads, awaited from the event loop."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from event_loops import LOOPS

from relay.state import STORE_THREADS
from relay.store_threads import StoreThreads


@pytest.fixture
def threads() -> Iterator[StoreThreads]:
    pool = StoreThreads(4, "test-store")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """What escapes a thread: a store thread must not die of anything."""
    caught: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", caught.append)
    return caught


def test_a_call_returns_its_result_from_a_named_thread(run: Any, threads: StoreThreads) -> None:
    def describe(a: int, b: int = 0, *, function: str = "") -> tuple[int, str, str]:
        return a + b, function, threading.current_thread().name

    async def main() -> list[tuple[int, str, str]]:
        return [await threads.run(describe, 1, b=2, function="kw"), await threads.run(describe, 5)]

    assert run(main()) == [(3, "kw", "test-store_0"), (5, "", "test-store_0")]
    # One call after another: the first thread serves them all.
    assert threads.threads == 1


def test_an_exception_is_raised_in_the_caller_with_its_traceback(run: Any, threads: StoreThreads) -> None:
    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused("no")

    async def main() -> BaseException:
        with pytest.raises(Refused, match="no") as raised:
            await threads.run(refuse)
        return raised.value

    error = run(main())
    assert "refuse" in [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    # A StopIteration would leave the caller waiting forever: it arrives as a RuntimeError.
    with pytest.raises(RuntimeError) as raised:
        run(asyncio.wait_for(threads.run(next, iter([])), 10))
    assert isinstance(raised.value.__cause__, StopIteration)


def test_a_cancelled_caller_waits_for_its_call_to_end(run: Any, threads: StoreThreads) -> None:
    release = threading.Event()
    written: list[str] = []

    def write() -> str:
        release.wait(10)
        written.append("row")
        return "row"

    async def main() -> None:
        caller = asyncio.ensure_future(threads.run(write))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.sleep(0.05)
        assert not caller.done()  # the call still runs: the caller still waits
        caller.cancel()  # a second cancellation changes nothing
        await asyncio.sleep(0.05)
        assert not caller.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert written == ["row"]  # ended before the cancellation went on

    run(main())


def test_a_cancelled_caller_whose_call_failed_is_cancelled(run: Any, threads: StoreThreads) -> None:
    release = threading.Event()

    def fail() -> None:
        release.wait(10)
        raise ValueError("late")

    async def main() -> None:
        caller = asyncio.ensure_future(threads.run(fail))
        await asyncio.sleep(0.05)
        caller.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller

    run(main())


def test_cancellations_racing_the_ends_of_calls_lose_no_outcome(run: Any, threads: StoreThreads) -> None:
    """Cancelled at any moment, before, during or just after its call ended, a caller gets the
    result or CancelledError, never before its call ended; nothing reaches the exception handler."""
    ended: set[int] = set()

    def note(number: int) -> int:
        ended.add(number)
        return number

    async def one(number: int, steps: int) -> str:
        caller = asyncio.ensure_future(threads.run(note, number))
        for _ in range(steps):  # one at least: a caller cancelled before it started makes no call
            await asyncio.sleep(0)
        caller.cancel()
        try:
            assert await caller == number
            outcome = "result"
        except asyncio.CancelledError:
            outcome = "cancelled"
        assert number in ended
        return outcome

    async def main() -> set[str]:
        chance = random.Random(7)
        return set(await asyncio.gather(*(one(number, chance.randrange(1, 8)) for number in range(400))))

    assert run(main()) == {"result", "cancelled"}


def test_threads_grow_with_concurrent_calls_up_to_the_cap(run: Any) -> None:
    pool = StoreThreads(STORE_THREADS, "test-cap")
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0

    def block(number: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1
        return number

    async def main() -> list[int]:
        calls = asyncio.gather(*(pool.run(block, number) for number in range(STORE_THREADS + 5)))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if most == STORE_THREADS:
                break
        await asyncio.sleep(0.05)  # the five left over wait in the queue: no thread takes them yet
        assert (most, pool.threads) == (STORE_THREADS, STORE_THREADS)
        release.set()
        return await calls

    try:
        assert run(main()) == list(range(STORE_THREADS + 5))
        names = {thread.name for thread in threading.enumerate() if thread.name.startswith("test-cap_")}
        assert names == {f"test-cap_{number}" for number in range(STORE_THREADS)}
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_shutdown_lets_queued_calls_finish_and_joins_the_threads(run: Any) -> None:
    pool = StoreThreads(1, "test-shutdown")
    release = threading.Event()
    done: list[int] = []

    def step(number: int) -> None:
        release.wait(10)
        done.append(number)

    async def main() -> None:
        callers = [asyncio.ensure_future(pool.run(step, number)) for number in range(3)]
        await asyncio.sleep(0.05)
        # The lifespan shuts down from the loop's thread, blocking it: the calls end all the same.
        threading.Timer(0.05, release.set).start()
        pool.shutdown(wait=True)
        assert done == [0, 1, 2]
        assert not [thread for thread in threading.enumerate() if thread.name.startswith("test-shutdown_")]
        await asyncio.gather(*callers)  # and their outcomes still reach the callers
        late = asyncio.ensure_future(pool.run(step, 3))
        await asyncio.wait([late], timeout=10)  # not awaited: a call taken after shutdown would never end
        with pytest.raises(RuntimeError, match="shut down"):
            late.result()

    run(main())


def test_a_call_from_a_loop_that_closed_meanwhile_leaves_its_thread_working(
    threads: StoreThreads, thread_errors: list[threading.ExceptHookArgs]
) -> None:
    for new_loop in LOOPS.values():
        release = threading.Event()
        ended = threading.Event()

        def slow(release: threading.Event = release, ended: threading.Event = ended) -> None:
            release.wait(10)
            ended.set()

        async def start(slow: Callable[[], None] = slow) -> Coroutine[Any, Any, None]:
            caller = threads.run(slow)
            caller.send(None)  # hands the call over, and stops where it awaits the outcome
            return caller

        loop = new_loop()
        caller = loop.run_until_complete(start())
        loop.close()
        release.set()
        assert ended.wait(10)
        caller.close()  # dropped with its loop
        assert answer(threads.run(threading.current_thread)).name == "test-store_0"
    assert threads.threads == 1
    assert thread_errors == []


def answer(call: Coroutine[Any, Any, Any]) -> Any:
    """The call's outcome, or a failure if it takes over 10 s. Its own loop, closed with the caller
    still pending then: a caller cancelled (by a timeout, by asyncio.run) waits for its call to end."""
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(call)
        loop.run_until_complete(asyncio.wait([task], timeout=10))
        assert task.done(), "the call did not end"
        return task.result()
    finally:
        loop.close()


EXITING = """
import asyncio, gc, threading
from relay.store_threads import StoreThreads

kept = StoreThreads(2, "kept")
asyncio.run(kept.run(print, "kept answers"))

async def drop() -> threading.Thread:
    return await StoreThreads(2, "dropped").run(threading.current_thread)

thread = asyncio.run(drop())
gc.collect()
thread.join(10)
print("dropped ended" if not thread.is_alive() else "dropped still runs")
"""


def test_idle_threads_let_the_process_exit_with_or_without_shutdown() -> None:
    """A pool dropped without shutdown ends its threads; one still held at exit lets the
    interpreter's join of non-daemon threads return. Either way the process exits."""
    done = subprocess.run([sys.executable, "-c", EXITING], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert (done.returncode, done.stdout.split("\n")) == (0, ["kept answers", "dropped ended", ""]), done.stderr
