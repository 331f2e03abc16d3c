"""The Slack surface: a session is a thread, each turn one or more messages in it.

Decide, save, then show. While the model writes a turn, its message is shown
best effort (`_Interim`: a tagged placeholder post, then updates at most once
a second); nothing there can fail the turn. Once the turn is saved, the
worker runs the saved steps (the outbox, see `bot.driver`), and each maps to
one method here: the final render of the turn, the reactions, the root's
status, and at the lock the locked reply, the pin, the cross-post and the
report upload. Those steps are idempotent and run from the saved session:

* every message is tagged with metadata (session, turn, part) when it is
  created (`chat.postMessage`; `chat.startStream` cannot carry metadata, so
  the app does not use it), and recorded in the post ledger right after; a
  step that finds no record, after a crash or a lost response, looks for the
  tag in the thread before it posts (`_find_tagged`), so nothing is posted
  twice and nothing is left orphaned;
* a rate limit (429) is waited out for its full `Retry-After`, however long,
  and taught to the shared per-channel limiter so every worker backs off;
  server errors and dropped connections are retried with capped backoff
  (`_call`); none of these ever fails the step;
* a refusal Slack will not take back (`not_in_channel`, `missing_scope`,
  `is_archived`, `channel_not_found`, ...) is recorded and skipped, with one
  line in the thread saying what a person can do. Where membership is the
  cause and the channel is public, the bot first joins it (`conversations.join`).

All model and human text is escaped (see `bot.slack.blocks`), so nothing the
models write can ping anyone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.config import Settings
from bot.dialogue.agents import COPILOT_ICON
from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn
from bot.slack.blocks import (
    METADATA_EVENT,
    STREAM_UPDATE_MIN_INTERVAL_S,
    TURN_CROSSPOST,
    TURN_LOCKED,
    TURN_PAUSED,
    TURN_REPORT,
    TURN_STOPPED,
    USERNAME_MAX_CHARS,
    MessagePart,
    context_block,
    crosspost_parts,
    escape,
    interrupted_part,
    locked_parts,
    message_metadata,
    paused_part,
    preview_part,
    report_content,
    report_filename,
    report_title,
    root_blocks,
    root_text,
    stopped_part,
    truncate,
    turn_parts,
)
from bot.slack.client import retry_after_seconds_of
from bot.slack.people import People
from bot.slack.privacy import Places, decide_at_lock
from bot.surfaces.base import waiting_notice
from state import State
from state.updates import MIN_INTERVAL_S, UpdateBudget

log = logging.getLogger("sora.slack")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
T = TypeVar("T")

REACTION_HEARD = "white_check_mark"
REPLIES_PAGE = 200
HISTORY_PAGES = 5  # a cross-post is looked for among the prompts channel's latest messages
# Forget a message's last update time once it cannot matter any more.
_UPDATE_TIMES_MAX = 10_000
# Server errors and dropped connections: wait this long, doubling, at most the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# The interim placeholder waits this long at most for the channel's post limiter.
INTERIM_WAIT_MAX_S = 2.0
# The chat.update budget's key: one bot token, one workspace.
WORKSPACE = "workspace"
# A turn counts as being written for this long after its last interim update (renewed
# while it is), so a worker that dies stops counting soon after.
STREAM_CLAIM_S = 60.0
# An interim update Slack has not answered in this long is given up (the model goes on).
INTERIM_TIMEOUT_S = 5.0

# Ledger "turns" of this module's own records (see bot.slack.blocks for the others).
TURN_PIN = -6  # part 0: the pinned message's ts
TURN_NOTE = -7  # a "what a person can do" line; its part is the step it explains
TURN_SKIPPED = -8  # a step Slack refused for good; its part is the step's ledger turn (negated)

# Refusals no retry fixes: the step is recorded as skipped.
PERMANENT = frozenset(
    {
        "not_in_channel",
        "missing_scope",
        "is_archived",
        "channel_not_found",
        "restricted_action",
        "not_allowed_token_type",
        "method_not_supported_for_channel_type",
        "ekm_access_denied",
        "team_access_not_granted",
        "access_denied",
        "no_permission",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
    }
)
# Connection-level failures: the request may or may not have been carried out.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)
SLACK_OR_CONNECTION: tuple[type[Exception], ...] = (SlackApiError, *CONNECTION_ERRORS)
# What may go wrong with a best-effort interim update: it is then skipped.
INTERIM_ERRORS: tuple[type[Exception], ...] = (*SLACK_OR_CONNECTION, RedisError)


def slack_error(e: SlackApiError) -> str:
    """The `error` code of a Slack answer ("" if it has none, e.g. an HTML 5xx page)."""
    try:
        return str(e.response.get("error") or "")
    except Exception:  # a body that is not JSON
        return ""


def transient(e: SlackApiError) -> bool:
    """A rate limit or server fault (not a refusal)."""
    status = int(e.response.status_code)
    return status == 429 or status >= 500


class Refused(Exception):
    """Slack refused a step for good (`error` is its code); the step is skipped."""

    def __init__(self, error: str, channel: str) -> None:
        super().__init__(f"{error} in {channel}")
        self.error = error
        self.channel = channel


@dataclass(frozen=True)
class _Thread:
    channel: str
    ts: str


def _thread(session: Session) -> _Thread:
    o = session.origin
    if not o.channel_id or not o.thread_ts:
        raise ValueError(f"session {session.id} has no Slack thread (origin {o.surface})")
    return _Thread(o.channel_id, o.thread_ts)


def _agent_turn_number(session: Session, turn: Turn) -> int:
    """The number (0, 1, ...) of agent turn `turn`: its job's turn and its ledger key."""
    return sum(1 for t in session.turns[: turn.index] if t.speaker != Speaker.HUMAN)


