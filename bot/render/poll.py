"""Drive one render to its end in this process: submit once, save the id, check with backoff.

Used where a render has a process to itself (the terminal's `sora-copilot render`). The
vendor's job id is handed to `on_submitted` before the first check, so whoever saves it can
resume the same job after a Ctrl-C or a crash (`job_id=`), and never submits a second one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.render.base import (
    Failed,
    Finished,
    Refused,
    Renderer,
    RenderPlan,
    Running,
    SubmitError,
    record,
)

# Waits between checks grow by this factor up to the cap; a vendor's own hint wins.
BACKOFF = 1.5
BACKOFF_CAP_S = 30.0


def next_delay(delay: float, first: float) -> float:
    return min(max(delay, first, 0.05) * BACKOFF, BACKOFF_CAP_S)


@dataclass(frozen=True)
class Progress:
    status: str
    progress: float | None
    elapsed_s: float
    job_id: str


@dataclass(frozen=True)
class RenderResult:
    outcome: Finished
    job_id: str | None
    attempts: int
    elapsed_s: float


async def submit_with_waits(
    renderer: Renderer,
    plan: RenderPlan,
    *,
    on_progress: Callable[[Progress], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | Failed:
    """The vendor's job id, waiting out rate limits and outages up to the vendor's longest
    wait; a Failed when the vendor will not take the job."""
    start = clock()
    delay = renderer.poll_s
    while True:
        try:
            return await renderer.submit(plan)
        except SubmitError as e:
            if not e.retryable:
                return Failed(e.reason, retryable=False)
            if clock() - start > renderer.max_wait_s:
                return Failed(f"{e.reason}; gave up after waiting", retryable=True)
            wait = e.wait_s if e.wait_s is not None else next_delay(delay, renderer.poll_s)
            delay = wait
            on_progress(Progress(f"waiting: {e.reason}", None, clock() - start, ""))
            await sleep(wait)


async def drive(
    renderer: Renderer,
    plan: RenderPlan,
    *,
    job_id: str | None = None,
    submitted_at: float | None = None,
    attempts: int = 1,
    on_submitted: Callable[[str, float, int], Awaitable[None]],
    on_progress: Callable[[Progress], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RenderResult:
    """Render `plan` to its end; resume `job_id` (submitted at `submitted_at`) when given.

    One automatic resubmit only for a refusal the vendor marks as flaky (Veo's audio
    filter); every other refusal ends the render at once.
    """
    start = clock()
    while True:
        if job_id is None:
            got = await submit_with_waits(
                renderer, plan, on_progress=on_progress, clock=clock, sleep=sleep
            )
            if isinstance(got, Failed):
                record(plan, got, elapsed_s=clock() - start)
                return RenderResult(got, None, attempts, clock() - start)
            job_id, submitted_at = got, clock()
            await on_submitted(job_id, submitted_at, attempts)
        began = submitted_at if submitted_at is not None else clock()
        delay = renderer.poll_s
        while True:
            outcome = await renderer.check(plan, job_id)
            elapsed = clock() - began
            if not isinstance(outcome, Running):
                break
            on_progress(Progress(outcome.status, outcome.progress, elapsed, job_id))
            if elapsed > renderer.max_wait_s:
                minutes = round(renderer.max_wait_s / 60)
                outcome = Failed(
                    f"{plan.vendor} did not finish within {minutes} min, its documented "
                    f"longest wait (job {job_id})",
                    retryable=True,
                )
                break
            wait = outcome.wait_s if outcome.wait_s is not None else delay
            delay = next_delay(delay, renderer.poll_s)
            await sleep(wait)
        if isinstance(outcome, Refused) and outcome.retry_once and attempts == 1:
            on_progress(Progress(f"retrying once: {outcome.reason}", None, elapsed, job_id))
            job_id, submitted_at, attempts = None, None, 2
            continue
        record(plan, outcome, elapsed_s=clock() - start)
        return RenderResult(outcome, job_id, attempts, clock() - start)
