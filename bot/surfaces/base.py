"""The protocol between the turn driver and wherever a session is shown.

The engine never knows which surface it has: the terminal prints, the Slack
thread posts and updates messages. A surface opens a sink for each turn; the
engine streams the message into it; the driver then reports what happened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn


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

    async def turn_finished(self, session: Session, turn: Turn) -> None: ...

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        """Claude failed past its client's retries (`reason`); the turn is tried again in
        `seconds`. Shown as `waiting_notice(seconds)`; the turn's sink is reused after."""
        ...

    async def interjection_heard(self, session: Session, turn: Turn) -> None: ...

    async def session_locked(self, session: Session) -> None: ...

    async def session_paused(self, session: Session) -> None: ...

    async def session_stopped(self, session: Session) -> None: ...
