"""Human replies in a session's thread become interjections for the next speaker.

Only a person's new reply inside a thread counts: a plain message, or one of
the two subtypes that are still a person's new message (`thread_broadcast`, a
reply also sent to the channel; `file_share`, a reply with a file, whose text
is read). Ignored: bot messages (`bot_id`, or subtype `bot_message`), the
app's own posts, every other subtype (edits, deletions, joins, …), top-level
channel messages, and threads that are no session's. A reply to a finished (locked or stopped)
session is ignored quietly: people often talk about a locked prompt in its
thread, and an ephemeral for each of those replies would be noise.

Bolt acks every event before the listener runs, and Slack retries an event it
thinks was lost (`X-Slack-Retry-Num`); the inbox dedupes by `event_id` in the
same atomic step that queues the reply, so a retry changes nothing.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.sessions import GONE, Refused, Sessions
from handlers import plain_text, tell


def register(app: AsyncApp) -> None:
    # Every message event, subtypes included, so that none is left "unhandled".
    app.event("message")(on_message)


# Subtypes that are a person's new message rather than a change to one.
NEW_MESSAGE_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


def is_human_thread_reply(event: dict[str, Any], bot_user_id: str | None) -> bool:
    subtype = event.get("subtype")
    if subtype and subtype not in NEW_MESSAGE_SUBTYPES:
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    if not user or user == bot_user_id:
        return False
    thread_ts, ts = event.get("thread_ts"), event.get("ts")
    return bool(thread_ts) and bool(ts) and thread_ts != ts


async def on_message(
    body: dict[str, Any],
    event: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    if is_human_thread_reply(event, context.bot_user_id):
        await after_ack.submit(_interject(body, event, client, sessions, context.bot_user_id))


async def _interject(
    body: dict[str, Any],
    event: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    bot_user_id: str | None,
) -> None:
    channel, thread_ts, user = str(event["channel"]), str(event["thread_ts"]), str(event["user"])
    try:
        result = await sessions.interject(
            channel_id=channel,
            thread_ts=thread_ts,
            user_id=user,
            text=plain_text(str(event.get("text") or "")),
            source_id=str(event["ts"]),
            event_id=body.get("event_id"),
            team_id=body.get("team_id"),
        )
    except Refused as e:
        await tell(client, channel=channel, user=user, text=f":warning: {e}", thread_ts=thread_ts)
        return
    # No session owns the thread. If it is one of this app's (a reply names the author of
    # its thread's first message in `parent_user_id`), its session may have been lost while
    # running: say so.
    parent = event.get("parent_user_id")
    if (
        result is None
        and (parent is None or parent == bot_user_id)
        and await sessions.lost_thread(channel, thread_ts, body.get("team_id"))
    ):
        await tell(
            client, channel=channel, user=user, text=f":warning: {GONE}", thread_ts=thread_ts
        )
