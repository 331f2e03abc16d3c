"""A session whose state Redis lost: say so in its thread and take its root's buttons away.

Nothing else can speak for such a session: its transcript, its post ledger and its
thread binding are gone with it. What is left is Slack's copy of the thread root, whose
blocks are read back (`conversations.history`, one message at the root's ts), kept but
for their buttons, and given one line saying what happened. Called by the sweep (once
per lost session, with a line in the thread), and by a button or a thread reply that
finds no session (the person is told, the root updated).

Each root update is a `chat.update`, so it first waits for a call of the workspace's
update budget (`state.updates`, Slack's Tier 3, shared with every session's turns and
roots): `spend`, made by `update_spender`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack.blocks import METADATA_EVENT, context_block
from bot.slack.poster import WORKSPACE
from state import State
from state.updates import UpdateBudget

log = logging.getLogger("sora.slack")

LOST_LINE = (
    ":warning: This session's state was lost, so it cannot go on; start again with `/sora <idea>`."
)
DELETED_LINE = ":wastebasket: This session was deleted: the app keeps nothing of it."
TURN_LOST = -9  # the metadata tag's turn of the "state was lost" line

# Waits for a call of the workspace's chat.update budget (None: spends none, in tests).
Spend = Callable[[], Awaitable[object]] | None


def update_spender(
    state: State, settings: Settings, team_id: str | None, *, oauth: bool
) -> Callable[[], Awaitable[float]]:
    """What waits for a call of `team_id`'s chat.update budget: the same budget, under the
    same name, as its sessions' surface spends (the team id in OAuth mode, one name for
    the single bot token's one workspace)."""
    budget = UpdateBudget(state.redis, state.keys, per_minute=settings.slack_updates_per_minute)
    name = team_id if oauth and team_id else WORKSPACE

    async def spend() -> float:
        try:
            return await budget.wait_for(name)
        except RedisError as e:
            # Redis full or away (the very news some of these lines bring): this one
            # rare call goes without asking the budget.
            log.info("the update budget cannot be asked (%s); updating the root anyway", e)
            return 0.0

    return spend


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
    """The session id of a thread root this app posted (None for any other message)."""
    meta = (message or {}).get("metadata") or {}
    payload = meta.get("event_payload") or {}
    if meta.get("event_type") != METADATA_EVENT or payload.get("kind") != "root":
        return None
    sid = payload.get("session")
    return str(sid) if sid else None


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


async def retire_root(
    client: AsyncWebClient,
    channel: str,
    ts: str,
    line: str = LOST_LINE,
    *,
    root: dict[str, Any] | None = None,
    spend: Spend = None,
) -> bool:
    """Remove the buttons of the app's thread root at `ts` and add `line`, once.

    False when the root cannot be read or updated (deleted, or not the app's)."""
    return await _amend_root(client, channel, ts, line, root=root, buttons=False, spend=spend)


async def note_on_root(
    client: AsyncWebClient, channel: str, ts: str, line: str, *, spend: Spend = None
) -> bool:
    """Add `line` under the app's thread root at `ts`, once, keeping its buttons (the next
    status update of the root replaces it)."""
    return await _amend_root(client, channel, ts, line, root=None, buttons=True, spend=spend)


async def _amend_root(
    client: AsyncWebClient,
    channel: str,
    ts: str,
    line: str,
    *,
    root: dict[str, Any] | None,
    buttons: bool,
    spend: Spend,
) -> bool:
    root = root or await root_message(client, channel, ts)
    if root is None or session_of(root) is None:
        return False
    blocks = [b for b in root.get("blocks") or [] if buttons or b.get("type") != "actions"]
    if any(b.get("type") == "context" and line in str(b) for b in blocks):
        return True
    blocks.append(context_block(line))
    if spend is not None:
        await spend()
    try:
        await client.chat_update(
            channel=channel, ts=ts, text=str(root.get("text") or line), blocks=blocks
        )
    except SlackApiError as e:
        log.warning("cannot amend the root %s in %s: %s", ts, channel, e.response.get("error"))
        return False
    return True


async def tell_lost(
    client: AsyncWebClient, *, session_id: str, channel: str, ts: str, spend: Spend = None
) -> None:
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
    await retire_root(client, channel, ts, spend=spend)


async def retire_if_live(
    client: AsyncWebClient, channel: str, ts: str, *, spend: Spend = None
) -> bool:
    """A reply came in a thread no session owns: if its root is one of this app's that
    still shows buttons (its session was running when Redis lost it), retire it; True
    then, and the person should be told. A finished session's thread (its root has no
    buttons: people talk about a locked prompt there) is left alone."""
    root = await root_message(client, channel, ts)
    if root is None or session_of(root) is None or not has_buttons(root):
        return False
    return await retire_root(client, channel, ts, root=root, spend=spend)
