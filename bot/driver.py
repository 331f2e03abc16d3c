"""One agent turn, from engine to surface: the step the CLI and the worker share."""

from __future__ import annotations

from collections.abc import Mapping

from bot.dialogue.agents import COPILOT_NAME
from bot.dialogue.engine import Engine, TurnFailed, TurnResult
from bot.dialogue.models import Session, Speaker
from bot.surfaces.base import Surface


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
    try:
        result = await engine.take_turn(session, sink)
    except TurnFailed:
        await surface.session_paused(session)
        return None
    await surface.turn_finished(session, result.turn)
    if result.locked is not None:
        await surface.session_locked(session)
    return result


def _author(session: Session) -> str:
    return COPILOT_NAME if session.next_speaker == Speaker.COPILOT else session.persona.display_name
