"""Work a Slack listener hands off once it has acknowledged its request.

The app runs Bolt with `process_before_response=True`: Slack gets its answer
the moment a listener returns. A listener acks, passes its slow part (posting
the thread root, a Redis write, an ephemeral reply) to `AfterAck.submit`, and
returns. (With `process_before_response=False`, Bolt's runner instead polls for
the ack every 10 ms, so each ack took 10 ms or more, and far more on a busy loop.)

Tasks are kept until they finish, so none is garbage-collected half-way, and a
failure is logged rather than lost; `idle()` lets tests wait for them.

Work that must wait for a channel's post rate (a thread root: Slack allows
about one post a second per channel) goes in that channel's line instead
(`enqueue`): the works of one line run one at a time, in arrival order, each
once its `pace` (the channel's post token) returns. A line waits holding no
permit, so a busy channel delays its own roots and nothing else: before lines,
a root held its permit while it waited for its channel's token, and a burst in
one channel filled every permit and made each ack in the workspace wait.

At most `limit` pieces of work are in progress at once. When that many are,
`submit` waits, before the listener returns and so before Slack sees the ack,
until one finishes: at most `max_wait_s`, well inside Slack's 3 s, after which
the work is taken anyway and waits its turn. Without that bound a burst of
commands was acked faster than its roots could be posted: work piled up behind
the acks (each ack is a fraction of the work it hands off), every root in the
pile went out late, each extra task opened another Redis and Slack connection,
and the loop, sharing itself evenly among them all, finished each only when it
had nearly finished every one. Bounded, what is acked is done promptly, in
arrival order, and a process that is behind says so by acking later: a load
balancer sends its requests elsewhere, and Slack's own timeout, rather than a
silent backlog, is the limit a user can meet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("sora.handlers")

DEFAULT_LIMIT = 16
DEFAULT_MAX_WAIT_S = 1.0
OVERFLOW_LOG_EVERY_S = 10.0  # under sustained overload, one warning line per this many seconds

Pace = Callable[[], Awaitable[object]]


class AfterAck:
    def __init__(self, limit: int = DEFAULT_LIMIT, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self.limit = limit
        self.max_wait_s = max_wait_s
        # A permit per piece of work in progress; asyncio's Semaphore serves its
        # waiters first come, first served.
        self._permits = asyncio.Semaphore(limit)
        self._overflows = 0  # taken without room since the last warning
        self._warned_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # line (e.g. a channel id) -> its works not yet finished, the running one first
        self._lines: dict[str, deque[tuple[Pace, Coroutine[Any, Any, None]]]] = {}

    @property
    def in_progress(self) -> int:
        """Pieces of work handed off and not yet finished."""
        return len(self._tasks)

    async def submit(self, work: Coroutine[Any, Any, None]) -> None:
        """Take `work`, first waiting (at most `max_wait_s`) while `limit` are in progress."""
        try:
            if self._permits.locked():  # no room, or others already waiting for it
                await asyncio.wait_for(self._permits.acquire(), self.max_wait_s)
            else:
                await self._permits.acquire()  # returns at once
            permit = True
        except TimeoutError:
            self._overflowed()
            permit = False
        self._start(self._run(work, permit))

    def waiting_in(self, line: str) -> int:
        """Works in `line` not yet finished (the one running included)."""
        return len(self._lines.get(line, ()))

    def enqueue(self, line: str, pace: Pace, work: Coroutine[Any, Any, None]) -> int:
        """Queue `work` at the end of `line`, to run once the works before it are done and
        `pace()` has returned. Returns how many works are ahead of it. Never waits.
        """
        queue = self._lines.get(line)
        if queue is None:
            queue = self._lines[line] = deque()
            self._start(self._drain(line, queue))
        queue.append((pace, work))
        return len(queue) - 1

    async def _drain(self, line: str, queue: deque[tuple[Pace, Coroutine[Any, Any, None]]]) -> None:
        try:
            while queue:
                pace, work = queue[0]
                try:
                    await pace()  # holding no permit: other lines and submits go on
                except Exception:
                    log.exception("pacing line %s failed; its next work goes on unpaced", line)
                await self._permits.acquire()
                await self._run(work, permit=True)
                queue.popleft()
        finally:
            del self._lines[line]
            for _, work in queue:  # cancelled: close what never ran
                work.close()

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _overflowed(self) -> None:
        self._overflows += 1
        now = asyncio.get_running_loop().time()
        if self._warned_at is not None and now - self._warned_at < OVERFLOW_LOG_EVERY_S:
            return
        log.warning(
            "overloaded: %d handed off after Slack acks and still in progress (limit %d); "
            "%d taken anyway after waiting %.1f s for room. Add web processes if this persists.",
            len(self._tasks),
            self.limit,
            self._overflows,
            self.max_wait_s,
        )
        self._overflows, self._warned_at = 0, now

    async def _run(self, work: Coroutine[Any, Any, None], permit: bool) -> None:
        try:
            await work
        except Exception:
            log.exception("work after a Slack ack failed")
        finally:
            if permit:
                self._permits.release()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no handed-off work is left."""
        await self._idle.wait()
