"""Work a Slack listener hands off once it has acknowledged its request.

The app runs Bolt with `process_before_response=True`: Slack gets its answer
the moment a listener returns. A listener acks, passes its slow part (posting
the thread root, a Redis write, an ephemeral reply) to `AfterAck`, and returns.
(With `process_before_response=False`, Bolt's runner instead polls for the ack
every 10 ms, so each ack took 10 ms or more, and far more on a busy loop.)

Tasks are kept until they finish, so none is garbage-collected half-way, and a
failure is logged rather than lost; `idle()` lets tests wait for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("sora.handlers")


class AfterAck:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __call__(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._run(work))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("work after a Slack ack failed")

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no handed-off work is left."""
        await self._idle.wait()
