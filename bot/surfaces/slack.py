"""The Slack surface: a session is a thread, each turn one or more messages in it.

Each agent turn is posted under the speaker's name and icon and streamed as it
is written: with Slack's chat streaming where the workspace allows it, else by
posting the message and updating it at most once a second. Every message the
app posts is tagged with message metadata (session, turn, part) and recorded
in the post ledger right after it succeeds, so a redone turn updates what an
earlier attempt posted instead of posting it twice. Posts wait for the shared
per-channel rate limiter. All model and human text is escaped (see
`bot.slack.blocks`), so nothing the models write can ping anyone.

Errors: a post Slack refuses after the client's retries raises, and the
worker leaves the job pending so the turn is redone. What cannot hurt is
ignored (already pinned, already reacted); cosmetic calls (interim stream
pushes, the root's status, pins, reactions) are best effort and only logged,
so that a missing optional scope never stops a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.agents import COPILOT_ICON
from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker, Turn
from bot.slack.blocks import (
    MARKDOWN_BLOCK_MAX_CHARS,
    METADATA_EVENT,
    STREAM_UPDATE_MIN_INTERVAL_S,
    TURN_CROSSPOST,
    TURN_LOCKED,
    TURN_PAUSED,
    TURN_REPORT,
    TURN_STOPPED,
    USERNAME_MAX_CHARS,
    MessagePart,
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
from bot.slack.people import People
from bot.surfaces.base import waiting_notice
from state import State

log = logging.getLogger("sora.slack")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

REACTION_HEARD = "white_check_mark"
REPLIES_PAGE = 200
# Forget a message's last update time once it cannot matter any more.
_UPDATE_TIMES_MAX = 10_000


def slack_error(e: SlackApiError) -> str:
    """The `error` code of a Slack answer ("" if it has none, e.g. an HTML 5xx page)."""
    try:
        return str(e.response.get("error") or "")
    except Exception:  # a body that is not JSON
        return ""


def transient(e: SlackApiError) -> bool:
    """A rate limit or server fault that outlasted the client's retries (not a refusal)."""
    status = int(e.response.status_code)
    return status == 429 or status >= 500


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
    ):
        self.client = client
        self.state = state
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.people = people or People(client)
        # Channels where chat streaming failed to start: they get post-then-update.
        self.no_stream: set[str] = set()
        self._live: dict[str, _TurnMessage] = {}  # session id -> the turn being written
        self._updated: dict[str, float] = {}  # message ts -> clock of its last chat.update

    # ---- the Surface protocol ----------------------------------------------------------

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
        earlier = dict(posted)
        if not earlier and redo:
            earlier = await self._find_tagged(session, where, turn)
        icon = COPILOT_ICON if speaker == Speaker.COPILOT else session.persona.icon_emoji
        message = _TurnMessage(
            self,
            session_id=session.id,
            where=where,
            turn=turn,
            username=truncate(author, USERNAME_MAX_CHARS),
            icon=icon,
            parts=earlier,
        )
        if 0 not in earlier:
            await message.open(session)
        self._live[session.id] = message
        return message

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        number = _agent_turn_number(session, turn)
        message = self._live.pop(session.id, None)
        if message is None or message.turn != number:
            # Not opened by this process (it should have been): finish from the ledger.
            message = _TurnMessage(
                self,
                session_id=session.id,
                where=_thread(session),
                turn=number,
                username=truncate(turn.author, USERNAME_MAX_CHARS),
                icon=COPILOT_ICON
                if turn.speaker == Speaker.COPILOT
                else session.persona.icon_emoji,
                parts=await self.state.posts.get(session.id, number),
            )
        await message.finish(turn_parts(session, turn))
        if not session.finished:  # else session_locked follows, and updates the root
            await self.update_root(session)

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        if not turn.source_id or not session.origin.channel_id:
            return
        try:
            await self.client.reactions_add(
                channel=session.origin.channel_id, timestamp=turn.source_id, name=REACTION_HEARD
            )
        except SlackApiError as e:
            if slack_error(e) not in ("already_reacted", "message_not_found"):
                log.warning("session %s: cannot react to %s: %s", session.id, turn.source_id, e)

    async def session_locked(self, session: Session) -> None:
        await self._abandon_live(session.id)
        if session.locked is None:
            return
        where = _thread(session)
        ledger = await self.state.posts.all(session.id)
        reply = await self._post_once(
            session,
            TURN_LOCKED,
            locked_parts(session),
            where.channel,
            thread_ts=where.ts,
            posted=ledger.get(TURN_LOCKED, {}),
        )
        await self._pin(where.channel, reply[0])
        await self._name_starter(session)
        if self.settings.prompts_channel and not ledger.get(TURN_CROSSPOST):
            await self._cross_post(session, where, self.settings.prompts_channel)
        if not ledger.get(TURN_REPORT):
            await self._upload_report(session, where)
        await self.update_root(session)

    async def model_waiting(self, session: Session, seconds: float, reason: str) -> None:
        await self.update_root(session, notice=waiting_notice(seconds))

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
        if ts is not None:
            try:
                await self.update(where.channel, ts, part, meta)
            except SlackApiError as e:
                if slack_error(e) != "message_not_found":
                    raise
                ts = None
        if ts is None:
            ts = await self.post(where.channel, part, meta, thread_ts=where.ts)
            await self.state.posts.record(session.id, TURN_PAUSED, failed_turn, ts)
        await self.update_root(session)

    async def session_stopped(self, session: Session) -> None:
        await self._abandon_live(session.id)
        where = _thread(session)
        await self._post_once(
            session,
            TURN_STOPPED,
            [stopped_part(session)],
            where.channel,
            thread_ts=where.ts,
            posted=await self.state.posts.get(session.id, TURN_STOPPED),
        )
        await self.update_root(session)

    # ---- Slack calls -------------------------------------------------------------------

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
        """Post one message (after the channel's rate limiter); its ts."""
        await self.state.ratelimit.wait(channel)
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

    async def update(
        self,
        channel: str,
        ts: str,
        part: MessagePart,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Update a message, waiting first if it was updated less than a second ago."""
        wait = self.update_wait(ts)
        if wait > 0:
            await self.sleep(wait)
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

    async def update_root(self, session: Session, notice: str | None = None) -> None:
        """Show the session's round, tokens, status and buttons on the thread root.

        `notice`: a passing state to show with the status (an outage being waited out).

        Best effort: the next change updates it again, and the root may not be the
        app's to edit (a session started from someone's message).
        """
        where = _thread(session)
        part = MessagePart(
            tail=tuple(root_blocks(session, notice=notice)), fallback=root_text(session)
        )
        try:
            await self.update(where.channel, where.ts, part)
        except SlackApiError as e:
            log.warning("session %s: cannot update the thread root: %s", session.id, e)

    # ---- internals ---------------------------------------------------------------------

    async def _find_tagged(self, session: Session, where: _Thread, turn: int) -> dict[int, str]:
        """Messages of `turn` an earlier attempt posted without recording them, by their tag."""
        found: dict[int, str] = {}
        cursor: str | None = None
        while True:
            page = await self.client.conversations_replies(
                channel=where.channel,
                ts=where.ts,
                include_all_metadata=True,
                limit=REPLIES_PAGE,
                cursor=cursor,
            )
            for m in page.get("messages") or []:
                meta = m.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                part = payload.get("part")
                if (
                    meta.get("event_type") == METADATA_EVENT
                    and payload.get("session") == session.id
                    and payload.get("turn") == turn
                    and isinstance(part, int)
                ):
                    found.setdefault(part, str(m["ts"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        for part, ts in sorted(found.items()):
            await self.state.posts.record(session.id, turn, part, ts)
        return found

    async def _post_once(
        self,
        session: Session,
        turn: int,
        parts: list[MessagePart],
        channel: str,
        *,
        thread_ts: str | None,
        posted: Mapping[int, str],
    ) -> dict[int, str]:
        """Post the parts the ledger does not have yet; every part's ts."""
        out = dict(posted)
        for k, part in enumerate(parts):
            if k in out:
                continue
            meta = message_metadata(session.id, turn, k)
            out[k] = await self.post(channel, part, meta, thread_ts=thread_ts)
            await self.state.posts.record(session.id, turn, k, out[k])
        return out

    async def _pin(self, channel: str, ts: str) -> None:
        try:
            await self.client.pins_add(channel=channel, timestamp=ts)
        except SlackApiError as e:
            if slack_error(e) != "already_pinned":
                log.warning("cannot pin %s in %s: %s", ts, channel, e)

    async def _name_starter(self, session: Session) -> None:
        """Put the starter's display name in the session, for the cross-post and the library.

        `/sora` stores the handle its payload carries and leaves this Slack call
        out of the ack's path; the lock is the first place a name is shown. The
        worker saves the session after this step. A failed lookup keeps the handle.
        """
        origin = session.origin
        if not origin.user_id:
            return
        person = await self.people.get(origin.user_id)
        if person.name != origin.user_id:
            session.origin = origin.model_copy(update={"user_name": person.name})

    async def _cross_post(self, session: Session, where: _Thread, channel: str) -> None:
        try:
            link = await self.client.chat_getPermalink(channel=where.channel, message_ts=where.ts)
            await self._post_once(
                session,
                TURN_CROSSPOST,
                crosspost_parts(session, str(link["permalink"])),
                channel,
                thread_ts=None,
                posted={},
            )
        except SlackApiError as e:
            if transient(e):
                raise
            # A refusal (not in the channel, no such channel) is a setting to fix,
            # and no redo would fix it: the prompt is in the thread either way.
            log.error("session %s: cannot cross-post to %s: %s", session.id, channel, e)

    async def _upload_report(self, session: Session, where: _Thread) -> None:
        # The upload ends in a message in the thread: it takes a post token too.
        await self.state.ratelimit.wait(where.channel)
        response = await self.client.files_upload_v2(
            channel=where.channel,
            thread_ts=where.ts,
            content=report_content(session),
            filename=report_filename(session),
            title=report_title(session),
        )
        files = response.get("files") or []
        file_id = str(files[0]["id"]) if files else str((response.get("file") or {})["id"])
        await self.state.posts.record(session.id, TURN_REPORT, 0, file_id)

    async def mark_interrupted(self, session_id: str, where: _Thread, turn: int, ts: str) -> None:
        """Say in a failed turn's message that Retry writes it again (best effort)."""
        try:
            await self.update(
                where.channel, ts, interrupted_part(), message_metadata(session_id, turn, 0)
            )
        except SlackApiError as e:
            log.info("cannot mark the failed turn's message %s: %s", ts, e)

    async def _abandon_live(self, session_id: str) -> None:
        message = self._live.pop(session_id, None)
        if message is not None:
            await message.abandon()


