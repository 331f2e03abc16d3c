"""What every renderer is: one narrow interface, a plan, and the outcomes it can reach.

A render is two steps with a save between them, so that a crash never submits twice:

1. `submit(plan)` sends the job to the vendor and returns the vendor's job id. The caller
   saves that id before anything else.
2. `check(plan, job_id)` asks the vendor once how the job is doing and returns one of the
   outcomes below. A caller that was restarted calls only `check` with the saved id.

Each renderer maps a locked draft and its target profile to the vendor's exact parameters
(`plan`), from the target's render table (`TargetProfile.render`), and normalises whatever
the vendor answers to: `Done` (the bytes), `Refused` (a content policy said no, in one line),
`Failed` (retryable or not), `Cancelled`, or `Running` (ask again later).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bot import metrics
from bot.dialogue import checks
from bot.dialogue.models import Draft, RenderTable, TargetProfile
from bot.render.prices import price_per_second

Tier = Literal["draft", "master"]
TIERS: tuple[Tier, ...] = ("draft", "master")


class RenderError(ValueError):
    """A draft this renderer cannot render, or a renderer that is not configured; the message
    is one line for the person who asked."""


class RenderPlan(BaseModel):
    """Exactly what will be sent to the vendor, and what it will cost. Saved with the job."""

    model_config = ConfigDict(frozen=True)

    renderer: str
    vendor: str
    model: str
    tier: Tier
    prompt: str
    seconds: int
    aspect: str  # "16:9", "9:16", ... (what a person reads)
    size: str  # the vendor's value: "16:9" for Google, "1280:720" for Runway, "640x360" offline
    resolution: str
    negative_prompt: str = ""
    audio: bool = False
    price_per_second: float | None = None  # USD, from bot.render.prices
    notes: list[str] = Field(default_factory=list)  # where the render differs from the draft
    # The locked draft it renders: provenance, and all the offline renderer needs to resume.
    draft: Draft

    @property
    def cost(self) -> float | None:
        """Estimated USD for the whole clip; None where the price table does not know it."""
        if self.price_per_second is None:
            return None
        return round(self.price_per_second * self.seconds, 4)

    def describe(self) -> str:
        """One line: what, where, how long, how much."""
        cost = "cost unknown" if self.cost is None else f"about ${self.cost:.2f}"
        return (
            f"{self.seconds} s at {self.resolution} {self.aspect} on {self.model} "
            f"({self.vendor}, {self.tier}), {cost}"
        )


@dataclass(frozen=True)
class Running:
    """Not finished: ask again. `wait_s` is the vendor's own hint (throttled, rate limited)."""

    status: str
    progress: float | None = None
    wait_s: float | None = None


@dataclass(frozen=True)
class Done:
    video: bytes
    seconds: float
    resolution: str
    mime_type: str = "video/mp4"


@dataclass(frozen=True)
class Refused:
    """A content policy refused the prompt or its output. Never retried, except where
    `retry_once` says the vendor's reason is known to be flaky (Veo's audio filter)."""

    reason: str
    charged: bool
    retry_once: bool = False


@dataclass(frozen=True)
class Failed:
    reason: str
    retryable: bool
    wait_s: float | None = None


@dataclass(frozen=True)
class Cancelled:
    reason: str


Outcome = Running | Done | Refused | Failed | Cancelled
Finished = Done | Refused | Failed | Cancelled


