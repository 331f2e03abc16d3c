"""Render, Confirm and Cancel: a locked prompt becomes a clip in its thread.

Render (on the locked reply) and Master (on a draft's done message) answer the person
who pressed, privately, with the cost and what is left of today's budgets, and Confirm
and Cancel (`bot.slack.render_desk`); nothing is submitted before Confirm, and a second
press of the same Confirm submits nothing. `handlers.actions` listens for these buttons
with the others: it acks at once, then answers here.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.sessions import Refused, Sessions
from bot.slack.blocks import (
    ACTION_RENDER,
    ACTION_RENDER_CANCEL,
    ACTION_RENDER_CONFIRM,
    render_target,
)
from handlers import pressed_where, tell

RENDER_ACTIONS = (ACTION_RENDER, ACTION_RENDER_CONFIRM, ACTION_RENDER_CANCEL)


async def answer_render(
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    sessions: Sessions,
) -> None:
    """Render or Master: the offer; Confirm: submit; Cancel: nothing. Said privately."""
    user, channel, root = pressed_where(body)
    session_id, tier, rid = render_target(str(action.get("value") or ""))
    action_id = str(action["action_id"])
    blocks: list[dict[str, Any]] | None = None
    try:
        if action_id == ACTION_RENDER_CANCEL:
            text = "Cancelled: nothing was rendered or charged."
        elif action_id == ACTION_RENDER_CONFIRM:
            text = await sessions.renders.confirm(
                session_id=session_id, user_id=user, tier=tier, rid=rid
            )
        else:
            offer = await sessions.renders.offer(session_id=session_id, user_id=user, tier=tier)
            text, blocks = offer.text, offer.blocks
    except Refused as e:  # Gone too: said privately, nothing changed
        text = f":warning: {e}"
    if action_id != ACTION_RENDER and respond is not None:
        # The confirmation is an ephemeral message with a response_url: replace it, so its
        # buttons go (a second press finds the render anyway).
        try:
            await respond(text=text, response_type="ephemeral", replace_original=True)
            return
        except Exception:  # expired: say it as a new ephemeral message
            pass
    if channel:
        await tell(
            client,
            channel=str(channel),
            user=user,
            text=text,
            blocks=blocks,
            thread_ts=root,
            respond=respond,
        )
    elif respond is not None:
        await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
