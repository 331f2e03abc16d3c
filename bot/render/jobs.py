"""Renders as jobs on the workers' queue: crash-safe, within a budget, never submitted twice.

A render is a record in Redis (state.renders) driven by short jobs on the same stream as
turns, each under a lease and fenced by the record's rev, like a turn:

* `request`: plan the locked draft, reserve its seconds of both daily budgets, create the
  record and its first job, all in one step (over budget: nothing at all).
* a job for a `queued` render submits it and saves the vendor's job id at once, before
  anything is shown; for a `running` one it asks the vendor once. Then it saves the next
  check's time (`render:due`) and acks: waiting holds no worker slot, and a worker moves
  due renders back onto the stream (`promote`). Checks back off up to 30 s and give up at
  the vendor's documented longest wait.
* a worker that dies leaves its job pending; whoever takes it over finds the saved vendor
  id and checks that job: a render whose id was saved is never submitted again.
* decide, save, then show: what a surface must show (the progress message, the clip) is
  saved as steps in the record before it is shown, and each step is removed by a fenced
  save once done; the job is acked only when nothing is left to show.
* a clip's bytes never sit in Redis (it is noeviction: video would crowd out sessions).
  The finished clip is written to a file on this worker's disk and delivered in the same
  job, at once; the file goes once the delivery is saved. A worker that dies between the
  download and the delivery leaves the `deliver` step: whoever takes it over finds no file
  (another machine, a new container) and downloads the clip from the vendor again, which
  keeps it 24 to 48 hours (Runway) or about 2 days (Gemini files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from bot.config import Settings
from bot.dialogue.models import Session, SessionStatus, TargetProfile
from bot.dialogue.profiles import ProfileError, resolve_target
from bot.render.base import (
    Cancelled,
    Done,
    Failed,
    Outcome,
    Refused,
    Renderer,
    RenderError,
    RenderPlan,
    Running,
    SubmitError,
    Tier,
    record,
)
from bot.render.poll import next_delay
from state import Job, State
from state.library import RenderProvenance

log = logging.getLogger("sora.render")

Status = Literal["queued", "running", "done", "refused", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "refused", "failed", "cancelled"})
Step = Literal["progress", "deliver"]
# A running render's progress message is refreshed at most this often.
PROGRESS_EVERY_S = 30.0


class RenderRecord(BaseModel):
    """One render, as saved: what, for whom, where its vendor job is, and what is left to show."""

    schema_version: int = 1
    id: str
    session_id: str
    plan: RenderPlan
    team_id: str = ""
    user_id: str = ""
    user_name: str = ""
    channel_id: str = ""
    thread_ts: str = ""
    status: Status = "queued"
    vendor_job_id: str | None = None
    submitted_at: float | None = None
    attempt: int = 1
    checks: int = 0
    delay_s: float = 0.0
    vendor_status: str = "queued"
    progress: float | None = None
    progress_shown_at: float = 0.0
    reason: str = ""
    charged: bool = False
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    steps: list[Step] = Field(default_factory=list)
    # What a surface keeps about what it showed (the progress message, the uploaded file).
    shown: dict[str, str] = Field(default_factory=dict)
    # A draft render's master (the target profile's full-quality tier), offered once the
    # draft is done: its model, resolution and estimated cost; None when it is no better.
    master: RenderPlan | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at or time.time()
        return max(0.0, end - (self.submitted_at or self.created_at))


class RenderShow(Protocol):
    """Where a render is shown (the Slack thread; a recording for tests). Each call is one
    idempotent step; it returns what it wants kept in `record.shown`. `clip`: for the
    `deliver` step, the file on this worker's disk holding the clip (None when it could
    not be had again from the vendor: `record.shown["clip_error"]` says why)."""

    async def show(self, step: Step, record: RenderRecord, clip: Path | None) -> dict[str, str]: ...


def clip_dir() -> Path:
    """Where this worker keeps clips between their download and their upload."""
    return Path(tempfile.gettempdir()) / "sora-clips"


def clip_path(folder: Path, rid: str) -> Path:
    return folder / f"{rid}.mp4"


def clip_size(path: Path) -> int:
    """The clip file's size in bytes; 0 if it is not there."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def drop_clip(path: Path) -> None:
    path.unlink(missing_ok=True)


