"""The thread root's buttons: Stop, Lock draft vN, Retry (their value names the session).

Lock's value also carries the draft version its root showed (`control_target`
reads it back): that version is locked, even if a turn in flight writes a
newer one. The listener acks at once, then asks the service; the answer (a refusal, or
a short confirmation) goes to the person who clicked, as an ephemeral message.
The root itself changes when the worker applies the command. Delete, on the locked
reply, removes the session and its library entry (`Sessions.delete`). A button whose
session no longer exists says so and takes the buttons off its root.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.sessions import ControlKind, Gone, Refused, Sessions
from bot.slack.blocks import (
    ACTION_DELETE,
    ACTION_LOCK,
    ACTION_RETRY,
    ACTION_STOP,
    control_target,
)
from handlers import pressed_where, tell
from handlers.renders import RENDER_ACTIONS, answer_render

CONTROLS: dict[str, ControlKind] = {ACTION_STOP: "stop", ACTION_LOCK: "lock", ACTION_RETRY: "retry"}


def register(app: AsyncApp) -> None:
    for action_id in (*CONTROLS, ACTION_DELETE, *RENDER_ACTIONS):
        app.action(action_id)(on_control)


async def on_control(
    ack: AsyncAck,
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    await ack()
    await after_ack.submit(_control(action, body, client, respond, sessions))


async def _control(
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    sessions: Sessions,
) -> None:
    action_id = str(action["action_id"])
    if action_id in RENDER_ACTIONS:
        await answer_render(action, body, client, respond, sessions)
        return
    user, channel, root = pressed_where(body)
    session_id, version = control_target(str(action["value"]))
    team = (body.get("user") or {}).get("team_id") or (body.get("team") or {}).get("id")
    try:
        if action_id == ACTION_DELETE:
            text = await sessions.delete(session_id=session_id, user_id=user, team_id=team)
        else:
            text = await sessions.control(
                CONTROLS[action_id], session_id=session_id, user_id=user, version=version
            )
    except Gone as e:
        text = f":warning: {e}"
        if channel and root:  # nothing is behind its buttons any more: take them away
            await sessions.retire(channel, root, team)
    except Refused as e:
        text = f":warning: {e}"
    await _answer(client, respond, channel=channel, user=user, text=text)


async def _answer(
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    *,
    channel: str | None,
    user: str,
    text: str,
) -> None:
    if channel:
        await tell(client, channel=str(channel), user=user, text=text, respond=respond)
    elif respond is not None:
        await respond(text=text, response_type="ephemeral", replace_original=False)
