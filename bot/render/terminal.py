"""`sora-copilot render` (and `run --render`): a locked prompt becomes a clip beside its report.

The vendor's job id is written to `session-<id>.<tier>.render.json` beside the report the
moment it is known, so a Ctrl-C (or a crash) leaves the job resumable: `render --resume`
polls the same job and never submits a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Literal, TextIO

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot import render
from bot.config import Settings
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import ProfileError, resolve_target
from bot.render.base import Cancelled, Done, Failed, Refused, RenderError, RenderPlan, Tier
from bot.render.poll import Progress as RenderProgress
from bot.render.poll import drive

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
Status = Literal["submitting", "running", "done", "refused", "failed", "cancelled"]


class RenderJob(BaseModel):
    """What a terminal render saves beside the report: enough to resume it, then its result."""

    session_id: str
    plan: RenderPlan
    status: Status = "submitting"
    job_id: str | None = None
    submitted_at: float | None = None
    attempt: int = 1
    reason: str = ""
    clip: str = ""


def job_path(out_dir: Path, session_id: str, tier: Tier) -> Path:
    return out_dir / f"session-{session_id}.{tier}.render.json"


def clip_path(out_dir: Path, session_id: str, tier: Tier) -> Path:
    return out_dir / f"session-{session_id}.{tier}.mp4"


def read_job(path: Path) -> RenderJob | None:
    try:
        return RenderJob.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as e:
        raise RenderError(f"{path} is not a render record ({e}); delete it to start over.") from e


def write_job(path: Path, job: RenderJob) -> None:
    """Written whole to a temporary file, then renamed: a crash never leaves half a record."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(job.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)


def read_report(path: Path) -> Session:
    """The session in a `session-<id>.json` report."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Session.model_validate(data["session"])
    except FileNotFoundError:
        raise RenderError(f"No report at {path}.") from None
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as e:
        raise RenderError(f"{path} is not a session report ({type(e).__name__}).") from None


class _Shown:
    """Progress in the terminal: a rich bar for a person, a line per change otherwise."""

    def __init__(self, out: TextIO) -> None:
        console = Console(file=out, highlight=False)
        self.out = out
        self.rich = console.is_terminal and not console.is_dumb_terminal
        self.bar: Progress | None = None
        self.task = None
        self.last = ""
        if self.rich:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("submitting", total=None)
            self.bar.start()

    def update(self, p: RenderProgress) -> None:
        if self.bar is not None and self.task is not None:
            total = 1.0 if p.progress is not None else None
            self.bar.update(self.task, description=p.status, completed=p.progress, total=total)
        elif p.status != self.last:
            self.out.write(f"  {p.status} ({p.elapsed_s:.0f} s)\n")
            self.out.flush()
        self.last = p.status

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def render_session(
    session: Session,
    *,
    settings: Settings,
    out_dir: Path,
    renderer_name: str | None,
    tier: Tier,
    resume: bool,
    source: str,
    out: TextIO,
) -> int:
    """Render `session`'s locked prompt into `out_dir`; the exit code."""
    if session.status != SessionStatus.LOCKED or session.locked is None:
        raise RenderError(
            f"Session {session.id} is {session.status.value}: only a locked prompt renders."
        )
    path = job_path(out_dir, session.id, tier)
    saved = read_job(path)
    in_flight = saved is not None and saved.status == "running" and saved.job_id is not None
    if resume and not in_flight:
        raise RenderError(
            f"Nothing to resume: no {tier} render of session {session.id} is in flight "
            f"in {out_dir} (run it without --resume)."
        )
    if in_flight and not resume:
        assert saved is not None
        raise RenderError(
            f"A {tier} render of session {session.id} is in flight ({saved.plan.vendor} job "
            f"{saved.job_id}): add --resume to pick it up, or delete {path} to start another."
        )
    if saved is not None and in_flight:
        job = saved
        if renderer_name and renderer_name != job.plan.renderer:
            raise RenderError(
                f"That render runs on {job.plan.renderer}; --resume continues it there."
            )
        renderer = render.make(job.plan.renderer, settings)
        out.write(f"Resuming {job.plan.describe()}: job {job.job_id}.\n")
    else:
        target = session.target
        if not target.render:  # a session saved before render tables existed
            with contextlib.suppress(ProfileError):
                target = resolve_target(target.name, settings.extra_profiles_dir)
        name = render.choose(renderer_name, target, settings)
        renderer = render.make(name, settings)
        plan = renderer.plan(session.locked.draft, target, tier)
        job = RenderJob(session_id=session.id, plan=plan)
        if renderer_name is None and name == render.OFFLINE:
            out.write(
                "Rendering offline: title cards, no vendor (set GEMINI_API_KEY or "
                "RUNWAYML_API_SECRET to render on Veo, Omni or Runway).\n"
            )
        out.write(f"Rendering {plan.describe()}.\n")
        for note in plan.notes:
            out.write(f"  Note: {note}.\n")
        write_job(path, job)
    out.flush()

    async def on_submitted(job_id: str, at: float, attempt: int) -> None:
        nonlocal job
        job = job.model_copy(
            update={"job_id": job_id, "submitted_at": at, "attempt": attempt, "status": "running"}
        )
        write_job(path, job)

    shown = _Shown(out)
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(
        drive(
            renderer,
            job.plan,
            job_id=job.job_id,
            submitted_at=job.submitted_at,
            attempts=job.attempt,
            on_submitted=on_submitted,
            on_progress=shown.update,
            clock=time.time,
        )
    )
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, work.cancel)
            installed.append(sig)
    try:
        result = await work
    except asyncio.CancelledError:
        shown.close()
        if job.job_id is None:
            sys.stderr.write("\nStopped before the vendor took the job: nothing is running.\n")
            path.unlink(missing_ok=True)
        else:
            sys.stderr.write(
                f"\nStopped. {job.plan.vendor} job {job.job_id} keeps running; "
                f"`sora-copilot render {source} --tier {tier} --resume` picks it up.\n"
            )
        return EXIT_INTERRUPTED
    finally:
        shown.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await renderer.aclose()
    outcome = result.outcome
    if isinstance(outcome, Done):
        clip = clip_path(out_dir, session.id, tier)
        clip.write_bytes(outcome.video)
        write_job(path, job.model_copy(update={"status": "done", "clip": clip.name}))
        cost = job.plan.cost
        price = "no charge" if cost == 0 else ("cost unknown" if cost is None else f"${cost:.2f}")
        out.write(f"Clip:   {clip} ({outcome.seconds:g} s, {outcome.resolution}, {price})\n")
        if tier == "draft" and job.plan.renderer != render.OFFLINE:
            out.write(f"Master: `sora-copilot render {source} --tier master` at full quality.\n")
        return EXIT_OK
    if isinstance(outcome, Refused):
        status: Status = "refused"
        line = f"{job.plan.vendor} refused the prompt: {outcome.reason}"
        if outcome.charged:
            line += " (this attempt was charged)"
    elif isinstance(outcome, Cancelled):
        status, line = "cancelled", outcome.reason
    else:
        assert isinstance(outcome, Failed)
        status, line = "failed", outcome.reason
    write_job(path, job.model_copy(update={"status": status, "reason": line}))
    sys.stderr.write(f"No clip: {line}\n")
    return EXIT_FAILED