def _tag_of(message: Mapping[str, Any]) -> tuple[str, int, int] | None:
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    part, turn = payload.get("part"), payload.get("turn")
    if meta.get("event_type") != METADATA_EVENT or not isinstance(part, int):
        return None
    if not isinstance(turn, int):
        return None
    return str(payload.get("session")), turn, part


class SlackSurface:
    """Shows sessions in their Slack threads. One instance serves every session of a process."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        state: State,
        settings: Settings,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        people: People | None = None,
        workspace: str = WORKSPACE,
    ):
        self.client = client
        # Whose chat.update budget this surface spends: the workspace's team id in OAuth
        # mode (one surface per workspace), one shared name with a single bot token.
        self.workspace = workspace
        self.state = state
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.people = people or People(client)
        self.places = Places()
        self._live: dict[str, _Interim] = {}  # session id -> the turn being written
        self._updated: dict[str, float] = {}  # message ts -> clock of its last chat.update
        # Slack's Tier 3: chat.update calls a minute for the whole workspace (this app's one
        # bot token), shared by every worker through Redis.
        self.budget = UpdateBudget(
            state.redis, state.keys, per_minute=settings.slack_updates_per_minute, sleep=sleep
        )
        # Interim updates run inside the model's stream: one attempt each, no retry of
        # any kind (a 429, a server error, a dropped connection), on the same connections.
        self.interim_client = AsyncWebClient(
            token=client.token,
            base_url=client.base_url,
            session=client.session,
            logger=client.logger,
            retry_handlers=[],
        )

    # ---- while the model writes: best effort, outside the outbox ------------------------

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
        where = _thread(session)
        icon = COPILOT_ICON if speaker == Speaker.COPILOT else session.persona.icon_emoji
        interim = _Interim(
            self,
            session_id=session.id,
            where=where,
            turn=turn,
            username=truncate(author, USERNAME_MAX_CHARS),
            icon=icon,
            parts=posted,
        )
        self._live[session.id] = interim
        if 0 not in interim.parts and redo:
            # An earlier attempt may have posted without recording it (its worker died).
            try:
                interim.parts.update(await self._find_tagged(session.id, where, turn))
            except SLACK_OR_CONNECTION as e:
                log.info(
                    "session %s: cannot look for turn %s's message now: %s", session.id, turn, e
                )
                interim.unknown = True
                return interim  # no placeholder: the final render looks again
        if 0 not in interim.parts:
            await interim.open()
        return interim

    # ---- the steps after a save (see bot.driver): idempotent, retried alone -------------

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        """The final render of a saved turn: its message(s), then the root's status."""
        number = _agent_turn_number(session, turn)
        where = _thread(session)
        live = self._live.get(session.id)
        if live is not None and live.turn == number:
            self._live.pop(session.id, None)
            await live.close()
        else:
            live = None
        parts = dict(live.parts) if live is not None else {}
        parts.update(await self.state.posts.get(session.id, number))
        if 0 not in parts and (live is None or live.unknown):
            # Nothing recorded, and no certainty that nothing was posted: look first.
            parts.update(await self._find_tagged_or_none(session.id, where, number))
        username = truncate(turn.author, USERNAME_MAX_CHARS)
        icon = COPILOT_ICON if turn.speaker == Speaker.COPILOT else session.persona.icon_emoji
        final = turn_parts(session, turn)
        try:
            for k, part in enumerate(final):
                await self._put(session.id, where, number, k, part, parts.get(k), username, icon)
            for k in sorted(parts):
                if k >= len(final):
                    await self._delete(where.channel, parts[k], number)
        except SlackApiError as e:
            # Refused for good (the thread's channel is gone or archived): the turn
            # is saved, and no retry would show it.
            log.error("session %s: turn %s cannot be shown: %s", session.id, number, e)
            return
        if not session.finished:  # else the lock or stop step updates the root
            await self.update_root(session)

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        if not turn.source_id or not session.origin.channel_id:
            return
        channel, ts = session.origin.channel_id, turn.source_id
        try:
            await self._call(
                channel,
                lambda: self.client.reactions_add(
                    channel=channel, timestamp=ts, name=REACTION_HEARD
                ),
            )
        except SlackApiError as e:
            if slack_error(e) not in ("already_reacted", "message_not_found"):
                log.warning("session %s: cannot react to %s: %s", session.id, ts, e)

    async def session_locked(self, session: Session) -> None:
        """The lock's steps: locked reply, pin, report, root, cross-post; each once, each alone.

        The cross-post goes last: it waits for the prompts channel's post rate, which every
        session's lock shares, so it must delay nothing in this thread.
        """
        await self._abandon_live(session.id)
        if session.locked is None:
            return
        where = _thread(session)
        ledger = await self.state.posts.all(session.id)
        await self._name_starter(session)
        decision = await decide_at_lock(self.places, self.client, session, self.settings)
        session.origin = session.origin.model_copy(update={"place": decision.place})
        try:
            reply = await self._post_parts(
                session.id,
                where.channel,
                TURN_LOCKED,
                locked_parts(session, decision.stays),
                ledger.get(TURN_LOCKED, {}),
                thread_ts=where.ts,
            )
        except SlackApiError as e:
            log.error(
                "session %s: the locked prompt cannot be shown in its thread: %s", session.id, e
            )
            return  # the prompt is saved and in the library; the thread cannot take more
        await self._lock_step(
            session, where, ledger, TURN_PIN, lambda: self._pin(session, where, reply[0])
        )
        await self._lock_step(
            session, where, ledger, TURN_REPORT, lambda: self._upload_report(session, where)
        )
        await self.update_root(session)
        channel = decision.collect_in
        if channel:
            await self._lock_step(
                session,
                where,
                ledger,
                TURN_CROSSPOST,
                lambda: self._cross_post(session, where, channel),
            )

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        """While the engine waits out a Claude outage: shown on the root (best effort)."""
        where = _thread(session)
        part = MessagePart(
            tail=tuple(root_blocks(session, notice=waiting_notice(seconds, status))),
            fallback=root_text(session),
        )
        try:
            await self.update(where.channel, where.ts, part)
        except SLACK_OR_CONNECTION as e:
            log.info("session %s: cannot show the wait on the root: %s", session.id, e)

    async def session_paused(self, session: Session) -> None:
        where = _thread(session)
        failed_turn = session.next_turn
        live = self._live.pop(session.id, None)
        if live is not None:
            await live.abandon()
        else:
            # Set aside by another process (a dead worker's turn): its message, if
            # any, would otherwise show a half-written turn forever.
            earlier = (await self.state.posts.get(session.id, failed_turn)).get(0)
            if earlier is not None:
                await self.mark_interrupted(session.id, where, failed_turn, earlier)
        # One message per failed turn: a repeat (a redo, or the same turn failing
        # again after Retry) updates it with the latest error instead.
        part = paused_part(session)
        meta = message_metadata(session.id, TURN_PAUSED, failed_turn)
        ts = (await self.state.posts.get(session.id, TURN_PAUSED)).get(failed_turn)
        try:
            if ts is not None:
                earlier = ts
                try:
                    await self._call(
                        where.channel, lambda: self.update(where.channel, earlier, part, meta)
                    )
                except SlackApiError as e:
                    if slack_error(e) != "message_not_found":
                        raise
                    ts = None
            if ts is None:
                found = await self._find_tagged_or_none(session.id, where, TURN_PAUSED)
                ts = found.get(failed_turn)
                if ts is None:
                    ts = await self.post(where.channel, part, meta, thread_ts=where.ts)
                else:
                    await self._call(
                        where.channel, lambda: self.update(where.channel, ts, part, meta)
                    )
                await self.state.posts.record(session.id, TURN_PAUSED, failed_turn, ts)
        except SlackApiError as e:
            log.error("session %s: cannot say in its thread that it paused: %s", session.id, e)
        await self.update_root(session)

    async def session_stopped(self, session: Session) -> None:
        await self._abandon_live(session.id)
        where = _thread(session)
        try:
            await self._post_parts(
                session.id,
                where.channel,
                TURN_STOPPED,
                [stopped_part(session)],
                await self.state.posts.get(session.id, TURN_STOPPED),
                thread_ts=where.ts,
            )
        except SlackApiError as e:
            log.error("session %s: cannot say in its thread that it stopped: %s", session.id, e)
        await self.update_root(session)

    # ---- Slack calls -------------------------------------------------------------------

    async def _call(
        self, channel: str | None, call: Callable[[], Awaitable[T]], *, posting: bool = False
    ) -> T:
        """`call`, retried until Slack answers it: a 429 after its Retry-After (any
        length), a server error or a dropped connection with capped backoff. A
        refusal raises. `posting`: the call makes a message (a file share), so a
        429 teaches the channel's limiter, and an outcome that is unknown (server
        error, no answer) raises rather than repeat it blindly."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                return await call()
            except SlackApiError as e:
                if int(e.response.status_code) == 429:
                    await self._rate_limited(channel, e, posting=posting)
                    continue
                if int(e.response.status_code) < 500 or posting:
                    raise
                log.info("Slack server error (retrying in %.1f s): %s", delay, e)
            except CONNECTION_ERRORS as e:
                if posting:
                    raise
                log.info("Slack connection failed (retrying in %.1f s): %r", delay, e)
            await self.sleep(delay + random.uniform(0, delay / 4))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _rate_limited(self, channel: str | None, e: SlackApiError, *, posting: bool) -> None:
        """Wait out a 429's Retry-After. For a post, every worker's limiter of that
        channel learns it, so they all hold back instead of each hitting it."""
        wait = retry_after_seconds_of(e.response.headers)
        log.info("Slack rate limit%s: waiting %.1f s", f" in {channel}" if channel else "", wait)
        metrics.slack_rate_limit_wait(wait)
        if posting and channel:
            await self.state.ratelimit.hold(channel, wait)
        await self.sleep(wait + random.uniform(0, 0.25))

    async def post(
        self,
        channel: str,
        part: MessagePart,
        metadata: dict[str, Any],
        *,
        thread_ts: str | None = None,
        username: str | None = None,
        icon_emoji: str | None = None,
    ) -> str:
        """Post one tagged message (after the channel's rate limiter); its ts.

        Never posted twice: when the outcome of an attempt is unknown (a dropped
        connection, a lost answer, a server error), the tag is looked for before
        the next attempt. A 429 waits its Retry-After, however long. A refusal raises.
        """
        payload = metadata["event_payload"]
        delay = BACKOFF_FIRST_S
        while True:
            await self.state.ratelimit.wait(channel)
            try:
                response = await self.client.chat_postMessage(
                    channel=channel,
                    thread_ts=thread_ts,
                    text=part.text,
                    blocks=part.blocks or None,
                    metadata=metadata,
                    username=username,
                    icon_emoji=icon_emoji,
                    unfurl_links=False,
                    unfurl_media=False,
                )
                return str(response["ts"])
            except SlackApiError as e:
                if int(e.response.status_code) == 429:
                    await self._rate_limited(channel, e, posting=True)
                    continue
                if int(e.response.status_code) < 500:
                    raise
                log.info("post to %s: server error, looking for it before retrying: %s", channel, e)
            except CONNECTION_ERRORS as e:
                log.info("post to %s: no answer, looking for it before retrying: %r", channel, e)
            await self.sleep(delay + random.uniform(0, delay / 4))
            delay = min(delay * 2, BACKOFF_MAX_S)
            found = await self._find_post(
                channel,
                thread_ts,
                str(payload["session"]),
                int(payload["turn"]),
                int(payload["part"]),
            )
            if found is not None:
                return found

    async def update(
        self,
        channel: str,
        ts: str,
        part: MessagePart,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Update a message that must show this (a final render, the root's status).

        Waits first if it was updated less than a second ago, then for a call of the
        workspace's chat.update budget (`state.updates`), so that every worker
        together stays within Slack's Tier 3.
        """
        wait = self.update_wait(ts)
        if wait > 0:
            await self.sleep(wait)
        metrics.update_budget_wait(await self.budget.wait_for(self.workspace))
        await self.client.chat_update(
            channel=channel, ts=ts, text=part.text, blocks=part.blocks, metadata=metadata
        )
        self.mark_updated(ts)

    def update_wait(self, ts: str) -> float:
        """Seconds until message `ts` may be updated again (Slack: once a second)."""
        last = self._updated.get(ts)
        if last is None:
            return 0.0
        return max(0.0, STREAM_UPDATE_MIN_INTERVAL_S - (self.clock() - last))

    def mark_updated(self, ts: str) -> None:
        now = self.clock()
        self._updated[ts] = now
        if len(self._updated) > _UPDATE_TIMES_MAX:
            cutoff = now - STREAM_UPDATE_MIN_INTERVAL_S
            self._updated = {k: v for k, v in self._updated.items() if v > cutoff}

    async def update_root(self, session: Session) -> None:
        """Show the session's round, tokens, status and buttons on the thread root.

        Waits out rate limits; a refusal is only logged (the root may not be the
        app's to edit: a session started from someone's message).
        """
        where = _thread(session)
        part = MessagePart(tail=tuple(root_blocks(session)), fallback=root_text(session))
        try:
            await self._call(where.channel, lambda: self.update(where.channel, where.ts, part))
        except SlackApiError as e:
            log.warning("session %s: cannot update the thread root: %s", session.id, e)

    # ---- finding posts by their tag ------------------------------------------------------

    async def _find_tagged(self, sid: str, where: _Thread, turn: int) -> dict[int, str]:
        """Messages of `turn` in the thread, found by their tag, recorded in the ledger."""
        found: dict[int, str] = {}
        cursor: str | None = None
        while True:
            page = await self._member(
                where.channel,
                lambda c=cursor: self.client.conversations_replies(  # type: ignore[misc]
                    channel=where.channel,
                    ts=where.ts,
                    include_all_metadata=True,
                    limit=REPLIES_PAGE,
                    cursor=c,
                ),
            )
            for m in page.get("messages") or []:
                tag = _tag_of(m)
                if tag is not None and tag[0] == sid and tag[1] == turn:
                    found.setdefault(tag[2], str(m["ts"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        for part, ts in sorted(found.items()):
            await self.state.posts.record(sid, turn, part, ts)
        return found

    async def _find_tagged_or_none(self, sid: str, where: _Thread, turn: int) -> dict[int, str]:
        try:
            return await self._find_tagged(sid, where, turn)
        except SlackApiError as e:
            # Cannot read the thread (not a member, and joining is refused): post,
            # accepting the small risk that a crashed attempt's message stays.
            log.warning("session %s: cannot look for turn %s's messages: %s", sid, turn, e)
            return {}

    async def _find_post(
        self, channel: str, thread_ts: str | None, sid: str, turn: int, part: int
    ) -> str | None:
        """The ts of the message tagged (sid, turn, part), if it was posted."""
        try:
            if thread_ts is not None:
                found = await self._find_tagged(sid, _Thread(channel, thread_ts), turn)
                return found.get(part)
            cursor: str | None = None
            for _ in range(HISTORY_PAGES):
                page = await self._member(
                    channel,
                    lambda c=cursor: self.client.conversations_history(  # type: ignore[misc]
                        channel=channel, include_all_metadata=True, limit=100, cursor=c
                    ),
                )
                for m in page.get("messages") or []:
                    if _tag_of(m) == (sid, turn, part):
                        return str(m["ts"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as e:
            log.warning("cannot look for an unanswered post in %s: %s", channel, e)
        return None

    # ---- membership and refusals ---------------------------------------------------------

    async def _member(
        self, channel: str, call: Callable[[], Awaitable[T]], *, posting: bool = False
    ) -> T:
        """`call` (see `_call`); on `not_in_channel`, join the channel and call again.

        Slack: `chat:write.public` posts in a public channel without joining, but
        history reads, pins and file shares need membership (`channels:join`).
        """
        try:
            return await self._call(channel, call, posting=posting)
        except SlackApiError as e:
            if slack_error(e) != "not_in_channel":
                raise
            refusal = e
        log.info("joining %s to finish a step there", channel)
        try:
            await self._call(channel, lambda: self.client.conversations_join(channel=channel))
        except SlackApiError as join_error:
            # Private, archived, or no channels:join scope: what a person can do is
            # still to invite the bot, so the step reports the membership refusal.
            log.info("cannot join %s: %s", channel, join_error)
            raise refusal from join_error
        return await self._call(channel, call, posting=posting)

    async def _lock_step(
        self,
        session: Session,
        where: _Thread,
        ledger: Mapping[int, Mapping[int, str]],
        key: int,
        run: Callable[[], Awaitable[None]],
    ) -> None:
        """One step of the lock, unless done or skipped before; a refusal is recorded
        as skipped, and the thread says in one line what a person can do."""
        if ledger.get(key) or -key in ledger.get(TURN_SKIPPED, {}):
            return
        try:
            await run()
        except SlackApiError as e:
            error = slack_error(e) or f"HTTP {e.response.status_code}"
            log.warning("session %s: lock step %s refused: %s", session.id, key, error)
            await self.state.posts.record(session.id, TURN_SKIPPED, -key, error)
            await self._note(session, where, key, _what_to_do(key, error, self.settings))

    async def _note(self, session: Session, where: _Thread, key: int, text: str) -> None:
        """One line in the thread, once per step, saying why a step was skipped."""
        if (await self.state.posts.get(session.id, TURN_NOTE)).get(-key):
            return
        part = MessagePart(tail=(context_block(text),), fallback=text)
        try:
            ts = await self.post(
                where.channel,
                part,
                message_metadata(session.id, TURN_NOTE, -key),
                thread_ts=where.ts,
            )
        except SlackApiError as e:
            log.warning("session %s: cannot post a note in its thread: %s", session.id, e)
            return
        await self.state.posts.record(session.id, TURN_NOTE, -key, ts)

    # ---- the lock's steps ---------------------------------------------------------------

    async def _post_parts(
        self,
        sid: str,
        channel: str,
        turn: int,
        parts: list[MessagePart],
        posted: Mapping[int, str],
        *,
        thread_ts: str | None,
    ) -> dict[int, str]:
        """Post the parts the ledger does not have yet (looking for their tags first
        when some are missing: a crash may have come between a post and its record)."""
        out = dict(posted)
        if len(out) < len(parts) and thread_ts is not None:
            out.update(await self._find_tagged_or_none(sid, _Thread(channel, thread_ts), turn))
        for k, part in enumerate(parts):
            if k in out:
                continue
            meta = message_metadata(sid, turn, k)
            out[k] = await self.post(channel, part, meta, thread_ts=thread_ts)
            await self.state.posts.record(sid, turn, k, out[k])
        return out

    async def _pin(self, session: Session, where: _Thread, ts: str) -> None:
        try:
            await self._member(
                where.channel, lambda: self.client.pins_add(channel=where.channel, timestamp=ts)
            )
        except SlackApiError as e:
            if slack_error(e) != "already_pinned":
                raise
        await self.state.posts.record(session.id, TURN_PIN, 0, ts)

    async def _name_starter(self, session: Session) -> None:
        """Put the starter's display name in the session, for the cross-post and the report.

        `/sora` stores the handle its payload carries and leaves this Slack call
        out of the ack's path; the lock is the first place a name is shown. A
        failed lookup keeps the handle.
        """
        origin = session.origin
        if not origin.user_id:
            return
        person = await self.people.get(origin.user_id)
        if person.name != origin.user_id:
            session.origin = origin.model_copy(update={"user_name": person.name})

    async def _cross_post(self, session: Session, where: _Thread, channel: str) -> None:
        link = await self._call(
            where.channel,
            lambda: self.client.chat_getPermalink(channel=where.channel, message_ts=where.ts),
        )
        parts = crosspost_parts(session, str(link["permalink"]))
        ledger = await self.state.posts.get(session.id, TURN_CROSSPOST)
        for k, part in enumerate(parts):
            if k in ledger:
                continue
            meta = message_metadata(session.id, TURN_CROSSPOST, k)
            ts = await self.post(channel, part, meta)
            await self.state.posts.record(session.id, TURN_CROSSPOST, k, ts)

    async def _upload_report(self, session: Session, where: _Thread) -> None:
        """Upload the report into the thread, once.

        Slack's external upload: get an upload URL (a file id), send the bytes,
        then complete, which shares the file as a message. The file id is
        recorded before the share, so an attempt after a crash or a lost answer
        looks for that file's message in the thread instead of sharing twice.
        """
        ledger = await self.state.posts.get(session.id, TURN_REPORT)
        pending = ledger.get(1)
        if pending is not None and await self._file_shared(where, pending):
            await self.state.posts.record(session.id, TURN_REPORT, 0, pending)
            return
        content = report_content(session)
        filename = report_filename(session)
        got = await self._call(
            where.channel,
            lambda: self.client.files_getUploadURLExternal(filename=filename, length=len(content)),
        )
        file_id, url = str(got["file_id"]), str(got["upload_url"])
        await self.state.posts.record(session.id, TURN_REPORT, 1, file_id)
        await self._send_bytes(url, content, filename)
        files: list[dict[str, str | None]] = [{"id": file_id, "title": report_title(session)}]
        delay = BACKOFF_FIRST_S
        while True:
            # The share is a message in the thread: it takes a post token too.
            await self.state.ratelimit.wait(where.channel)
            try:
                await self._member(
                    where.channel,
                    lambda: self.client.files_completeUploadExternal(
                        files=files, channel_id=where.channel, thread_ts=where.ts
                    ),
                    posting=True,
                )
                break
            except SlackApiError as e:
                if int(e.response.status_code) < 500:
                    raise
            except CONNECTION_ERRORS as e:
                log.info("report share: no answer, looking for it: %r", e)
            await self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            if await self._file_shared(where, file_id):
                break
        await self.state.posts.record(session.id, TURN_REPORT, 0, file_id)

    async def _send_bytes(self, url: str, content: bytes, filename: str) -> None:
        """POST the file's bytes to its upload URL (safe to repeat: same file id)."""
        delay = BACKOFF_FIRST_S
        while True:
            session = self.client.session
            own = session is None or session.closed
            http = aiohttp.ClientSession() if own else session
            assert http is not None
            try:
                async with http.post(url, data=content) as res:
                    if res.status < 500:
                        if res.status >= 400:
                            raise SlackApiError(  # type: ignore[no-untyped-call]
                                f"upload refused: HTTP {res.status}", _Answer(res.status)
                            )
                        return
                    log.info("upload: HTTP %s, retrying", res.status)
            except CONNECTION_ERRORS as e:
                log.info("upload: connection failed, retrying: %r", e)
            finally:
                if own:
                    await http.close()
            await self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _file_shared(self, where: _Thread, file_id: str) -> bool:
        """Whether file `file_id` is already shared as a message in the thread."""
        try:
            page_cursor: str | None = None
            while True:
                page = await self._member(
                    where.channel,
                    lambda c=page_cursor: self.client.conversations_replies(  # type: ignore[misc]
                        channel=where.channel, ts=where.ts, limit=REPLIES_PAGE, cursor=c
                    ),
                )
                for m in page.get("messages") or []:
                    if any(f.get("id") == file_id for f in m.get("files") or []):
                        return True
                page_cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not page_cursor:
                    return False
        except SlackApiError as e:
            log.warning("cannot look for the shared report in %s: %s", where.channel, e)
            return False

    # ---- helpers -------------------------------------------------------------------------

    async def _put(
        self,
        sid: str,
        where: _Thread,
        turn: int,
        k: int,
        part: MessagePart,
        ts: str | None,
        username: str,
        icon: str,
    ) -> str:
        """Part `k` of a turn: update its message, or post it if there is none."""
        meta = message_metadata(sid, turn, k)
        if ts is not None:
            earlier = ts
            try:
                await self._call(
                    where.channel, lambda: self.update(where.channel, earlier, part, meta)
                )
                return earlier
            except SlackApiError as e:
                if slack_error(e) != "message_not_found":
                    raise
                # Someone deleted it: post it again.
        ts = await self.post(
            where.channel, part, meta, thread_ts=where.ts, username=username, icon_emoji=icon
        )
        await self.state.posts.record(sid, turn, k, ts)
        return ts

    async def _delete(self, channel: str, ts: str, turn: int) -> None:
        """An earlier attempt's part that the final text no longer needs."""
        try:
            await self._call(channel, lambda: self.client.chat_delete(channel=channel, ts=ts))
        except SlackApiError as e:
            if slack_error(e) != "message_not_found":
                log.warning("cannot delete the extra part %s of turn %s: %s", ts, turn, e)

    async def mark_interrupted(self, session_id: str, where: _Thread, turn: int, ts: str) -> None:
        """Say in a failed turn's message that Retry writes it again (best effort)."""
        try:
            await self._call(
                where.channel,
                lambda: self.update(
                    where.channel, ts, interrupted_part(), message_metadata(session_id, turn, 0)
                ),
            )
        except SlackApiError as e:
            log.info("cannot mark the failed turn's message %s: %s", ts, e)

    async def _abandon_live(self, session_id: str) -> None:
        message = self._live.pop(session_id, None)
        if message is not None:
            await message.abandon()


class _Answer:
    """The minimal response a SlackApiError needs, for an upload URL's HTTP error."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return default


def _what_to_do(key: int, error: str, settings: Settings) -> str:
    """The one line the thread shows when a lock step is refused for good."""
    what = {
        TURN_PIN: "pin the prompt",
        TURN_CROSSPOST: f"post this prompt to <#{settings.prompts_channel}>",
        TURN_REPORT: "upload the session report",
    }.get(key, "finish a step")
    where = f"<#{settings.prompts_channel}>" if key == TURN_CROSSPOST else "this channel"
    if error in ("not_in_channel", "method_not_supported_for_channel_type", "channel_not_found"):
        gets = {
            TURN_CROSSPOST: "prompts collected there",
            TURN_REPORT: "the report here",
        }.get(key, "prompts pinned here")
        fix = f"Invite @Sora Copilot to {where} to get {gets}."
    elif error == "is_archived":
        fix = f"{where.capitalize()} is archived" + (
            "; set PROMPTS_CHANNEL to another channel." if key == TURN_CROSSPOST else "."
        )
    elif error == "missing_scope":
        fix = "The app lacks a permission; an admin can reinstall it from slack-manifest.yml."
    else:
        fix = "The prompt is locked and in the library either way."
    return f":information_source: I could not {what} (`{escape(error)}`). {fix}"


class _Interim:
    """The message of one agent turn while the model writes it: best effort.

    A placeholder is posted (tagged, and recorded in the post ledger), then
    updated with the text so far, so that every member of the channel sees
    the turn grow (Slack's chat streaming is live only for one recipient in a
    channel, and carries no metadata tag). Each update draws from the
    workspace's chat.update budget (`state.updates`) and comes at most every
    `budget.interval(n)` seconds, n being the turns written at once in the
    workspace: one turn alone updates every second, twenty share the budget.
    Nothing here raises, waits on Slack or retries: no call left means the
    update is skipped, and a 429 skips it too (the worker's client does not
    retry 429s), so reading the model's stream never stalls. A failure only
    means the final render (a step after the save) posts or updates the
    message instead. `unknown` says a post may have gone out without an
    answer, so the final render looks for its tag first.
    """

    def __init__(
        self,
        surface: SlackSurface,
        *,
        session_id: str,
        where: _Thread,
        turn: int,
        username: str,
        icon: str,
        parts: Mapping[int, str],
    ):
        self.surface = surface
        self.session_id = session_id
        self.where = where
        self.turn = turn
        self.username = username
        self.icon = icon
        self.parts = dict(parts)  # part -> ts
        self.unknown = False
        self.text = ""  # the raw message so far
        self.shown: str | None = None  # text of the last interim update
        self.next_try = 0.0  # clock before which no interim update is tried
        self.counted = False  # whether this turn counts among the workspace's streams

    @property
    def key(self) -> str:
        return f"{self.session_id}:{self.turn}"

    def metadata(self, part: int) -> dict[str, Any]:
        return message_metadata(self.session_id, self.turn, part)

    async def open(self) -> None:
        """Post the placeholder, unless the channel's post limiter says to wait long."""
        s = self.surface
        channel = self.where.channel
        try:
            delay = await s.state.ratelimit.acquire(channel)
            if delay > INTERIM_WAIT_MAX_S:
                return
            if delay > 0:
                await s.sleep(delay)
                if await s.state.ratelimit.acquire(channel) > 0:
                    return
            response = await s.client.chat_postMessage(
                channel=channel,
                thread_ts=self.where.ts,
                text=MessagePart().text,
                metadata=self.metadata(0),
                username=self.username,
                icon_emoji=self.icon,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as e:
            log.info("no placeholder for turn %s in %s: %s", self.turn, channel, e)
            if int(e.response.status_code) == 429:
                await s.state.ratelimit.hold(channel, retry_after_seconds_of(e.response.headers))
            elif int(e.response.status_code) >= 500:
                self.unknown = True
            return
        except CONNECTION_ERRORS as e:
            log.info("placeholder for turn %s in %s: no answer: %r", self.turn, channel, e)
            self.unknown = True
            return
        ts = str(response["ts"])
        self.parts[0] = ts
        await s.state.posts.record(self.session_id, self.turn, 0, ts)
        s.mark_updated(ts)  # a fresh post counts as the message's last change

    # ---- TurnSink ----------------------------------------------------------------------

    async def delta(self, text: str) -> None:
        self.text += text
        await self._push()

    async def reset(self) -> None:
        self.text = ""  # a repair call writes the message again
        await self._push()

    async def _push(self) -> None:
        s = self.surface
        ts = self.parts.get(0)
        now = s.clock()
        if ts is None or now < self.next_try or s.update_wait(ts) > 0:
            return
        preview = preview_part(self.text)
        if preview.text == self.shown:
            return
        budget = s.budget
        self.next_try = now + MIN_INTERVAL_S  # no other attempt while this one runs
        try:
            streams = await budget.streaming(s.workspace, self.key, for_s=STREAM_CLAIM_S)
            self.counted = True
            self.next_try = now + budget.interval(streams)
            if not await budget.take(s.workspace):
                return  # the workspace's budget is spent for now: skip this one
            await asyncio.wait_for(
                s.interim_client.chat_update(
                    channel=self.where.channel,
                    ts=ts,
                    text=preview.text,
                    blocks=preview.blocks,
                    metadata=self.metadata(0),
                ),
                INTERIM_TIMEOUT_S,
            )
            s.mark_updated(ts)
            self.shown = preview.text
        except INTERIM_ERRORS as e:
            log.info("interim update of %s skipped (the final one will show it): %s", ts, e)

    async def close(self) -> None:
        """The turn is no longer being written: stop counting it among the streams."""
        if self.counted:
            self.counted = False
            try:
                await self.surface.budget.done_streaming(self.surface.workspace, self.key)
            except RedisError as e:  # its claim lapses by itself
                log.info("turn %s: cannot stop counting its stream: %s", self.key, e)

    async def abandon(self) -> None:
        """The turn failed: say so in its message (best effort)."""
        await self.close()
        ts = self.parts.get(0)
        if ts is not None:
            await self.surface.mark_interrupted(self.session_id, self.where, self.turn, ts)
