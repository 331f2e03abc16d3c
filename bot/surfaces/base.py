"""The protocol between the turn driver and wherever a session is shown.

The engine never knows which surface it has: the terminal prints, the Slack
thread posts and updates messages. A surface opens a sink for each turn; the
engine streams the message into it. What is shown after a save is a list of
named steps (the outbox, see `bot.driver`); each surface maps the names it
shows to its own functions in its `steps` table, and a name missing from the
table is not shown there (the terminal pins nothing).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn

# A step: shows something of a saved session; the argument is what its name carried
# after a colon ("show_turn:3" -> "3"), or "".
Step = Callable[[Session, str], Awaitable[None]]

# The steps' names, as saved in the outbox.
MARK_HEARD = "mark_heard"  # :<source id> the reaction on a human's message the agents heard
SHOW_TURN = "show_turn"  # :<n> the final render of agent turn n
UPDATE_ROOT = "update_root"  # the session's status where it started (the thread root)
POST_LOCKED = "post_locked"  # the locked prompt
PIN_LOCKED = "pin_locked"
UPLOAD_REPORT = "upload_report"
CROSS_POST = "cross_post"  # the locked prompt in the team's prompts channel
SHOW_PAUSED = "show_paused"  # :<n> turn n failed; Retry
SHOW_STOPPED = "show_stopped"
ADD_TO_LIBRARY = "add_to_library"  # not a surface's: the driver adds it to the library
REFRESH_HOME = "refresh_home"  # the starter's Slack Home tab, after a lock or a pause


def waiting_notice(seconds: float, status: int | None = 529) -> str:
    """What a surface shows while the engine waits out an outage before calling Claude again.

    `status` is the HTTP status of the failure (None: no answer at all, such as a refused
    connection or a broken stream), so the person reads what is actually happening.
    """
    if status == 529:
        what = "Claude is overloaded"
    elif status == 429:
        what = "Claude's rate limit is reached"
    elif status is None:
        what = "Claude cannot be reached"
    else:
        what = f"Claude's API is failing (HTTP {status})"
    return f"{what}; retrying in {max(math.ceil(seconds), 1)} s"


class Surface(Protocol):
    async def turn_started(
        self,
        session: Session,
        *,
        speaker: Speaker,
        author: str,
        turn: int,
        round: int,
        posted: Mapping[int, str],
        redo: bool = False,
    ) -> TurnSink:
        """A sink for the message of agent turn `turn`, about to be written.

        `posted` holds the messages already posted for this turn by an earlier
        attempt (part -> message id): a redone turn updates them, never posts twice.
        `redo` says an earlier attempt may have posted without recording it (its
        worker died); a surface that tags its posts can look for them then.
        """
        ...

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        """Claude failed past its client's retries (`reason`); the turn is tried again in
        `seconds`. Shown as `waiting_notice(seconds)`; the turn's sink is reused after."""
        ...

    @property
    def steps(self) -> Mapping[str, Step]:
        """The steps this surface shows, by name; each idempotent."""
        ...


class EventSurface(Protocol):
    """A surface that shows a saved session by five events (the terminal, the recorder)."""

    async def turn_finished(self, session: Session, turn: Turn) -> None: ...

    async def interjection_heard(self, session: Session, turn: Turn) -> None: ...

    async def session_locked(self, session: Session) -> None: ...

    async def session_paused(self, session: Session) -> None: ...

    async def session_stopped(self, session: Session) -> None: ...


def event_steps(surface: EventSurface) -> dict[str, Step]:
    """The steps table of an `EventSurface`: each event under the step that shows it."""

    async def show_turn(session: Session, arg: str) -> None:
        agents = session.agent_turns
        n = int(arg)
        if 0 <= n < len(agents):
            await surface.turn_finished(session, agents[n])

    async def mark_heard(session: Session, arg: str) -> None:
        turn = next((t for t in session.turns if t.source_id == arg), None)
        if turn is not None:
            await surface.interjection_heard(session, turn)

    async def post_locked(session: Session, arg: str) -> None:
        await surface.session_locked(session)

    async def show_paused(session: Session, arg: str) -> None:
        await surface.session_paused(session)

    async def show_stopped(session: Session, arg: str) -> None:
        await surface.session_stopped(session)

    return {
        SHOW_TURN: show_turn,
        MARK_HEARD: mark_heard,
        POST_LOCKED: post_locked,
        SHOW_PAUSED: show_paused,
        SHOW_STOPPED: show_stopped,
    }
