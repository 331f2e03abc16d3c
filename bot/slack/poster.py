"""Posting into a thread and updating its messages: every Slack call a step makes.

A `Poster` makes each call land once, whatever Slack or the network does:

* every message is tagged with metadata (session, turn, part) when it is
  created (`chat.postMessage`; `chat.startStream` cannot carry metadata, so
  the app does not use it), and recorded in the post ledger right after; a
  step that finds no record, after a crash or a lost response, looks for the
  tag in the thread before it posts (`find_tagged`), so nothing is posted
  twice and nothing is left orphaned;
* posts wait for the channel's token in the shared per-channel limiter
  (Slack: about one a second per channel, for the whole app);
* a rate limit (429) is waited out for its full `Retry-After`, however long,
  and taught to the shared per-channel limiter so every worker backs off;
  server errors and dropped connections are retried with capped backoff
  (`call`); none of these ever fails a step;
* an update that must land waits for the workspace's chat.update budget
  (`state.updates`, Tier 3), and for the message's own second;
* where membership is missing (`not_in_channel`) and the channel is public,
  the bot joins it and calls again (`member`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.dialogue.models import Session, Speaker, Turn
from bot.slack.blocks import (
    METADATA_EVENT,
    STREAM_UPDATE_MIN_INTERVAL_S,
    MessagePart,
    message_metadata,
)
from bot.slack.client import retry_after_seconds_of
from bot.slack.errors import CONNECTION_ERRORS, slack_error, status_of
from state import State
from state.updates import UpdateBudget

log = logging.getLogger("sora.slack")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
T = TypeVar("T")

REPLIES_PAGE = 200
HISTORY_PAGES = 5  # a cross-post is looked for among the prompts channel's latest messages
# Forget a message's last update time once it cannot matter any more.
_UPDATE_TIMES_MAX = 10_000
# Server errors and dropped connections: wait this long, doubling, at most the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# The chat.update budget's key: one bot token, one workspace.
WORKSPACE = "workspace"


@dataclass(frozen=True)
class Thread:
    channel: str
    ts: str


def thread_of(session: Session) -> Thread:
    o = session.origin
    if not o.channel_id or not o.thread_ts:
        raise ValueError(f"session {session.id} has no Slack thread (origin {o.surface})")
    return Thread(o.channel_id, o.thread_ts)


def agent_turn_number(session: Session, turn: Turn) -> int:
    """The number (0, 1, ...) of agent turn `turn`: its job's turn and its ledger key."""
    return sum(1 for t in session.turns[: turn.index] if t.speaker != Speaker.HUMAN)


def tag_of(message: Mapping[str, Any]) -> tuple[str, int, int] | None:
    """(session, turn, part) of a message the app tagged; None for any other message."""
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    part, turn = payload.get("part"), payload.get("turn")
    if meta.get("event_type") != METADATA_EVENT or not isinstance(part, int):
        return None
    if not isinstance(turn, int):
        return None
    return str(payload.get("session")), turn, part