class _TurnMessage:
    """The message(s) of one agent turn: the sink the engine streams the turn into.

    Two modes. Streaming: `chat.startStream`, then the text so far is appended at
    most once a second and the stream stopped with the draft blocks. Updating:
    a placeholder is posted (or an earlier attempt's message reused), updated
    with the text so far at most once a second, then with the final turn. A
    stream that fails midway turns into updating the same message, which always
    ends with the complete text, so nothing is lost.
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
        self.streaming = False
        self.text = ""  # the raw message so far
        self.streamed = ""  # escaped text already appended to the stream
        self.last_append = 0.0
        self.shown: str | None = None  # text of the last interim update

    def metadata(self, part: int) -> dict[str, Any]:
        return message_metadata(self.session_id, self.turn, part)

    async def open(self, session: Session) -> None:
        """Start the message: a stream where possible, else a placeholder post."""
        s = self.surface
        channel = self.where.channel
        if s.settings.slack_streaming == "auto" and channel not in s.no_stream:
            o = session.origin
            both = bool(o.user_id and o.team_id)  # Slack wants both, or neither (in a DM)
            await s.state.ratelimit.wait(channel)
            try:
                response = await s.client.chat_startStream(
                    channel=channel,
                    thread_ts=self.where.ts,
                    username=self.username,
                    icon_emoji=self.icon,
                    recipient_user_id=o.user_id if both else None,
                    recipient_team_id=o.team_id if both else None,
                )
            except SlackApiError as e:
                if transient(e):
                    raise
                log.info("chat streaming refused in %s (%s); updating messages there", channel, e)
                s.no_stream.add(channel)
            else:
                self.parts[0] = str(response["ts"])
                await s.state.posts.record(self.session_id, self.turn, 0, self.parts[0])
                self.streaming = True
                self.last_append = s.clock()
                return
        ts = await s.post(
            channel,
            MessagePart(),
            self.metadata(0),
            thread_ts=self.where.ts,
            username=self.username,
            icon_emoji=self.icon,
        )
        self.parts[0] = ts
        await s.state.posts.record(self.session_id, self.turn, 0, ts)
        s.mark_updated(ts)  # a fresh post counts as the message's last change

    # ---- TurnSink ----------------------------------------------------------------------

    async def delta(self, text: str) -> None:
        self.text += text
        await self._push()

    async def reset(self) -> None:
        # A repair call writes the message again. A stream cannot take text back,
        # so it is stopped and the message is updated from here on.
        self.text = ""
        if self.streaming:
            await self._stop_stream()
        await self._push()

    # ---- showing progress (best effort) ------------------------------------------------

    async def _push(self) -> None:
        if self.streaming:
            await self._append()
            return
        ts = self.parts.get(0)
        if ts is None or self.surface.update_wait(ts) > 0:
            return
        preview = preview_part(self.text)
        if preview.text == self.shown:
            return
        try:
            await self.surface.update(self.where.channel, ts, preview, self.metadata(0))
            self.shown = preview.text
        except SlackApiError as e:
            log.info("interim update of %s failed (the final one will show it): %s", ts, e)

    async def _append(self) -> None:
        s = self.surface
        if s.clock() - self.last_append < STREAM_UPDATE_MIN_INTERVAL_S:
            return
        target = escape(self.text)
        if len(target) > MARKDOWN_BLOCK_MAX_CHARS:
            return  # longer than one message: the final step splits it
        new = target[len(self.streamed) :]
        if not new:
            return
        try:
            await s.client.chat_appendStream(
                channel=self.where.channel, ts=self.parts[0], markdown_text=new
            )
        except SlackApiError as e:
            log.info("stream %s failed; updating it instead: %s", self.parts[0], e)
            try:
                await self._stop_stream()
            except SlackApiError as stop_error:
                log.info("cannot stop stream %s: %s", self.parts[0], stop_error)
            return
        self.streamed = target
        self.last_append = s.clock()

    async def _stop_stream(self) -> None:
        """End the stream as it is, so the message can be updated from now on."""
        self.streaming = False
        try:
            await self.surface.client.chat_stopStream(
                channel=self.where.channel, ts=self.parts[0], metadata=self.metadata(0)
            )
        except SlackApiError as e:
            if transient(e):
                raise
            log.info("stream %s was already over: %s", self.parts[0], e)

    # ---- the end of the turn -----------------------------------------------------------

    async def finish(self, parts: list[MessagePart]) -> None:
        """Show the final turn: its text, split as needed, and its draft blocks."""
        first = parts[0]
        done = False
        if self.streaming:
            target = escape(self.text)
            if target == first.body and target.startswith(self.streamed):
                done = await self._complete_stream(first, target[len(self.streamed) :])
            else:
                await self._stop_stream()
        if not done:
            await self._put(0, first)
        for k, part in enumerate(parts[1:], start=1):
            await self._put(k, part)
        for k in sorted(self.parts):
            if k >= len(parts):
                await self._delete(k)

    async def _complete_stream(self, part: MessagePart, rest: str) -> bool:
        """Stop the stream with the text not yet appended and the draft blocks."""
        self.streaming = False
        try:
            await self.surface.client.chat_stopStream(
                channel=self.where.channel,
                ts=self.parts[0],
                markdown_text=rest or None,
                blocks=list(part.tail) or None,
                metadata=self.metadata(0),
            )
        except SlackApiError as e:
            if transient(e):
                raise
            log.info("stream %s ended early (%s); updating it instead", self.parts[0], e)
            return False
        return True

    async def _put(self, k: int, part: MessagePart) -> None:
        """Part `k` of the turn: update its message, or post it if there is none."""
        s = self.surface
        ts = self.parts.get(k)
        if ts is not None:
            try:
                await s.update(self.where.channel, ts, part, self.metadata(k))
                return
            except SlackApiError as e:
                if slack_error(e) != "message_not_found":
                    raise
                # Someone deleted it: post it again.
        ts = await s.post(
            self.where.channel,
            part,
            self.metadata(k),
            thread_ts=self.where.ts,
            username=self.username,
            icon_emoji=self.icon,
        )
        self.parts[k] = ts
        await s.state.posts.record(self.session_id, self.turn, k, ts)

    async def _delete(self, k: int) -> None:
        """An earlier attempt's part that the final text no longer needs."""
        ts = self.parts.pop(k)
        try:
            await self.surface.client.chat_delete(channel=self.where.channel, ts=ts)
        except SlackApiError as e:
            if slack_error(e) != "message_not_found":
                log.warning("cannot delete the extra part %s of turn %s: %s", ts, self.turn, e)

    async def abandon(self) -> None:
        """The turn failed: end the stream and say so in its message (best effort)."""
        ts = self.parts.get(0)
        if ts is None:
            return
        if self.streaming:
            try:
                await self._stop_stream()
            except SlackApiError as e:
                log.info("cannot stop stream %s: %s", ts, e)
        await self.surface.mark_interrupted(self.session_id, self.where, self.turn, ts)
