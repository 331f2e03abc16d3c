"""The message of a turn while the model writes it: best effort, outside the outbox.

At its start each turn chooses, from the workspace's chat.update budget
(`state.updates`, Slack's Tier 3), how it is shown while it is written:

* streamed, while the budget has room for it to finish: a tagged placeholder
  saying "writing…" is posted (and recorded in the post ledger), then updated
  with the text so far, so that every member of the channel sees the turn grow
  (Slack's chat streaming is live only for one recipient in a channel, and
  carries no metadata tag). Each update draws from the budget and comes at
  most every `budget.interval(n)` seconds, n being the turns streamed at once
  in the workspace; the final render then goes over the placeholder;
* quiet, when the budget has no such room: nothing is posted while the model
  writes, the thread shows "<speaker> is writing…" as its status line
  (`assistant.threads.setStatus`, which takes `chat:write` since 2026-03-05,
  costs no chat.update and clears itself when the app posts in the thread, or
  after two minutes: docs.slack.dev/reference/methods/assistant.threads.setStatus,
  docs.slack.dev/changelog/2026/03/05/set-status-scope-update), and the final
  text is posted as a new message once the turn is saved.

Nothing here raises, waits on Slack or retries: no call left means an update
is skipped, and a 429 skips it too (the interim client does not retry), so
reading the model's stream never stalls. A failure only means the final
render (a step after the save) posts or updates the message instead.
`unknown` says a post may have gone out without an answer, so the final
render looks for its tag first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import interrupted_part, message_metadata, preview_part, writing_part
from bot.slack.client import retry_after_seconds_of
from bot.slack.errors import BEST_EFFORT_ERRORS, CONNECTION_ERRORS, slack_error, status_of
from bot.slack.poster import Poster, Thread
from state.updates import MIN_INTERVAL_S

log = logging.getLogger("sora.slack")

# The placeholder waits this long at most for the channel's post limiter.
INTERIM_WAIT_MAX_S = 2.0
# A turn counts as being written for this long after its last interim update (renewed
# while it is), so a worker that dies stops counting soon after.
STREAM_CLAIM_S = 60.0
# A call Slack has not answered in this long is given up (the model goes on).
INTERIM_TIMEOUT_S = 5.0
# A turn streams only while the budget has room for this many interim updates besides
# the final renders of every turn streaming.
STREAM_SPARE_UPDATES = 3
# The thread's status line while a turn is written quietly (Slack shows the app's name,
# or the `username` given, before it).
WRITING_STATUS = "is writing…"
# Slack clears the status line two minutes after it was set if no message came
# (docs.slack.dev/reference/methods/assistant.threads.setStatus): a turn written for
# longer sets it again this often. The method's rate limit is "Special"
# (api.slack.com/methods/assistant.threads.setStatus), not a Tier, and this is one call
# per long turn every 90 s.
STATUS_REFRESH_S = 90.0


def interim_client_of(client: AsyncWebClient) -> AsyncWebClient:
    """A client for calls made inside the model's stream: one attempt each, no retry of
    any kind (a 429, a server error, a dropped connection), on the same connections."""
    return AsyncWebClient(
        token=client.token,
        base_url=client.base_url,
        session=client.session,
        logger=client.logger,
        retry_handlers=[],
    )


class LiveMessage:
    """The message of one agent turn while the model writes it (a `TurnSink`)."""

    def __init__(
        self,
        poster: Poster,
        interim_client: AsyncWebClient,
        *,
        session_id: str,
        where: Thread,
        turn: int,
        username: str,
        icon: str,
        parts: Mapping[int, str],
    ):
        self.poster = poster
        self.interim_client = interim_client
        self.session_id = session_id
        self.where = where
        self.turn = turn
        self.username = username
        self.icon = icon
        self.parts = dict(parts)  # part -> ts
        self.unknown = False
        self.text = ""  # the raw message so far
        self.shown: str | None = None  # body of the last interim update
        self.next_try = 0.0  # clock before which no interim update is tried
        self.counted = False  # whether this turn counts among the workspace's streams
        self.status_set = False  # whether the thread's status line says it is being written
        self.status_at = 0.0  # clock when it was last set

    @property
    def key(self) -> str:
        return f"{self.session_id}:{self.turn}"

    @property
    def streamed(self) -> bool:
        """Whether the turn has a placeholder that its interim updates grow."""
        return 0 in self.parts

    def metadata(self, part: int) -> dict[str, Any]:
        return message_metadata(self.session_id, self.turn, part)

    async def start(self) -> None:
        """Choose how the turn is shown while written: streamed if the budget has room for
        it to finish over its placeholder, else quietly, with the thread's status line."""
        if self.streamed:
            return  # an earlier attempt's message: its interim updates go on as budget allows
        budget = self.poster.budget
        try:
            self.counted = await budget.start_streaming(
                self.poster.workspace, self.key, for_s=STREAM_CLAIM_S, spare=STREAM_SPARE_UPDATES
            )
        except RedisError as e:
            log.info("turn %s: cannot ask the update budget, writing quietly: %s", self.key, e)
        if self.counted:
            await self.open()
        if not self.streamed and not self.unknown:
            await self.set_status(WRITING_STATUS)

    async def open(self) -> None:
        """Post the placeholder, unless the channel's post limiter says to wait long."""
        p = self.poster
        channel = self.where.channel
        part = writing_part()
        try:
            delay = await p.state.ratelimit.acquire(channel, team=p.workspace)
            if delay > INTERIM_WAIT_MAX_S:
                return
            if delay > 0:
                await p.sleep(delay)
                if await p.state.ratelimit.acquire(channel, team=p.workspace) > 0:
                    return
            response = await p.client.chat_postMessage(
                channel=channel,
                thread_ts=self.where.ts,
                text=part.text,
                blocks=part.blocks,
                metadata=self.metadata(0),
                username=self.username,
                icon_emoji=self.icon,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as e:
            log.info("no placeholder for turn %s in %s: %s", self.turn, channel, e)
            if status_of(e) == 429:
                await p.state.ratelimit.hold(
                    channel, retry_after_seconds_of(e.response.headers), team=p.workspace
                )
            elif status_of(e) >= 500:
                self.unknown = True
            return
        except CONNECTION_ERRORS as e:
            log.info("placeholder for turn %s in %s: no answer: %r", self.turn, channel, e)
            self.unknown = True
            return
        except RedisError as e:
            log.info("no placeholder for turn %s: the post limiter failed: %s", self.turn, e)
            return
        ts = str(response["ts"])
        self.parts[0] = ts
        await p.state.posts.record(self.session_id, self.turn, 0, ts)
        p.mark_updated(ts)  # a fresh post counts as the message's last change

    async def set_status(self, status: str) -> None:
        """The thread's status line (best effort, one attempt; "" clears it)."""
        if not status and not self.status_set:
            return
        try:
            await asyncio.wait_for(
                self.interim_client.assistant_threads_setStatus(
                    channel_id=self.where.channel,
                    thread_ts=self.where.ts,
                    status=status,
                    username=self.username,
                    icon_emoji=self.icon,
                ),
                INTERIM_TIMEOUT_S,
            )
            self.status_set = bool(status)
            self.status_at = self.poster.clock()
        except BEST_EFFORT_ERRORS as e:
            log.info("turn %s: no status line in the thread: %s", self.key, e)

    # ---- TurnSink ----------------------------------------------------------------------

    async def delta(self, text: str) -> None:
        self.text += text
        await self._push()

    async def reset(self) -> None:
        self.text = ""  # a repair call writes the message again
        await self._push()

    async def refresh_status(self) -> None:
        """Set the status line again if Slack would soon clear it (a turn written for
        longer than its two minutes: a long answer, an outage waited out)."""
        if self.status_set and self.poster.clock() - self.status_at >= STATUS_REFRESH_S:
            await self.set_status(WRITING_STATUS)

    async def _push(self) -> None:
        p = self.poster
        await self.refresh_status()
        ts = self.parts.get(0)
        now = p.clock()
        if ts is None or now < self.next_try or p.update_wait(ts) > 0:
            return
        preview = preview_part(self.text)
        if preview.body == self.shown:
            return
        budget = p.budget
        self.next_try = now + MIN_INTERVAL_S  # no other attempt while this one runs
        try:
            streams = await budget.streaming(p.workspace, self.key, for_s=STREAM_CLAIM_S)
            self.counted = True
            self.next_try = now + budget.interval(streams)
            if not await budget.take(p.workspace):
                return  # the workspace's budget is spent for now: skip this one
            await asyncio.wait_for(
                self.interim_client.chat_update(
                    channel=self.where.channel,
                    ts=ts,
                    text=preview.text,
                    blocks=preview.blocks,
                    metadata=self.metadata(0),
                ),
                INTERIM_TIMEOUT_S,
            )
            p.mark_updated(ts)
            self.shown = preview.body
        except BEST_EFFORT_ERRORS as e:
            log.info("interim update of %s skipped (the final one will show it): %s", ts, e)

    async def close(self) -> None:
        """The turn is no longer being written: stop counting it among the streams."""
        if self.counted:
            self.counted = False
            try:
                await self.poster.budget.done_streaming(self.poster.workspace, self.key)
            except RedisError as e:  # its claim lapses by itself
                log.info("turn %s: cannot stop counting its stream: %s", self.key, e)

    async def abandon(self) -> None:
        """The turn failed: say so in its message, or clear the status line (best effort)."""
        await self.close()
        await self.set_status("")
        ts = self.parts.get(0)
        if ts is not None:
            await mark_interrupted(self.poster, self.session_id, self.where, self.turn, ts)


async def mark_interrupted(
    poster: Poster, session_id: str, where: Thread, turn: int, ts: str
) -> None:
    """Say in a failed turn's message that Retry writes it again (best effort)."""
    try:
        await poster.call(
            where.channel,
            lambda: poster.update(
                where.channel, ts, interrupted_part(), message_metadata(session_id, turn, 0)
            ),
        )
    except SlackApiError as e:
        log.info("cannot mark the failed turn's message %s: %s (%s)", ts, e, slack_error(e))
