"""Runway's API through `runwayml` (5.24.0): Gen-4.5 text to video.

Shapes read in the SDK's source (site-packages/runwayml):
- `client.text_to_video.create(model="gen4.5", prompt_text=…, ratio="1280:720"|"720:1280",
  duration=2..10)` POSTs `/v1/text_to_video` with `{"model", "promptText", "ratio",
  "duration"}` and returns `{"id", "estimatedCost": {"credits"}}`
  (`resources/text_to_video.py`, `types/text_to_video_create_params.py` `Gen4_5`,
  `types/text_to_video_create_response.py`).
- `client.tasks.retrieve(id)` GETs `/v1/tasks/{id}`: a task is `PENDING`, `THROTTLED`,
  `RUNNING` (`progress`), `SUCCEEDED` (`output`: URLs that "expire within 24-48 hours"),
  `FAILED` (`failure`, `failureCode`, `cost.credits`) or `CANCELLED`
  (`types/task_retrieve_response.py`).
- The SDK's own waiter (`lib/polling.py`) polls every 6 ± 1.5 s for at most 10 minutes, and
  its sync version never raises on CANCELLED; this module polls by itself instead, one
  check at a time, so a restarted worker can resume the same task.
- The base URL is the SDK's `base_url` (or `RUNWAYML_BASE_URL`), the secret its `api_key`
  (or `RUNWAYML_API_SECRET`): `_client.py`.

Failures (docs.dev.runwayml.com/errors/task-failures): `SAFETY.INPUT.*` and
`SAFETY.OUTPUT.*` are content moderation: "You should not retry these generations", and they
are billed; repeated ones can suspend the account. `INTERNAL.BAD_OUTPUT.*` may be retried.
HTTP errors (docs.dev.runwayml.com/errors/errors): 429, 502, 503 and 504 may be retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import runwayml

from bot.dialogue.models import Draft, TargetProfile
from bot.render.base import (
    Cancelled,
    Done,
    Failed,
    Outcome,
    Refused,
    RenderPlan,
    Running,
    SubmitError,
    Tier,
    http_status,
    one_line,
    plan_on,
    transient,
)

GEN45_DURATIONS = tuple(range(2, 11))
GEN45_RATIOS = ("1280:720", "720:1280")
_ASPECT = {"1280:720": "16:9", "720:1280": "9:16"}
MAX_WAIT_S = 10 * 60.0  # the SDK waiter's default timeout (lib/polling.py)


def _retry_after(e: BaseException) -> float | None:
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _message(e: BaseException) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return one_line(body["error"])
    return one_line(str(e))


class RunwayRenderer:
    name = "runway"
    vendor = "Runway"
    max_wait_s = MAX_WAIT_S
    poll_s = 6.0  # the SDK's own POLL_TIME

    def __init__(self, *, api_secret: str, base_url: str | None = None) -> None:
        self.client = runwayml.AsyncRunwayML(
            api_key=api_secret, base_url=base_url or None, max_retries=0
        )
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        await self.client.close()
        if self._http is not None:
            await self._http.close()

    def plan(self, draft: Draft, target: TargetProfile, tier: Tier) -> RenderPlan:
        plan = plan_on(
            self.name,
            self.vendor,
            draft,
            target,
            tier,
            label="Runway",
            sizes=GEN45_RATIOS,
            durations=GEN45_DURATIONS,
            aspects=_ASPECT,
            audio=False,
            negative=False,
        )
        if target.negative_prompt and draft.parts.avoid:
            note = "Runway has no negative prompt; the things to avoid are left out"
            plan = plan.model_copy(update={"notes": [*plan.notes, note]})
        return plan

    async def submit(self, plan: RenderPlan) -> str:
        try:
            task = await self.client.text_to_video.create(
                model="gen4.5",
                prompt_text=plan.prompt,
                ratio="1280:720" if plan.size == "1280:720" else "720:1280",
                duration=plan.seconds,
            )
        except Exception as e:
            if transient(e):
                what = "rate limited" if http_status(e) == 429 else "unreachable or overloaded"
                raise SubmitError(
                    f"Runway is {what}: {_message(e)}", retryable=True, wait_s=_retry_after(e)
                ) from e
            raise SubmitError(f"Runway refused the request: {_message(e)}", retryable=False) from e
        return task.id

    async def check(self, plan: RenderPlan, job_id: str) -> Outcome:
        try:
            task: Any = await self.client.tasks.retrieve(job_id)
        except Exception as e:
            if transient(e):
                status = "rate limited" if http_status(e) == 429 else "vendor unreachable"
                return Running(status, wait_s=_retry_after(e))
            return Failed(f"Checking the Runway task failed: {_message(e)}", retryable=False)
        status = task.status
        if status == "PENDING":
            return Running("queued")
        if status == "THROTTLED":
            # The account's concurrency is full: Runway starts it when a slot frees.
            return Running("throttled: waiting for a free Runway slot")
        if status == "RUNNING":
            return Running("rendering", progress=float(task.progress))
        if status == "SUCCEEDED":
            if not task.output:
                return Failed("Runway succeeded without an output", retryable=True)
            try:
                data = await self._download(task.output[0])
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                return Running(f"downloading ({one_line(str(e), 80)})")
            return Done(video=data, seconds=float(plan.seconds), resolution=plan.resolution)
        if status == "CANCELLED":
            return Cancelled("The Runway task was cancelled")
        code = task.failure_code or ""
        reason = one_line(f"{task.failure} ({code})" if code else task.failure)
        if code.startswith("SAFETY."):
            return Refused(reason=reason, charged=task.cost.credits > 0)
        return Failed(f"Runway failed: {reason}", retryable=code.startswith("INTERNAL."))

    async def _download(self, url: str) -> bytes:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        async with self._http.get(url) as response:
            response.raise_for_status()
            return await response.read()
