"""The turn engine: one agent turn at a time, and the human actions on a session.

The engine holds no state of its own. Given a session it builds the speaking
agent's request from the transcript, streams the reply's message to a sink,
validates the structured reply (one repair call on a bad one), appends the
turn, and decides whether the session locks. A failed turn leaves the
transcript as it was and the session paused, so Retry resumes exactly there.

What a model call can end in, and what the engine does:
- an overload, rate limit, server error or broken stream that outlasted the client's own
  retries: the call is made again with exponential backoff and jitter for up to
  `OutagePolicy.window_seconds`, telling `on_wait` how long each wait is; then it pauses;
- `stop_reason: "max_tokens"`: the call is made once more with twice the budget;
- `stop_reason: "refusal"`: the turn fails at once (kind "refused"), never repaired;
- an invalid reply: one repair call quoting the error (never built from a blank reply).
Every repeat resets the sink first, so the turn's message is written again in the same
place, never posted twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.dialogue import agents, sheets
from bot.dialogue.models import (
    Draft,
    LockedPrompt,
    LockReason,
    Session,
    SessionStatus,
    Speaker,
    Turn,
    utcnow,
)
from bot.llm.base import ChatModel, ModelError, ModelReply, ModelRequest
from bot.llm.streaming import MessageFieldDecoder
from bot.llm.usage import Usage

NO_PROGRESS_LIMIT = 2
# The largest max_tokens a retry of a cut-off reply asks for: the current models' output limit
# (128K tokens on the 5.x models, per their model pages).
MAX_OUTPUT_TOKENS_CAP = 128_000


class SessionError(Exception):
    """An action that the session's state does not allow; the message is for the user."""


class TurnFailed(Exception):
    """A turn that could not be completed. The session is paused, nothing is lost."""

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind  # "invalid" | "truncated" | "refused" | "api" | "persona"


WaitCallback = Callable[[float, str, int | None], Awaitable[None]]
"""Told `(seconds, why)` before the engine waits out an outage and calls the model again."""


@dataclass(frozen=True)
class OutagePolicy:
    """How long a retryable model failure is waited out before the session pauses."""

    window_seconds: float = 120.0
    base_seconds: float = 2.0
    cap_seconds: float = 30.0

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait before retry `attempt` (0-based): doubling from base up to cap, with
        "equal jitter" (half fixed, half random) so many sessions do not retry in step."""
        ceiling: float = min(self.cap_seconds, self.base_seconds * 2.0**attempt)
        return ceiling / 2 + ceiling / 2 * jitter


class TurnSink(Protocol):
    """Where the speaking agent's message goes while it is written."""

    async def delta(self, text: str) -> None: ...

    async def reset(self) -> None:
        """The text so far is void (a repair call starts the message again)."""
        ...


@dataclass(frozen=True)
class TurnResult:
    turn: Turn
    locked: LockedPrompt | None
    model_seconds: float
    engine_seconds: float


