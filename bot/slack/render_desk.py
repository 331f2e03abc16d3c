"""Render from Slack: who may, what it costs, what is left of the budget; then submit.

Pressing Render (or Master, on a draft's done message) asks `offer`: it checks who may
render (RENDER_ALLOWED: the starter and workspace admins, or anyone), plans the clip on
the target's renderer (`bot.render.for_slack`) and answers, to that person alone, the
estimated cost (`bot.render.prices`) and what is left of today's budgets, with Confirm
and Cancel. Nothing is reserved or submitted until Confirm. `confirm` checks again and
asks `bot.render.jobs.request`, which reserves both budgets and queues the render in one
step, or does nothing at all over a budget. Confirm carries the render's id, chosen when
the offer was made: a second press (a double click) finds that render and submits nothing.

At most one render per locked entry and tier is offered, queued or running at a time (the
entry's render slot, `Keys.render_slot`): anyone who may render and presses Render (or
Master) while one is only offered gets an offer with that same render id, so however many
offers are confirmed, one render is submitted; while one is queued or running, the press
gets a private "already rendering" line. Once it has finished (done, refused, failed),
the next press offers a new render: rendering the same entry again is legitimate.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bot import render
from bot.dialogue.models import Session, SessionStatus
from bot.render.base import TIERS, Renderer, RenderError, RenderPlan, Tier
from bot.render.jobs import (
    AlreadyRequested,
    BudgetExceeded,
    in_flight,
    new_render_id,
    request,
    target_of,
    today,
)
from bot.sessions import GONE, Gone, Refused
from bot.slack.blocks import (
    ACTION_RENDER_CANCEL,
    ACTION_RENDER_CONFIRM,
    _button,
    escape,
    render_value,
    truncate,
)
from bot.slack.renders import money

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.sessions import Sessions

log = logging.getLogger("sora.render")
ALREADY_RENDERING = (
    "This clip is already rendering: see the progress message in the thread. "
    "Once it has finished, you can render it again."
)


@dataclass(frozen=True)
class Offer:
    """What the person is asked to confirm: the plan, its id-to-be and the budgets left."""

    text: str
    blocks: list[dict[str, Any]]


class RenderDesk:
    """The Slack side of asking for a render; one per `Sessions` (per web process)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.state = sessions.state
        self._renderers: dict[str, Renderer] = {}

    def _renderer(self, name: str, settings: Settings) -> Renderer:
        """A renderer to plan with (its client is never used here to submit)."""
        if name not in self._renderers:
            self._renderers[name] = render.make(name, settings)
        return self._renderers[name]

    async def aclose(self) -> None:
        for r in self._renderers.values():
            with contextlib.suppress(Exception):
                await r.aclose()

    async def _checked(
        self, session_id: str, user_id: str, tier_name: str
    ) -> tuple[Session, Settings, Renderer, RenderPlan, str]:
        """The session, its settings, renderer and plan, and the person's name; raises
        Refused (one line, for that person alone) or Gone."""
        if tier_name not in TIERS:
            raise Refused(f"Unknown render tier {escape(truncate(tier_name, 20))!r}.")
        tier: Tier = "master" if tier_name == "master" else "draft"
        session = await self.state.sessions.load(session_id)
        if session is None:
            raise Gone(GONE)
        if session.status != SessionStatus.LOCKED or session.locked is None:
            raise Refused("Only a locked prompt renders.")
        team = session.origin.team_id
        settings = await self.sessions.settings_for(team)
        person = await self.sessions.person(team, user_id)
        if (
            settings.render_allowed == "starter_or_admin"
            and session.origin.user_id != user_id
            and not person.is_admin
        ):
            raise Refused(
                "Only the person who started this session, or a workspace admin, can render it."
            )
        name = render.for_slack(target_of(session, settings), settings)
        if name is None:
            raise Refused(
                "No renderer is configured for this prompt's target: an admin sets "
                "GEMINI_API_KEY or RUNWAYML_API_SECRET."
            )
        renderer = self._renderer(name, settings)
        try:
            plan = renderer.plan(session.locked.draft, target_of(session, settings), tier)
        except RenderError as e:
            raise Refused(str(e)) from None
        return session, settings, renderer, plan, person.name

    async def _left(self, session: Session, user_id: str, settings: Settings) -> tuple[int, int]:
        return await self.state.renders.budget_left(
            team=session.origin.team_id or "-",
            user=user_id,
            day=today(),
            team_limit=settings.render_budget_seconds_per_team,
            user_limit=settings.render_budget_seconds_per_user,
        )

    async def offer(self, *, session_id: str, user_id: str, tier: str) -> Offer:
        """The ephemeral confirmation: cost and budgets left, Confirm and Cancel. Raises
        Refused (who may not, over budget, nothing configured) or Gone; reserves nothing."""
        session, settings, _, plan, _ = await self._checked(session_id, user_id, tier)
        team_left, user_left = await self._left(session, user_id, settings)
        budgets = (
            f"Left today: this workspace {max(0, team_left)} s of "
            f"{settings.render_budget_seconds_per_team} s, you {max(0, user_left)} s of "
            f"{settings.render_budget_seconds_per_user} s (reset at midnight UTC)."
        )
        if plan.seconds > min(team_left, user_left):
            who = "This workspace" if team_left < plan.seconds else "You"
            raise Refused(
                f"{who} cannot render this {plan.seconds} s clip today: the daily render "
                f"budget is spent. {budgets}"
            )
        title = session.locked.draft.title if session.locked else ""
        label = "Master" if plan.tier == "master" else "Render"
        notes = f" {escape('; '.join(plan.notes))}." if plan.notes else ""
        text = (
            f"*{label} “{escape(truncate(title, 120))}”?* {plan.seconds} s at "
            f"{escape(plan.resolution)} {escape(plan.aspect)} on {escape(plan.model)} "
            f"({escape(plan.vendor)}, {plan.tier}): about {money(plan.cost)}.{notes}\n{budgets}"
        )
        rid = await self._slot(session, plan.tier, new_render_id(), offered="reuse")
        confirm = _button(
            f"Confirm ({money(plan.cost)})",
            ACTION_RENDER_CONFIRM,
            render_value(session_id, plan.tier, rid),
            "primary",
        )
        cancel = _button("Cancel", ACTION_RENDER_CANCEL, render_value(session_id, plan.tier, rid))
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "elements": [confirm, cancel]},
        ]
        return Offer(text=f"{label}: about {money(plan.cost)}. Confirm in Slack.", blocks=blocks)

    async def _slot(
        self, session: Session, tier: Tier, rid: str, *, offered: Literal["reuse", "replace"]
    ) -> str:
        """Claim the entry's render slot for `tier` with `rid`; the render id to use. A
        render in it that is only offered is reused (`offered="reuse"`, a press of Render)
        or replaced (`"replace"`, a Confirm of another offer); a finished one is replaced;
        a queued or running one raises Refused. 1-3 round trips."""
        team = session.origin.team_id or "-"
        replacing = ""
        for _ in range(3):  # the slot changed between two reads: look again
            held = await self.state.renders.claim_slot(
                team=team, session_id=session.id, tier=tier, rid=rid, replacing=replacing
            )
            if held == rid:
                return rid
            running = await in_flight(self.state, held, team=session.origin.team_id or "")
            if running:
                raise Refused(ALREADY_RENDERING)
            if running is None and offered == "reuse":
                return held
            replacing = held
        raise Refused(ALREADY_RENDERING)

    async def confirm(self, *, session_id: str, user_id: str, tier: str, rid: str) -> str:
        """Submit the confirmed render `rid` (once); the answer for the person. Raises
        Refused or Gone, submitting nothing."""
        session, settings, renderer, plan, name = await self._checked(session_id, user_id, tier)
        if rid:
            await self._slot(session, plan.tier, rid, offered="replace")
        try:
            rec = await request(
                self.state,
                session,
                renderer=renderer,
                tier=plan.tier,
                user_id=user_id,
                user_name=name,
                settings=settings,
                rid=rid or None,
            )
        except AlreadyRequested as e:
            return str(e)
        except BudgetExceeded as e:
            raise Refused(str(e)) from None
        except RenderError as e:
            raise Refused(str(e)) from None
        await self.state.audit.record(
            session.origin.team_id,
            "render",
            session=session_id,
            actor=user_id,
            actor_name=name,
            detail=truncate(plan.describe(), 200),
        )
        log.info(
            "render %s of session %s asked by %s: %s", rec.id, session_id, user_id, plan.describe()
        )
        return (
            f"Submitted: {plan.seconds} s on {plan.model}, about {money(plan.cost)}. "
            "Its progress shows in the thread; the clip follows there."
        )
