"""Slack listeners, one module per surface: commands, messages, actions, views.

Each module has `register(app)`. A listener translates a payload into one call
on `bot.sessions.Sessions` (which Bolt hands it as the `sessions` argument,
from the context the app's middleware fills) and shows the outcome; it holds
no business logic and never runs a dialogue.

`tell` is how every listener answers one person privately; `plain_text`
undoes the escaping Slack applies to what people type.
"""

from __future__ import annotations

import logging

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("sora.handlers")


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
) -> None:
    """Show `text` to `user` alone (an ephemeral message in `channel`).

    Slack refuses an ephemeral in a channel the bot is not in; a command's or
    button's `respond` (its response_url) still reaches the person then.
    """
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        return
    except SlackApiError as e:
        if respond is None:
            log.warning("could not tell %s in %s: %s", user, channel, e.response.get("error"))
            return
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as e:  # the response_url expired or is unreachable: nobody left to tell
        log.warning("could not tell %s through response_url: %s", user, e)