class Engine:
    def __init__(
        self,
        *,
        model: ChatModel,
        max_tokens: int = 16_000,
        clock: Callable[[], datetime] = utcnow,
        outage: OutagePolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.model = model
        self.max_tokens = max_tokens
        self.clock = clock
        self.outage = outage or OutagePolicy()
        self.sleep = sleep
        self.jitter = jitter
        self.monotonic = monotonic  # what the outage window is measured by (with `sleep`)

    async def take_turn(
        self,
        session: Session,
        sink: TurnSink | None = None,
        on_wait: WaitCallback | None = None,
    ) -> TurnResult:
        """Advance `session` by one agent turn, in place.

        `on_wait` hears of each wait for an outage to pass (see OutagePolicy).
        Raises TurnFailed (session paused, transcript unchanged) or SessionError.
        """
        started = time.perf_counter()
        if session.status != SessionStatus.RUNNING:
            raise SessionError(f"The session is {session.status.value}; no one speaks now.")
        await self.expand_persona(session, on_wait)
        request = agents.build_request(session, max_tokens=self.max_tokens)
        calls = _Calls(self, session, sink, on_wait)

        async def call(req: ModelRequest) -> ModelReply:
            reply = await calls.call(req)
            if reply.stop_reason == "refusal":
                why = (reply.refusal or "").strip() or "no reason was given"
                raise self._fail(session, f"Claude declined this turn: {why}", "refused")
            return reply

        reply = await call(request)
        try:
            turn = self._make_turn(session, request.agent, reply, calls.usage)
        except agents.ReplyInvalid as first:
            if sink is not None:
                await sink.reset()
            repair = dataclasses.replace(
                request, messages=agents.repair_messages(request, reply.text, str(first))
            )
            reply = await call(repair)
            try:
                turn = self._make_turn(session, request.agent, reply, calls.usage)
            except agents.ReplyInvalid as second:
                raise self._fail(
                    session,
                    f"The {request.agent}'s reply was invalid twice: {second}.",
                    "invalid",
                ) from second
        session.turns.append(turn)
        locked = self._maybe_lock(session, turn)
        elapsed = time.perf_counter() - started
        return TurnResult(
            turn=turn,
            locked=locked,
            model_seconds=calls.model_seconds,
            engine_seconds=max(elapsed - calls.model_seconds, 0.0),
        )

    async def expand_persona(self, session: Session, on_wait: WaitCallback | None = None) -> None:
        """Write a free-text persona's sheet, once, into `session` (nothing to do otherwise).

        One call with the sheet's own schema; an invalid or refused sheet gets one repair
        call. If that fails too, the session is stopped (nothing half-made goes on) with
        the reason in `session.error`, and TurnFailed (kind "persona") is raised. An outage
        that outlasts the window pauses it instead, with the persona still unwritten, so
        Retry writes it then.
        """
        persona = session.persona
        if not persona.pending:
            return
        request = sheets.sheet_request(session, max_tokens=self.max_tokens)
        calls = _Calls(self, session, None, on_wait)

        def parse(reply: ModelReply) -> None:
            if reply.stop_reason == "refusal":
                why = (reply.refusal or "").strip() or "no reason was given"
                raise agents.ReplyInvalid(f"the request was declined ({why})")
            session.persona = sheets.parse_sheet(reply.text, persona.description)

        try:
            reply = await calls.call(request)
            try:
                parse(reply)
            except agents.ReplyInvalid as first:
                repair = dataclasses.replace(
                    request,
                    messages=agents.repair_messages(request, reply.text, str(first)),
                )
                parse(await calls.call(repair))
        except agents.ReplyInvalid as second:
            session.status = SessionStatus.STOPPED
            session.stopped_by = agents.COPILOT_NAME
            session.error = (
                f"No persona could be written from “{sheets.clean(persona.description)}”: "
                f"{second}. Start again with other words, or with a named persona."
            )
            raise TurnFailed(session.error, kind="persona") from second
        finally:
            session.persona_usage = session.persona_usage + calls.usage

    # ---- internals --------------------------------------------------------------------

    def _fail(self, session: Session, message: str, kind: str) -> TurnFailed:
        session.status = SessionStatus.PAUSED
        session.error = message
        return TurnFailed(message, kind=kind)

    def _make_turn(self, session: Session, agent: str, reply: ModelReply, usage: Usage) -> Turn:
        base = {
            "index": len(session.turns),
            "round": session.next_round,
            "usage": usage,
            "model": reply.model,
            "at": self.clock(),
        }
        if agent == "copilot":
            message, out = agents.parse_copilot(reply.text, session)
            draft: Draft | None = None
            latest = session.latest_draft
            if out is not None:
                candidate = agents.make_draft(
                    out,
                    version=(latest.version + 1) if latest else 1,
                    target=session.target,
                )
                # An unchanged draft is no progress, not a new version.
                if latest is None or not candidate.same_content(latest):
                    draft = candidate
            return Turn(
                speaker=Speaker.COPILOT,
                author=agents.COPILOT_NAME,
                text=message,
                draft=draft,
                **base,
            )
        message, verdict = agents.parse_persona(reply.text, session)
        return Turn(
            speaker=Speaker.PERSONA,
            author=session.persona.display_name,
            text=message,
            verdict=verdict,
            **base,
        )

    def _maybe_lock(self, session: Session, turn: Turn) -> LockedPrompt | None:
        latest = session.latest_draft
        if latest is None:
            return None
        if turn.speaker == Speaker.PERSONA and turn.verdict and turn.verdict.decision == "approve":
            return lock(
                session,
                by=session.persona.display_name,
                reason=LockReason.APPROVED,
                at=self.clock(),
            )
        if turn.speaker != Speaker.COPILOT:
            return None
        if turn.round >= session.max_rounds:
            return lock(
                session, by=agents.COPILOT_NAME, reason=LockReason.ROUND_LIMIT, at=self.clock()
            )
        if no_progress_streak(session) >= NO_PROGRESS_LIMIT:
            return lock(
                session, by=agents.COPILOT_NAME, reason=LockReason.NO_PROGRESS, at=self.clock()
            )
        return None


class _Calls:
    """Model calls for one turn (or one persona sheet): an outage waited out with backoff, a
    reply cut at max_tokens tried once with twice the budget. Sums usage and model time.
    A refusal is returned; what it means is the caller's to say."""

    def __init__(
        self,
        engine: Engine,
        session: Session,
        sink: TurnSink | None,
        on_wait: WaitCallback | None,
    ) -> None:
        self.engine = engine
        self.session = session
        self.sink = sink
        self.on_wait = on_wait
        self.usage = Usage()
        self.model_seconds = 0.0

    async def attempt(self, req: ModelRequest) -> ModelReply:
        decoder = _Streamer(self.sink)
        t0 = time.perf_counter()
        try:
            return await self.engine.model.complete(req, decoder.feed)
        finally:
            self.model_seconds += time.perf_counter() - t0 - decoder.sink_seconds

    async def call(self, req: ModelRequest) -> ModelReply:
        engine, session, sink = self.engine, self.session, self.sink
        outage_started: float | None = None
        waits = 0
        widened = False
        while True:
            try:
                reply = await self.attempt(req)
            except ModelError as e:
                if not e.retryable:
                    raise engine._fail(session, f"The model call failed: {e}", "api") from e
                now = engine.monotonic()
                outage_started = now if outage_started is None else outage_started
                delay = engine.outage.delay(waits, engine.jitter())
                waited = now - outage_started
                if waited + delay > engine.outage.window_seconds:
                    after = f" (still failing after {waited:.0f} s of retries)" if waits else ""
                    raise engine._fail(session, f"The model call failed: {e}{after}", "api") from e
                waits += 1
                if sink is not None:
                    await sink.reset()
                if self.on_wait is not None:
                    await self.on_wait(delay, str(e), e.status)
                slept = time.perf_counter()
                await engine.sleep(delay)
                self.model_seconds += time.perf_counter() - slept  # waiting on the model
                continue
            self.usage = self.usage + reply.usage
            if reply.stop_reason == "max_tokens":
                if not widened and req.max_tokens < MAX_OUTPUT_TOKENS_CAP:
                    # Thinking and text share the budget; one more try with twice it.
                    widened = True
                    wider = min(req.max_tokens * 2, MAX_OUTPUT_TOKENS_CAP)
                    req = dataclasses.replace(req, max_tokens=wider)
                    if sink is not None:
                        await sink.reset()
                    continue
                raise engine._fail(
                    session,
                    "The reply was cut off at the output token limit "
                    f"({req.max_tokens} tokens) before it was complete.",
                    "truncated",
                )
            return reply


class _Streamer:
    """Feeds raw JSON deltas through the message decoder to the sink, timing the sink."""

    def __init__(self, sink: TurnSink | None):
        self.sink = sink
        self.decoder = MessageFieldDecoder()
        self.sink_seconds = 0.0

    async def feed(self, raw: str) -> None:
        if self.sink is None:
            return
        text = self.decoder.feed(raw)
        if text:
            t0 = time.perf_counter()
            await self.sink.delta(text)
            self.sink_seconds += time.perf_counter() - t0


def no_progress_streak(session: Session) -> int:
    """Copilot turns in a row, newest first, that brought no new draft after one existed."""
    streak = 0
    seen_draft_before = [False] * len(session.turns)
    seen = False
    for i, t in enumerate(session.turns):
        seen_draft_before[i] = seen
        seen = seen or t.draft is not None
    for i in range(len(session.turns) - 1, -1, -1):
        t = session.turns[i]
        if t.speaker != Speaker.COPILOT:
            continue
        if t.draft is None and seen_draft_before[i]:
            streak += 1
        else:
            break
    return streak


# ---- human actions on a session --------------------------------------------------------


def lock(
    session: Session,
    *,
    by: str,
    reason: LockReason,
    at: datetime | None = None,
    version: int | None = None,
) -> LockedPrompt:
    """Lock a draft, byte for byte: `version`, or the latest. Nobody speaks after this.

    A person's Lock carries the version they saw: a turn in flight when they
    pressed it may since have written a newer one, which stays unlocked.
    """
    if session.finished:
        raise SessionError(f"The session is already {session.status.value}.")
    if version is None:
        chosen = session.latest_draft
        if chosen is None:
            raise SessionError("There is no draft to lock yet.")
    else:
        chosen = next((d for d in session.drafts if d.version == version), None)
        if chosen is None:
            raise SessionError(f"There is no draft v{version} to lock.")
    locked = LockedPrompt(draft=chosen, locked_by=by, locked_at=at or utcnow(), reason=reason)
    session.locked = locked
    session.status = SessionStatus.LOCKED
    session.error = None
    return locked


def stop(session: Session, *, by: str) -> None:
    if session.finished:
        raise SessionError(f"The session is already {session.status.value}.")
    session.status = SessionStatus.STOPPED
    session.stopped_by = by


def resume(session: Session) -> None:
    if session.status != SessionStatus.PAUSED:
        raise SessionError(f"The session is {session.status.value}, not paused; nothing to retry.")
    session.status = SessionStatus.RUNNING
    session.error = None


def add_interjection(
    session: Session,
    *,
    author: str,
    text: str,
    source_id: str | None = None,
    at: datetime | None = None,
    max_chars: int = 4000,
) -> Turn:
    """A human's words become a turn that both agents see; the next speaker answers it."""
    if session.finished:
        raise SessionError(f"The session is {session.status.value}; it no longer listens.")
    text = text.strip()
    if not text:
        raise SessionError("An empty message is not an interjection.")
    if len(text) > max_chars:
        raise SessionError(
            f"That message is {len(text)} characters; an interjection is at most {max_chars}."
        )
    if source_id is not None and any(t.source_id == source_id for t in session.turns):
        raise SessionError("That message was already heard.")
    turn = Turn(
        index=len(session.turns),
        speaker=Speaker.HUMAN,
        author=author,
        text=text,
        round=session.next_round,
        at=at or utcnow(),
        source_id=source_id,
    )
    session.turns.append(turn)
    return turn
