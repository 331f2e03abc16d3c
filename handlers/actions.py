"""The thread root's buttons: Stop, Lock draft vN, Retry (their value names the session).

Lock's value also carries the draft version its root showed (`control_target`
reads it back): that version is locked, even if a turn in flight writes a
newer one. The listener acks at once, then asks the service; the answer (a refusal, or
a short confirmation) goes to the person who clicked, as an ephemeral message.
The root itself changes when the worker applies the command.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.sessions import ControlKind, Refused, Sessions
from bot.slack.blocks import ACTION_LOCK, ACTION_RETRY, ACTION_STOP, control_target
from handlers import tell

CONTROLS: dict[str, ControlKind] = {ACTION_STOP: "stop", ACTION_LOCK: "lock", ACTION_RETRY: "retry"}


def register(app: AsyncApp) -> None:
    for action_id in CONTROLS:
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
    user = str((body.get("user") or {})["id"])
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    session_id, version = control_target(str(action["value"]))
    try:
        text = await sessions.control(
            CONTROLS[str(action["action_id"])], session_id=session_id, user_id=user, version=version
        )
    except Refused as e:
        text = f":warning: {e}"
    if channel:
        await tell(client, channel=str(channel), user=user, text=text, respond=respond)
    elif respond is not None:
        await respond(text=text, response_type="ephemeral", replace_original=False)
