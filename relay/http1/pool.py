"""Idle connections per origin, the limit on open connections in total, and idle expiry."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from .connection import Connection

# (scheme, host, port)
Origin = tuple[str, str, int]


class Pool:
    """At most `limit` connections open at once (connecting, in use or idle); requests beyond it
    wait their turn, first come first served. An idle connection is reused only before
    `idle_seconds` have passed and while its server has not closed it."""

    def __init__(self, limit: int, idle_seconds: float) -> None:
        self._limit = limit
        self._idle_seconds = idle_seconds
        self._open = 0
        # Most recently used last: it is taken first, as the one least likely to have been closed.
        self._idle: dict[Origin, list[Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def acquire(self, origin: Origin, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        """An idle connection to `origin`, or a new one once the limit allows it."""
        first = True
        while True:
            if self._closed:
                raise RuntimeError("the client is closed")
            if first and self._waiters:
                # Others wait already: behind them.
                await self._wait(front=False)
            first = False
            connection = self._take_idle(origin)
            if connection is not None:
                return connection
            if self._open >= self._limit:
                self._close_one_idle()
            if self._open < self._limit:
                return await self._connect(connect)
            # Woken waiters go back to the front: their turn came and went to someone else's
            # origin, not to a newcomer.
            await self._wait(front=not first)

    def release(self, connection: Connection, origin: Origin) -> None:
        """Back to idle when the exchange ended cleanly and the connection may be reused; closed otherwise."""
        if not connection.reusable or self._closed:
            connection.abort()
            return
        connection.finish()
        connection.idle_until = asyncio.get_running_loop().time() + self._idle_seconds
        self._idle.setdefault(origin, []).append(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_at(connection.idle_until, self._expire)
        self._wake_one()

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connections in list(self._idle.values()):
            for connection in list(connections):
                connection.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- inside ----------------------------------------------------------------------------------------

    async def _connect(self, connect: Callable[[], Awaitable[Connection]]) -> Connection:
        self._open += 1
        try:
            connection = await connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        connection.on_closed = self._forget
        if connection.closed:
            # Closed before the pool could hear of it.
            self._forget(connection)
        return connection

    def _forget(self, connection: Connection) -> None:
        """A connection closed (by either side): its place is free."""
        self._open -= 1
        connection.on_closed = None
        for connections in self._idle.values():
            if connection in connections:
                connections.remove(connection)
                break
        self._wake_one()

    def _take_idle(self, origin: Origin) -> Connection | None:
        connections = self._idle.get(origin)
        if not connections:
            return None
        now = asyncio.get_running_loop().time()
        while connections:
            connection = connections.pop()
            if not connection.closed and connection.idle_until > now:
                return connection
            connection.close()
        return None

    def _close_one_idle(self) -> None:
        """At the limit, an idle connection to another origin makes way (the oldest one)."""
        oldest: Connection | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_until < oldest.idle_until):
                oldest = connections[0]
        if oldest is not None:
            oldest.close()

    def _expire(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        following = None
        for connections in list(self._idle.values()):
            for connection in list(connections):
                if connection.idle_until <= now:
                    connection.close()
                elif following is None or connection.idle_until < following:
                    following = connection.idle_until
        if following is not None:
            self._sweep = asyncio.get_running_loop().call_at(following, self._expire)

    async def _wait(self, *, front: bool) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Woken, then cancelled before it could take its turn: the turn passes on.
                self._wake_one()
            else:
                self._waiters.remove(waiter)
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
