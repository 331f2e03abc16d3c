"""One job's work as decide, save, then show: the step the CLI and the worker share.

DECIDE: `take_turn` runs the engine; while the model writes, the surface shows
the turn best effort (nothing there can fail the turn). SAVE is the caller's:
the session goes to the store together with `steps_after(...)`, what is left
to show of it (the outbox). SHOW: `show` runs those steps from the saved
session. Each step is idempotent (a surface records what it posted, and
finds its posts again by their tags), so running them again after a crash or
a Slack failure repeats nothing, and never calls the model.

A step is a name, with an argument after a colon, so the outbox is plain JSON
in the store: ``mark_heard:<source id>``, ``show_turn:<n>``, ``update_root``,
``post_locked``, ``pin_locked``, ``upload_report``, ``cross_post``,
``show_paused:<n>``, ``show_stopped``, ``add_to_library`` (see
`bot.surfaces.base`). Each surface maps the names it shows to its functions in
its `steps` table (Slack's: `bot.slack.steps.STEPS`); the library entry is the
driver's own.
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
from bot.surfaces.base import (
    ADD_TO_LIBRARY,
    CROSS_POST,
    MARK_HEARD,
    PIN_LOCKED,
    POST_LOCKED,
    REFRESH_HOME,
    SHOW_PAUSED,
    SHOW_STOPPED,
    SHOW_TURN,
    UPDATE_ROOT,
    UPLOAD_REPORT,
    Surface,
)
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


# What the lock shows, in order. The root goes before the pin: pins.add is Tier 2
# (about 20 a minute for the workspace, api.slack.com/methods/pins.add), so when many
# sessions lock at once the pins come slowest, and the roots' final state (chat.update,
# Tier 3) must not wait for them. The cross-post goes last: it waits for the prompts
# channel's post rate, which every session's lock shares, so it delays nothing in
# the thread.
LOCK_STEPS = (POST_LOCKED, UPLOAD_REPORT, UPDATE_ROOT, PIN_LOCKED, CROSS_POST, ADD_TO_LIBRARY)

# Outboxes saved by builds before the steps had their own names.
_LEGACY = {
    "heard": (MARK_HEARD,),
    "turn": (SHOW_TURN, UPDATE_ROOT),
    "locked": LOCK_STEPS[:-1],
    "library": (ADD_TO_LIBRARY,),
    "paused": (SHOW_PAUSED, UPDATE_ROOT),
    "stopped": (SHOW_STOPPED, UPDATE_ROOT),
}


def steps_after(
    session: Session, *, heard: Sequence[Turn] = (), result: TurnResult | None = None
) -> list[str]:
    """What to show after a job changed `session`: humans heard, the turn taken, the end."""
    steps = [f"{MARK_HEARD}:{t.source_id}" for t in heard if t.source_id]
    if result is not None:
        steps.append(f"{SHOW_TURN}:{_agent_number(session, result.turn)}")
    if session.status == SessionStatus.LOCKED:
        steps += [*LOCK_STEPS, REFRESH_HOME]
    elif session.status == SessionStatus.PAUSED:
        steps += [f"{SHOW_PAUSED}:{session.next_turn}", UPDATE_ROOT, REFRESH_HOME]
    elif session.status == SessionStatus.STOPPED:
        steps += [SHOW_STOPPED, UPDATE_ROOT]
    elif result is not None:
        steps.append(UPDATE_ROOT)
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
    table = surface.steps
    for step in steps:
        kind, _, arg = step.partition(":")
        for name in _LEGACY.get(kind, (kind,)):
            if name == ADD_TO_LIBRARY:
                if library is not None and session.locked is not None:
                    await library.add(LibraryEntry.from_session(session))
            elif name in table:
                await table[name](session, arg)
            elif name not in _KNOWN:
                log.warning(
                    "session %s: unknown step %r skipped (a newer build wrote it?)",
                    session.id,
                    step,
                )


_KNOWN = frozenset(
    {
        MARK_HEARD,
        SHOW_TURN,
        UPDATE_ROOT,
        SHOW_PAUSED,
        SHOW_STOPPED,
        REFRESH_HOME,
        *LOCK_STEPS,
    }
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
