"""Slack listeners, one module per surface: commands, messages, actions, views.

Each module has `register(app)`. A listener translates a payload into one call
on `bot.sessions.Sessions` (which Bolt hands it as the `sessions` argument,
from the context the app's middleware fills) and shows the outcome; it holds
no business logic and never runs a dialogue.

`tell` is how every listener answers one person privately; `plain_text`
undoes the escaping Slack applies to what people type; `start` is how `/sora`
and the new-session modal start a session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.dialogue.models import Session
from bot.sessions import Invoker, Refused, Sessions

log = logging.getLogger("sora.handlers")


def pressed_where(body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """Who pressed a button, in which channel, and the ts of the thread root of the pressed
    message (the root itself, or the root of the thread the message is in)."""
    user = str((body.get("user") or {})["id"])
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
    message = body.get("message") or {}
    root = message.get("thread_ts") or container.get("thread_ts") or container.get("message_ts")
    return user, channel, root


def plain_text(slack_text: str) -> str:
    """Text as the person typed it: Slack sends `&`, `<`, `>` as HTML entities.

    Mentions stay in Slack's `<@U…>` form. Whatever shows this text in Slack
    escapes it again (`bot.slack.blocks.escape`).
    """
    return slack_text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def tell(
    client: AsyncWebClient,
    *,
    channel: str,
    user: str,
    text: str,
    thread_ts: str | None = None,
    respond: AsyncRespond | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> None:
    """Show `text` (and `blocks`, if given) to `user` alone (an ephemeral message in
    `channel`).

    Slack refuses an ephemeral in a channel the bot is not in; a command's or
    button's `respond` (its response_url) still reaches the person then.
    """
    try:
        await client.chat_postEphemeral(
            channel=channel, user=user, text=text, thread_ts=thread_ts, blocks=blocks
        )
        return
    except SlackApiError as e:
        if respond is None:
            log.warning("could not tell %s in %s: %s", user, channel, e.response.get("error"))
            return
    try:
        await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
    except Exception as e:  # the response_url expired or is unreachable: nobody left to tell
        log.warning("could not tell %s through response_url: %s", user, e)


def queued_notice(ahead: int) -> str:
    sessions = "1 session is" if ahead == 1 else f"{ahead} sessions are"
    return (
        f"Starting — {sessions} queued in this channel before yours. Slack allows about "
        "one new message a second per channel, so your thread opens in a moment."
    )


async def start(
    session: Session,
    invoker: Invoker,
    *,
    sessions: Sessions,
    after_ack: AfterAck,
    client: AsyncWebClient,
    respond: AsyncRespond | None = None,
) -> None:
    """Start `session` for `invoker`: reserve its slots now, post its root in the channel's line.

    The root takes its place in the channel's line first, before any await, so
    roots go out in the order their commands arrived; then the slots are
    reserved, and a cap's refusal is told at once (its place in line is
    skipped, taking no post token). The root then waits its turn at the
    channel's post rate, holding nothing that other channels or acks need; the
    starter is told when others are ahead.
    """
    channel, user = invoker.channel_id, invoker.user_id
    reserved: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def pace() -> None:
        if await reserved:
            await sessions.wait_to_post(channel, invoker.team_id)

    async def post_root() -> None:
        if not reserved.result():
            return
        try:
            await sessions.post_root(session, invoker=invoker, paced=True)
        except Refused as e:
            await tell(client, channel=channel, user=user, text=f":warning: {e}", respond=respond)

    ahead = after_ack.enqueue(channel, pace, post_root())
    try:
        await sessions.reserve(session, invoker=invoker)
        reserved.set_result(True)
    except Refused as e:
        reserved.set_result(False)
        await tell(client, channel=channel, user=user, text=f":warning: {e}", respond=respond)
        return
    finally:
        if not reserved.done():  # an unexpected failure: free the line, post nothing
            reserved.set_result(False)
    if ahead:
        await tell(client, channel=channel, user=user, text=queued_notice(ahead), respond=respond)