class Poster:
    """Slack calls that land once. One instance serves every session of a process."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        state: State,
        budget: UpdateBudget,
        delete_budget: UpdateBudget | None = None,
        workspace: str = WORKSPACE,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.state = state
        self.budget = budget
        self.delete_budget = delete_budget
        # Whose chat.update budget this poster spends: the workspace's team id in OAuth
        # mode (one surface per workspace), one shared name with a single bot token.
        self.workspace = workspace
        self.clock = clock
        self.sleep = sleep
        self._updated: dict[str, float] = {}  # message ts -> clock of its last chat.update

    # ---- calls ---------------------------------------------------------------------------

    async def call(
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
                if status_of(e) == 429:
                    await self.rate_limited(channel, e, posting=posting)
                    continue
                if status_of(e) < 500 or posting:
                    raise
                log.info("Slack server error (retrying in %.1f s): %s", delay, e)
            except CONNECTION_ERRORS as e:
                if posting:
                    raise
                log.info("Slack connection failed (retrying in %.1f s): %r", delay, e)
            await self.backoff(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def backoff(self, delay: float) -> None:
        await self.sleep(delay + random.uniform(0, delay / 4))

    async def rate_limited(self, channel: str | None, e: SlackApiError, *, posting: bool) -> None:
        """Wait out a 429's Retry-After. For a post, every worker's limiter of that
        channel learns it, so they all hold back instead of each hitting it."""
        wait = retry_after_seconds_of(e.response.headers)
        log.info("Slack rate limit%s: waiting %.1f s", f" in {channel}" if channel else "", wait)
        metrics.slack_rate_limit_wait(wait)
        if posting and channel:
            await self.state.ratelimit.hold(channel, wait, team=self.workspace)
        await self.sleep(wait + random.uniform(0, 0.25))

    async def member(
        self, channel: str, call: Callable[[], Awaitable[T]], *, posting: bool = False
    ) -> T:
        """`call` (see `call`); on `not_in_channel`, join the channel and call again.

        Slack: `chat:write.public` posts in a public channel without joining, but
        history reads, pins and file shares need membership (`channels:join`).
        """
        try:
            return await self.call(channel, call, posting=posting)
        except SlackApiError as e:
            if slack_error(e) != "not_in_channel":
                raise
            refusal = e
        log.info("joining %s to finish a step there", channel)
        try:
            await self.call(channel, lambda: self.client.conversations_join(channel=channel))
        except SlackApiError as join_error:
            # Private, archived, or no channels:join scope: what a person can do is
            # still to invite the bot, so the step reports the membership refusal.
            log.info("cannot join %s: %s", channel, join_error)
            raise refusal from join_error
        return await self.call(channel, call, posting=posting)

    # ---- posts -------------------------------------------------------------------------

    async def post(
        self,
        channel: str,
        part: MessagePart,
        metadata: dict[str, Any],
        *,
        thread_ts: str | None = None,
        username: str | None = None,
        icon_emoji: str | None = None,
        exclude: str | None = None,
    ) -> str:
        """Post one tagged message (after the channel's rate limiter); its ts.

        Never posted twice: when the outcome of an attempt is unknown (a dropped
        connection, a lost answer, a server error), the tag is looked for before
        the next attempt (`exclude`: a message with the same tag that is not this
        one). A 429 waits its Retry-After, however long. A refusal raises.
        """
        payload = metadata["event_payload"]
        delay = BACKOFF_FIRST_S
        while True:
            await self.state.ratelimit.wait(channel, team=self.workspace)
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
                if status_of(e) == 429:
                    await self.rate_limited(channel, e, posting=True)
                    continue
                if status_of(e) < 500:
                    raise
                log.info("post to %s: server error, looking for it before retrying: %s", channel, e)
            except CONNECTION_ERRORS as e:
                log.info("post to %s: no answer, looking for it before retrying: %r", channel, e)
            await self.backoff(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            found = await self.find_post(
                channel,
                thread_ts,
                str(payload["session"]),
                int(payload["turn"]),
                int(payload["part"]),
                exclude=exclude,
            )
            if found is not None:
                return found

    async def post_parts(
        self,
        sid: str,
        channel: str,
        turn: int,
        parts: list[MessagePart],
        posted: Mapping[int, str],
        *,
        thread_ts: str | None,
    ) -> dict[int, str]:
        """Post the parts the ledger does not have yet. A part whose post was tried
        before (`PostLedger.begin`: a crash may have come between a post and its
        record) is looked for by its tag first; a first attempt is not, so the
        thread is read (conversations.replies, Tier 3: ~50 a minute for the
        workspace) only after a failure, never on the way of every lock."""
        out = dict(posted)
        looked = False
        for k, part in enumerate(parts):
            if k in out:
                continue
            if not await self.state.posts.begin(sid, turn, k) and not looked:
                looked = True
                if thread_ts is not None:
                    out.update(
                        await self.find_tagged_or_none(sid, Thread(channel, thread_ts), turn)
                    )
                if k in out:
                    continue
            meta = message_metadata(sid, turn, k)
            out[k] = await self.post(channel, part, meta, thread_ts=thread_ts)
            await self.state.posts.record(sid, turn, k, out[k])
        return out

    async def put(
        self,
        sid: str,
        where: Thread,
        turn: int,
        k: int,
        part: MessagePart,
        ts: str | None,
        username: str | None = None,
        icon: str | None = None,
        *,
        budgeted: bool = False,
        exclude: str | None = None,
    ) -> str:
        """Part `k` of a turn: update its message, or post it if there is none.

        `budgeted`: the update's call of the budget is already taken."""
        meta = message_metadata(sid, turn, k)
        if ts is not None:
            earlier = ts
            try:
                await self.call(
                    where.channel,
                    lambda: self.update(where.channel, earlier, part, meta, budgeted=budgeted),
                )
                return earlier
            except SlackApiError as e:
                if slack_error(e) != "message_not_found":
                    raise
                # Someone deleted it: post it again.
        ts = await self.post(
            where.channel,
            part,
            meta,
            thread_ts=where.ts,
            username=username,
            icon_emoji=icon,
            exclude=exclude,
        )
        await self.state.posts.record(sid, turn, k, ts)
        return ts

    async def delete(self, channel: str, ts: str) -> None:
        """Delete a message of the app's (within chat.delete's budget); one gone is fine."""
        if self.delete_budget is not None:
            # chat.delete's own budget: Slack's limits are per method, and chat.delete is
            # Tier 3 too (docs.slack.dev/reference/methods/chat.delete).
            await self.delete_budget.wait_for(f"{self.workspace}:chat.delete")
        try:
            await self.call(channel, lambda: self.client.chat_delete(channel=channel, ts=ts))
        except SlackApiError as e:
            if slack_error(e) != "message_not_found":
                raise

    # ---- updates -----------------------------------------------------------------------

    async def update(
        self,
        channel: str,
        ts: str,
        part: MessagePart,
        metadata: dict[str, Any] | None = None,
        *,
        budgeted: bool = False,
    ) -> None:
        """Update a message that must show this (a final render, the root's status).

        Waits first if it was updated less than a second ago, then for a call of the
        workspace's chat.update budget (`state.updates`), so that every worker
        together stays within Slack's Tier 3 (`budgeted`: the call is already taken).
        """
        wait = self.update_wait(ts)
        if wait > 0:
            await self.sleep(wait)
        if not budgeted:
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

    # ---- finding posts by their tag ------------------------------------------------------

    async def find_tagged(
        self, sid: str, where: Thread, turn: int, *, exclude: str | None = None
    ) -> dict[int, str]:
        """Messages of `turn` in the thread, found by their tag, recorded in the ledger
        (`exclude`: a message with the tag that is not one of them)."""
        found: dict[int, str] = {}
        cursor: str | None = None
        while True:
            page = await self.member(
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
                tag = tag_of(m)
                if tag is not None and tag[0] == sid and tag[1] == turn and m["ts"] != exclude:
                    found.setdefault(tag[2], str(m["ts"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        for part, ts in sorted(found.items()):
            await self.state.posts.record(sid, turn, part, ts)
        return found

    async def find_tagged_or_none(
        self, sid: str, where: Thread, turn: int, *, exclude: str | None = None
    ) -> dict[int, str]:
        try:
            return await self.find_tagged(sid, where, turn, exclude=exclude)
        except SlackApiError as e:
            # Cannot read the thread (not a member, and joining is refused): post,
            # accepting the small risk that a crashed attempt's message stays.
            log.warning("session %s: cannot look for turn %s's messages: %s", sid, turn, e)
            return {}

    async def find_post(
        self,
        channel: str,
        thread_ts: str | None,
        sid: str,
        turn: int,
        part: int,
        *,
        exclude: str | None = None,
    ) -> str | None:
        """The ts of the message tagged (sid, turn, part), if it was posted."""
        try:
            if thread_ts is not None:
                where = Thread(channel, thread_ts)
                found = await self.find_tagged(sid, where, turn, exclude=exclude)
                return found.get(part)
            cursor: str | None = None
            for _ in range(HISTORY_PAGES):
                page = await self.member(
                    channel,
                    lambda c=cursor: self.client.conversations_history(  # type: ignore[misc]
                        channel=channel, include_all_metadata=True, limit=100, cursor=c
                    ),
                )
                for m in page.get("messages") or []:
                    if tag_of(m) == (sid, turn, part):
                        return str(m["ts"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as e:
            log.warning("cannot look for an unanswered post in %s: %s", channel, e)
        return None