def write_clip(folder: Path, rid: str, data: bytes) -> Path:
    """The clip on disk, whole or not at all (written aside, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = clip_path(folder, rid)
    part = path.with_suffix(f".{os.getpid()}.part")
    part.write_bytes(data)
    part.replace(path)
    return path


def new_render_id() -> str:
    return uuid.uuid4().hex[:16]


def today(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%d")


class BudgetExceeded(RenderError):
    """The render would pass a daily budget; nothing was reserved or queued."""


class AlreadyRequested(RenderError):
    """A render with this id exists (a second press of the same Confirm): nothing new."""


async def in_flight(state: State, rid: str, *, team: str) -> bool | None:
    """Whether render `rid` (of workspace `team`) is queued or running; None when it was
    never confirmed."""
    loaded = await state.renders.load(rid, team=team or None)
    if loaded is None:
        return None
    return not RenderRecord.model_validate_json(loaded[0]).finished


def target_of(session: Session, settings: Settings) -> TargetProfile:
    """The session's target, with the shipped render tables when it was saved before them."""
    if session.target.render:
        return session.target
    with contextlib.suppress(ProfileError):
        return resolve_target(session.target.name, settings.extra_profiles_dir)
    return session.target


async def request(
    state: State,
    session: Session,
    *,
    renderer: Renderer,
    tier: Tier,
    user_id: str,
    user_name: str,
    settings: Settings,
    now: float | None = None,
    rid: str | None = None,
) -> RenderRecord:
    """Plan the session's locked draft, reserve its seconds and queue it, in one step.
    Raises RenderError (one line) when it cannot render, BudgetExceeded over a budget,
    AlreadyRequested when render `rid` exists (asked twice: it is not queued again)."""
    if session.status != SessionStatus.LOCKED or session.locked is None:
        raise RenderError("Only a locked prompt renders.")
    target = target_of(session, settings)
    plan = renderer.plan(session.locked.draft, target, tier)
    master = None
    if tier == "draft":
        better = renderer.plan(session.locked.draft, target, "master")
        if (better.model, better.resolution) != (plan.model, plan.resolution):
            master = better
    origin = session.origin
    rec = RenderRecord(
        id=rid or new_render_id(),
        master=master,
        session_id=session.id,
        plan=plan,
        team_id=origin.team_id or "",
        user_id=user_id,
        user_name=user_name,
        channel_id=origin.channel_id or "",
        thread_ts=origin.thread_ts or "",
        steps=["progress"],
        created_at=now if now is not None else time.time(),
    )
    reserved = await state.renders.create(
        rec.id,
        rec.model_dump_json(),
        session_id=session.id,
        team=rec.team_id or "-",
        user=user_id,
        day=today(now),
        seconds=plan.seconds,
        team_limit=settings.render_budget_seconds_per_team,
        user_limit=settings.render_budget_seconds_per_user,
    )
    if reserved.over == "exists":
        raise AlreadyRequested("This render was already submitted; its progress is in the thread.")
    if not reserved.created:
        who = "The workspace" if reserved.over == "team" else "You"
        left = reserved.team_left if reserved.over == "team" else reserved.user_left
        raise BudgetExceeded(
            f"{who} can render {max(0, left)} s more of video today; this clip is "
            f"{plan.seconds} s. The budget resets at midnight UTC."
        )
    return rec