class SubmitError(Exception):
    """The vendor did not take the job. `retryable`: a rate limit or an outage, worth a wait
    of `wait_s` (the vendor's hint, when it gave one)."""

    def __init__(self, reason: str, *, retryable: bool, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.wait_s = wait_s


class Renderer(Protocol):
    """One video API. Implementations: google.VeoRenderer, google.OmniRenderer,
    runway.RunwayRenderer, offline.OfflineRenderer."""

    name: str
    vendor: str
    # The vendor's documented longest wait for one job; polling gives up after it.
    max_wait_s: float
    # The first wait between checks; later ones back off (bot.render.poll).
    poll_s: float

    def plan(self, draft: Draft, target: TargetProfile, tier: Tier) -> RenderPlan: ...

    async def submit(self, plan: RenderPlan) -> str: ...

    async def check(self, plan: RenderPlan, job_id: str) -> Outcome: ...

    async def aclose(self) -> None: ...


# ---- shared by the vendor renderers ---------------------------------------------------


def table_for(renderer: str, target: TargetProfile) -> RenderTable:
    table = target.render.get(renderer)
    if table is None:
        can = ", ".join([*target.render, "offline"])
        raise RenderError(f"{target.model_name} prompts do not render on {renderer}; use {can}.")
    return table


def vendor_shape(
    draft: Draft,
    table: RenderTable,
    *,
    renderer: str,
    sizes: tuple[str, ...],
    durations: tuple[int, ...],
) -> tuple[str, int, list[str]]:
    """The vendor's size and duration for `draft`, and a note wherever they differ from it."""
    size = table.sizes.get(draft.size, draft.size)
    seconds = table.durations.get(str(draft.duration_seconds), draft.duration_seconds)
    if size not in sizes:
        raise RenderError(
            f"{renderer} renders {' or '.join(sizes)}, not {draft.size}; "
            "the offline renderer takes any size."
        )
    if seconds not in durations:
        raise RenderError(
            f"{renderer} renders {durations[0]} to {durations[-1]} s, not "
            f"{draft.duration_seconds} s; the offline renderer takes any duration."
        )
    notes = []
    if seconds != draft.duration_seconds:
        notes.append(f"{draft.duration_seconds} s drafted; {renderer} renders {seconds} s")
    return size, seconds, notes


def plan_on(
    renderer: str,
    vendor: str,
    draft: Draft,
    target: TargetProfile,
    tier: Tier,
    *,
    label: str,
    sizes: tuple[str, ...],
    durations: tuple[int, ...],
    aspects: dict[str, str] | None = None,
    audio: bool,
    negative: bool,
) -> RenderPlan:
    """The plan of a vendor renderer, from the target's render table for it."""
    table = table_for(renderer, target)
    size, seconds, notes = vendor_shape(
        draft, table, renderer=label, sizes=sizes, durations=durations
    )
    chosen = table.draft if tier == "draft" else table.master
    resolution = chosen.resolution or "720p"
    return RenderPlan(
        renderer=renderer,
        vendor=vendor,
        model=chosen.model,
        tier=tier,
        prompt=draft.prompt_text,
        seconds=seconds,
        aspect=(aspects or {}).get(size, size),
        size=size,
        resolution=resolution,
        negative_prompt=negative_prompt(draft, target) if negative else "",
        audio=audio,
        price_per_second=price_per_second(chosen.model, resolution),
        notes=notes,
        draft=draft,
    )


def http_status(e: BaseException) -> int | None:
    """The HTTP status of an SDK's error: `status_code` (runwayml, Interactions) or `code`
    (google-genai's APIError)."""
    for name in ("status_code", "code"):
        value = getattr(e, name, None)
        if isinstance(value, int):
            return value
    return None


def transient(e: BaseException) -> bool:
    """A rate limit, an outage or a lost connection: the same call may work later
    (docs.dev.runwayml.com/errors/errors: 429, 502, 503, 504 may be retried)."""
    status = http_status(e)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(e, OSError | TimeoutError) or "connection" in type(e).__name__.lower()


def negative_prompt(draft: Draft, target: TargetProfile) -> str:
    """The draft's things to avoid, as the target's negative prompt field takes them."""
    if not target.negative_prompt or not draft.parts.avoid:
        return ""
    return checks.negative_prompt(draft.parts)


def one_line(text: str, limit: int = 300) -> str:
    """A vendor's message as one line of plain text, cut at `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


# ---- counters others can hook (metrics) -------------------------------------------------


@dataclass(frozen=True)
class RenderRecord:
    """One finished render, for whoever counts them."""

    renderer: str
    model: str
    tier: Tier
    outcome: Literal["done", "refused", "failed", "cancelled"]
    seconds: int
    cost: float | None


RENDER_HOOKS: list[Callable[[RenderRecord], None]] = []


def outcome_name(outcome: Finished) -> Literal["done", "refused", "failed", "cancelled"]:
    if isinstance(outcome, Done):
        return "done"
    if isinstance(outcome, Refused):
        return "refused"
    if isinstance(outcome, Failed):
        return "failed"
    return "cancelled"


def record(plan: RenderPlan, outcome: Finished, *, elapsed_s: float = 0.0) -> None:
    """Count a finished render (bot.metrics: renders by renderer and outcome, wall time,
    cost) and tell every hook in RENDER_HOOKS (a failing hook is skipped)."""
    done_or_charged = isinstance(outcome, Done) or (
        isinstance(outcome, Refused) and outcome.charged
    )
    with contextlib.suppress(Exception):
        metrics.render_finished(
            plan.renderer,
            outcome_name(outcome),
            seconds=elapsed_s,
            cost_usd=plan.cost if done_or_charged else None,
        )
    done = isinstance(outcome, Done)
    charged = done or (isinstance(outcome, Refused) and outcome.charged)
    entry = RenderRecord(
        renderer=plan.renderer,
        model=plan.model,
        tier=plan.tier,
        outcome=outcome_name(outcome),
        seconds=plan.seconds if done else 0,
        cost=plan.cost if charged else 0.0,
    )
    for hook in list(RENDER_HOOKS):
        try:
            hook(entry)
        except Exception:  # a counter must never break a render
            continue
