"""The terminal surface for `sora-copilot run`: each turn printed as it streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn
from bot.dialogue.report import LOCK_REASONS, fence
from bot.surfaces.base import waiting_notice


class _PrintSink:
    def __init__(self, out: TextIO):
        self.out = out

    async def delta(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def reset(self) -> None:
        self.out.write("\n  (that reply was invalid; asking again)\n")
        self.out.flush()


class TerminalSurface:
    def __init__(self, out: TextIO):
        self.out = out

    def _say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

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
        label = "Opening" if round == 0 else f"Round {round} of {session.max_rounds}"
        self._say(f"\n── {author} · {label} ──\n")
        return _PrintSink(self.out)

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        self._say("\n")
        if turn.draft is not None:
            d = turn.draft
            self._say(
                f"\n  Draft v{d.version}: {d.title} · {d.duration_seconds}s · {d.size}\n"
                + fence(d.prompt_text)
                + "\n"
            )
        if turn.verdict is not None and turn.verdict.decision == "approve":
            self._say(f"\n  ✔ {turn.author} approves v{turn.verdict.version}\n")

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        self._say(f"\n── {turn.author} (you) ──\n{turn.text}\n")

    async def session_locked(self, session: Session) -> None:
        locked = session.locked
        if locked is None:
            return
        d = locked.draft
        self._say(
            f'\n══ Locked: v{d.version} "{d.title}" ({LOCK_REASONS[locked.reason]}) ══\n'
            + fence(d.prompt_text)
            + "\n"
        )

    async def model_waiting(self, session: Session, seconds: float, reason: str) -> None:
        self._say(f"\n.. {waiting_notice(seconds)} ({reason})\n")

    async def session_paused(self, session: Session) -> None:
        self._say(f"\n!! The session is paused: {session.error}\n")

    async def session_stopped(self, session: Session) -> None:
        self._say(f"\n── Stopped by {session.stopped_by} ──\n")