class RenderRunner:
    """Runs render jobs for a worker: one short step per job, never a sleeping task."""

    def __init__(
        self,
        *,
        state: State,
        show: RenderShow,
        renderers: Callable[[str], Renderer],
        lease_ttl_ms: int = 30_000,
        clock: Callable[[], float] = time.time,
        clips: Path | None = None,
    ) -> None:
        self.state = state
        self.clips = clips or clip_dir()
        self.surface = show
        self._make = renderers
        self._renderers: dict[str, Renderer] = {}
        self.lease_ttl_ms = lease_ttl_ms
        self.clock = clock
        self.jitter: Callable[[], float] = lambda: random.uniform(0.9, 1.1)

    def renderer(self, name: str) -> Renderer:
        if name not in self._renderers:
            self._renderers[name] = self._make(name)
        return self._renderers[name]

    async def aclose(self) -> None:
        for r in self._renderers.values():
            with contextlib.suppress(Exception):
                await r.aclose()

    async def promote(self) -> int:
        """Move the renders whose check is due onto the queue."""
        return await self.state.renders.promote(int(self.clock() * 1000))

    async def handle(self, job: Job, owner: str) -> None:
        """One step of the render `job.render`; the job stays pending if this dies."""
        if not await self.state.leases.acquire(job.lease_name, owner, self.lease_ttl_ms):
            return  # another worker is on it; this job comes back if that one dies
        try:
            await self._step(job)
        finally:
            with contextlib.suppress(Exception):
                await self.state.leases.release(job.lease_name, owner)

    async def fail_dead(self, job: Job) -> None:
        """A render job that failed on worker after worker: end the render, refunded."""
        loaded = await self._load(job.render, job.team)
        if loaded is None or loaded[0].finished:
            return
        rec, rev = loaded
        reason = "The render failed on several workers in a row and was set aside"
        await self._finish(job, rec, rev, Failed(reason, retryable=True))

    async def _load(self, rid: str, team: str) -> tuple[RenderRecord, int] | None:
        loaded = await self.state.renders.load(rid, team=team or None)
        if loaded is None:
            return None
        raw, rev = loaded
        return RenderRecord.model_validate_json(raw), rev

    async def _save(
        self,
        rec: RenderRecord,
        rev: int,
        *,
        due_s: float | None = None,
        enqueue: bool = False,
        ack: Job | None = None,
        refund: bool = False,
    ) -> int | None:
        """The new rev, or None when another worker wrote first (then stop)."""
        # ±10 % jitter, as the vendors' own waiters have: renders asked at once spread out.
        due_ms = None if due_s is None else int((self.clock() + due_s * self.jitter()) * 1000)
        ok = await self.state.renders.save(
            rec.id,
            rec.model_dump_json(),
            team=rec.team_id or None,
            session_id=rec.session_id,
            expected_rev=rev,
            due_ms=due_ms,
            enqueue=enqueue,
            ack=ack.id if ack is not None else "",
            refund=refund,
        )
        return rev + 1 if ok else None

    async def _step(self, job: Job) -> None:
        loaded = await self._load(job.render, job.team)
        if loaded is None:
            await self.state.queue.ack(job)  # expired, or never created
            return
        rec, rev = loaded
        shown = await self._show(rec, rev)
        if shown is None:
            return
        rec, rev = shown
        if rec.finished:
            await self._save(rec, rev, ack=job)
            return
        try:
            renderer = self.renderer(rec.plan.renderer)
        except RenderError as e:  # this deployment lost the key since the render was asked
            await self._finish(job, rec, rev, Failed(str(e), retryable=False))
            return
        if rec.status == "queued":
            await self._submit(job, rec, rev, renderer)
        else:
            await self._check(job, rec, rev, renderer)

    async def _show(self, rec: RenderRecord, rev: int) -> tuple[RenderRecord, int] | None:
        """Run the steps left in the record, saving after each; None if the record moved."""
        while rec.steps:
            step = rec.steps[0]
            clip = None
            if step == "deliver":
                clip, problem = await self._clip(rec)
                if problem:
                    rec = rec.model_copy(update={"shown": {**rec.shown, "clip_error": problem}})
            kept = await self.surface.show(step, rec, clip)
            if step == "deliver":
                await self._provenance(rec, kept)
            rec = rec.model_copy(update={"steps": rec.steps[1:], "shown": {**rec.shown, **kept}})
            new_rev = await self._save(rec, rev)
            if new_rev is None:
                return None
            rev = new_rev
            if step == "deliver" and clip is not None:
                drop_clip(clip)
        return rec, rev

    async def _clip(self, rec: RenderRecord) -> tuple[Path | None, str]:
        """The finished clip's file on this worker's disk: the one `_finish` wrote, or,
        after a take-over, the clip downloaded from the vendor again. (None, why) when
        the vendor no longer has it."""
        path = clip_path(self.clips, rec.id)
        if clip_size(path):
            return path, ""
        if rec.vendor_job_id is None:
            return None, "the clip was lost before it could be posted"
        try:
            outcome = await self.renderer(rec.plan.renderer).check(rec.plan, rec.vendor_job_id)
        except Exception as e:  # the vendor or the key went away: say so, do not loop
            log.warning("render %s: cannot download the clip again: %r", rec.id, e)
            outcome = None
        if not isinstance(outcome, Done):
            return None, f"{rec.plan.vendor} no longer has the clip to download"
        log.info("render %s: clip downloaded again from %s", rec.id, rec.plan.vendor)
        return write_clip(self.clips, rec.id, outcome.video), ""

    async def _provenance(self, rec: RenderRecord, kept: dict[str, str]) -> None:
        plan = rec.plan
        with contextlib.suppress(Exception):  # the library is a record, not the delivery
            await self.state.library.add_render(
                rec.session_id,
                RenderProvenance(
                    render_id=rec.id,
                    renderer=plan.renderer,
                    model=plan.model,
                    tier=plan.tier,
                    seconds=plan.seconds,
                    cost_usd=plan.cost,
                    vendor_job_id=rec.vendor_job_id or "",
                    file_id=kept.get("file_id"),
                    rendered_at=datetime.fromtimestamp(rec.finished_at or self.clock(), UTC),
                ),
                team=rec.team_id or None,
            )

    async def _submit(self, job: Job, rec: RenderRecord, rev: int, renderer: Renderer) -> None:
        try:
            vendor_id = await renderer.submit(rec.plan)
        except SubmitError as e:
            if e.retryable and self.clock() - rec.created_at < renderer.max_wait_s:
                delay = e.wait_s if e.wait_s is not None else next_delay(rec.delay_s, 1.0)
                rec = rec.model_copy(update={"delay_s": delay, "vendor_status": "waiting"})
                await self._save(rec, rev, due_s=delay, ack=job)
                return
            await self._finish(job, rec, rev, Failed(e.reason, retryable=e.retryable))
            return
        rec = rec.model_copy(
            update={
                "status": "running",
                "vendor_job_id": vendor_id,
                "submitted_at": self.clock(),
                "vendor_status": "submitted",
                "delay_s": renderer.poll_s,
                "steps": ["progress"],
            }
        )
        # Saved before anything else: from here on this render is only ever checked.
        new_rev = await self._save(rec, rev)
        if new_rev is None:
            log.warning("render %s: submitted as %s but the record moved", rec.id, vendor_id)
            return
        shown = await self._show(rec, new_rev)
        if shown is not None:
            rec, rev = shown
            await self._save(rec, rev, due_s=renderer.poll_s, ack=job)

    async def _check(self, job: Job, rec: RenderRecord, rev: int, renderer: Renderer) -> None:
        assert rec.vendor_job_id is not None
        outcome: Outcome = await renderer.check(rec.plan, rec.vendor_job_id)
        now = self.clock()
        if isinstance(outcome, Running):
            elapsed = now - (rec.submitted_at or rec.created_at)
            if elapsed > renderer.max_wait_s:
                minutes = round(renderer.max_wait_s / 60)
                outcome = Failed(
                    f"{rec.plan.vendor} did not finish within {minutes} min, its documented "
                    "longest wait",
                    retryable=True,
                )
            else:
                wait = outcome.wait_s if outcome.wait_s is not None else rec.delay_s
                changed = outcome.status != rec.vendor_status
                due_progress = now - rec.progress_shown_at >= PROGRESS_EVERY_S
                rec = rec.model_copy(
                    update={
                        "checks": rec.checks + 1,
                        "delay_s": next_delay(rec.delay_s, renderer.poll_s),
                        "vendor_status": outcome.status,
                        "progress": outcome.progress,
                    }
                )
                if changed or due_progress:
                    rec = rec.model_copy(update={"steps": ["progress"], "progress_shown_at": now})
                    new_rev = await self._save(rec, rev)
                    shown = await self._show(rec, new_rev) if new_rev is not None else None
                    if shown is None:
                        return
                    rec, rev = shown
                await self._save(rec, rev, due_s=max(0.0, wait), ack=job)
                return
        if isinstance(outcome, Refused) and outcome.retry_once and rec.attempt == 1:
            rec = rec.model_copy(
                update={
                    "status": "queued",
                    "attempt": 2,
                    "vendor_job_id": None,
                    "submitted_at": None,
                    "vendor_status": f"retrying once: {outcome.reason}",
                }
            )
            await self._save(rec, rev, enqueue=True, ack=job)
            return
        assert not isinstance(outcome, Running)
        await self._finish(job, rec, rev, outcome)

    async def _finish(
        self, job: Job, rec: RenderRecord, rev: int, outcome: Done | Refused | Failed | Cancelled
    ) -> None:
        now = self.clock()
        refund = False
        steps: list[Step] = ["progress"]
        update: dict[str, object] = {"finished_at": now, "checks": rec.checks + 1}
        if isinstance(outcome, Done):
            # On this worker's disk, never in Redis; delivered below, in this same job.
            write_clip(self.clips, rec.id, outcome.video)
            steps = ["deliver", "progress"]
            update.update(status="done", charged=True)
        elif isinstance(outcome, Refused):
            # A refusal the vendor did not charge gives the seconds back.
            refund = not outcome.charged
            update.update(status="refused", reason=outcome.reason, charged=outcome.charged)
        elif isinstance(outcome, Cancelled):
            refund = True
            update.update(status="cancelled", reason=outcome.reason)
        else:
            refund = True  # Google bills only a video made; Runway refunds its failures
            update.update(status="failed", reason=outcome.reason)
        rec = rec.model_copy(update={**update, "steps": steps})
        new_rev = await self._save(rec, rev, refund=refund)
        if new_rev is None:
            return
        record(rec.plan, outcome, elapsed_s=rec.elapsed_s)
        shown = await self._show(rec, new_rev)
        if shown is not None:
            rec, rev = shown
            await self._save(rec, rev, ack=job)
