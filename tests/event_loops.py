"""The `run` fixture: a test's coroutine on each kind of event loop the relay may run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Runs a coroutine in a new loop of each kind; the test fails if the loop's exception handler
    heard of anything (say, an outcome set on a future that was cancelled already)."""
    heard: list[dict[str, Any]] = []

    def running(coroutine: Coroutine[Any, Any, Any]) -> Any:
        loop = LOOPS[request.param]()
        loop.set_exception_handler(lambda _, context: heard.append(context))
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.close()

    yield running
    assert heard == []
