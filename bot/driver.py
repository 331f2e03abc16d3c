"""One agent turn, from engine to surface: the step the CLI and the worker share."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Settings
from bot.dialogue.agents import COPILOT_NAME
from bot.dialogue.engine import Engine, OutagePolicy, TurnFailed, TurnResult
from bot.dialogue.models import Session, Speaker
from bot.llm.base import ChatModel
from bot.surfaces.base import Surface


def make_engine(model: ChatModel, settings: Settings) -> Engine:
    """The engine with the configured output budget and outage policy."""
    return Engine(
        model=model,
        max_tokens=settings.max_output_tokens,
        outage=OutagePolicy(
            window_seconds=settings.outage_retry_seconds,
            base_seconds=settings.outage_backoff_base_seconds,
            cap_seconds=settings.outage_backoff_cap_seconds,
        ),
    )


async def drive_turn(
    engine: Engine,
    session: Session,
    surface: Surface,
    *,
    posted: Mapping[int, str] | None = None,
    redo: bool = False,
) -> TurnResult | None:
    """Take the next turn of `session` (in place) and show it. None when the turn failed.

    `posted`: what an earlier attempt at this turn already posted (see Surface).
    """
    sink = await surface.turn_started(
        session,
        speaker=session.next_speaker,
        author=_author(session),
        turn=session.next_turn,
        round=session.next_round,
        posted=posted or {},
        redo=redo,
    )

    async def waiting(seconds: float, reason: str) -> None:
        await surface.model_waiting(session, seconds, reason)

    try:
        result = await engine.take_turn(session, sink, on_wait=waiting)
    except TurnFailed:
        await surface.session_paused(session)
        return None
    await surface.turn_finished(session, result.turn)
    if result.locked is not None:
        await surface.session_locked(session)
    return result


def _author(session: Session) -> str:
    return COPILOT_NAME if session.next_speaker == Speaker.COPILOT else session.persona.display_name
