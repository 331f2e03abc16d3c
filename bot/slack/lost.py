"""A session whose state Redis lost: say so in its thread and take its root's buttons away.

Nothing else can speak for such a session: its transcript, its post ledger and its
thread binding are gone with it. What is left is Slack's copy of the thread root, whose
blocks are read back (`conversations.history`, one message at the root's ts), kept but
for their buttons, and given one line saying what happened. Called by the sweep (once
per lost session, with a line in the thread), and by a button or a thread reply that
finds no session (the person is told, the root updated).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import METADATA_EVENT, context_block

log = logging.getLogger("sora.slack")

LOST_LINE = (
    ":warning: This session's state was lost, so it cannot go on; start again with `/sora <idea>`."
)
TURN_LOST = -9  # the metadata tag's turn of the "state was lost" line


async def root_message(client: AsyncWebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """The message at `ts` in `channel` (a thread root), with its metadata; None if gone."""
    try:
        page = await client.conversations_history(
            channel=channel, latest=ts, inclusive=True, limit=1, include_all_metadata=True
        )
    except SlackApiError as e:
        log.info("cannot read the root %s in %s: %s", ts, channel, e.response.get("error"))
        return None
    for message in page.get("messages") or []:
        if message.get("ts") == ts:
            return dict(message)
    return None


def session_of(message: dict[str, Any] | None) -> str | None:
    """The session id a message of this app is tagged with (None for anyone else's)."""
    meta = (message or {}).get("metadata") or {}
    if meta.get("event_type") != METADATA_EVENT:
        return None
    sid = (meta.get("event_payload") or {}).get("session")
    return str(sid) if sid else None


async def retire_root(client: AsyncWebClient, channel: str, ts: str) -> bool:
    """Remove the buttons of the root at `ts` and add the "state was lost" line, once.

    False when the root cannot be read or updated (deleted, or not the app's)."""
    root = await root_message(client, channel, ts)
    if root is None or session_of(root) is None:
        return False
    blocks = [b for b in root.get("blocks") or [] if b.get("type") != "actions"]
    if any(b.get("type") == "context" and LOST_LINE in str(b) for b in blocks):
        return True
    blocks.append(context_block(LOST_LINE))
    try:
        await client.chat_update(
            channel=channel, ts=ts, text=str(root.get("text") or LOST_LINE), blocks=blocks
        )
    except SlackApiError as e:
        log.warning("cannot retire the root %s in %s: %s", ts, channel, e.response.get("error"))
        return False
    return True


async def tell_lost(client: AsyncWebClient, *, session_id: str, channel: str, ts: str) -> None:
    """The sweep found `session_id` gone: one line in its thread, its root retired."""
    try:
        await client.chat_postMessage(
            channel=channel,
            thread_ts=ts,
            text=LOST_LINE,
            metadata={
                "event_type": METADATA_EVENT,
                "event_payload": {"session": session_id, "turn": TURN_LOST, "part": 0},
            },
            unfurl_links=False,
            unfurl_media=False,
        )
    except SlackApiError as e:
        log.warning("session %s: cannot say in its thread that it was lost: %s", session_id, e)
    await retire_root(client, channel, ts)
