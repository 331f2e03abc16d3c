"""One job's work as decide, save, then show: the step the CLI and the worker share.

DECIDE: `take_turn` runs the engine; while the model writes, the surface shows
the turn best effort (nothing there can fail the turn). SAVE is the caller's:
the session goes to the store together with `steps_after(...)`, what is left
to show of it (the outbox). SHOW: `show` runs those steps from the saved
session. Each step is idempotent (a surface records what it posted, and
finds its posts again by their tags), so running them again after a crash or
a Slack failure repeats nothing, and never calls the model.

A step is a string, so the outbox is plain JSON in the store:
``heard:<source id>`` (the reaction on a human's message), ``turn:<n>`` (the
final render of agent turn n and the root's status), ``locked`` (the locked
reply, pin, report, root, cross-post), ``library`` (the prompt library entry),
``paused:<n>``, ``stopped``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from bot import metrics
from bot.config import Settings
from bot.dialogue.agents import COPILOT_NAME
from bot.dialogue.engine import Engine, OutagePolicy, TurnFailed, TurnResult
from bot.dialogue.models import Session, SessionStatus, Speaker, Turn
from bot.llm.base import ChatModel
from bot.surfaces.base import Surface
from state import LibraryEntry, PromptLibrary

log = logging.getLogger("sora.driver")


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


async def take_turn(
    engine: Engine,
    session: Session,
    surface: Surface,
    *,
    posted: Mapping[int, str] | None = None,
    redo: bool = False,
) -> TurnResult | None:
    """Take the next turn of `session` (in place). None when it failed (the session is paused).

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

    async def waiting(seconds: float, reason: str, status: int | None) -> None:
        await surface.model_waiting(session, seconds, reason, status)

    started, speaker = time.perf_counter(), session.next_speaker.value
    try:
        result = await engine.take_turn(session, sink, on_wait=waiting)
    except TurnFailed as e:
        metrics.turn_taken(speaker, e.kind, seconds=time.perf_counter() - started)
        return None
    metrics.turn_taken(
        speaker,
        "ok",
        seconds=time.perf_counter() - started,
        model=result.turn.model,
        model_seconds=result.model_seconds,
        usage=result.turn.usage,
    )
    return result


def steps_after(
    session: Session, *, heard: Sequence[Turn] = (), result: TurnResult | None = None
) -> list[str]:
    """What to show after a job changed `session`: humans heard, the turn taken, the end."""
    steps = [f"heard:{t.source_id}" for t in heard if t.source_id]
    if result is not None:
        steps.append(f"turn:{_agent_number(session, result.turn)}")
    if session.status == SessionStatus.LOCKED:
        steps += ["locked", "library"]
    elif session.status == SessionStatus.PAUSED:
        steps.append(f"paused:{session.next_turn}")
    elif session.status == SessionStatus.STOPPED:
        steps.append("stopped")
    return steps


async def show(
    surface: Surface,
    session: Session,
    steps: Sequence[str],
    *,
    library: PromptLibrary | None = None,
) -> None:
    """Run `steps` in order, from the saved `session`. A step that raises stops here;
    the caller leaves them all pending, and running them again repeats nothing."""
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind == "heard":
            turn = next((t for t in session.turns if t.source_id == arg), None)
            if turn is not None:
                await surface.interjection_heard(session, turn)
        elif kind == "turn":
            agents = session.agent_turns
            n = int(arg)
            if 0 <= n < len(agents):
                await surface.turn_finished(session, agents[n])
        elif kind == "locked":
            await surface.session_locked(session)
        elif kind == "library":
            if library is not None and session.locked is not None:
                await library.add(LibraryEntry.from_session(session))
        elif kind == "paused":
            await surface.session_paused(session)
        elif kind == "stopped":
            await surface.session_stopped(session)
        else:
            log.warning(
                "session %s: unknown step %r skipped (a newer build wrote it?)", session.id, step
            )


async def drive_turn(
    engine: Engine,
    session: Session,
    surface: Surface,
    *,
    posted: Mapping[int, str] | None = None,
    redo: bool = False,
    library: PromptLibrary | None = None,
) -> TurnResult | None:
    """Take the next turn and show it at once, with no store in between (tests, demos).

    The worker saves between the two; see `bot.worker.Worker.handle`.
    """
    result = await take_turn(engine, session, surface, posted=posted, redo=redo)
    await show(surface, session, steps_after(session, result=result), library=library)
    return result


def _agent_number(session: Session, turn: Turn) -> int:
    return sum(1 for t in session.turns[: turn.index] if t.speaker != Speaker.HUMAN)


def _author(session: Session) -> str:
    return COPILOT_NAME if session.next_speaker == Speaker.COPILOT else session.persona.display_name
