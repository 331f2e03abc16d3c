"""The new-session modal: how it looks, and its submission.

`/sora` with no text opens it (see `handlers.commands`). Its fields are the
same inputs as `/sora <idea> persona: … rounds: N target: …`, checked by the
same rules; a bad field is answered in place (`response_action: errors`), and
a good submission closes the modal and starts the session in the channel the
command came from, carried in `private_metadata`.
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.config import MAX_IDEA_CHARS, MAX_ROUNDS, MIN_ROUNDS
from bot.dialogue.models import Persona, Session, TargetProfile
from bot.dialogue.profiles import FREE_TEXT_MAX_CHARS, targets
from bot.sessions import BadInput, CommandRequest, Invoker, Sessions, field_errors
from bot.slack.blocks import MODAL_CALLBACK, truncate
from handlers import start

# Block ids of the modal's inputs (each input's action_id is the same string).
IDEA = "idea"
PERSONA = "persona"
PERSONA_TEXT = "persona_text"
ROUNDS = "rounds"
TARGET = "target"

OPTION_TEXT_MAX_CHARS = 75  # Slack's limit for an option's text


def register(app: AsyncApp) -> None:
    app.view_submission(MODAL_CALLBACK)(on_new_session_submitted)


def _option(text: str, value: str) -> dict[str, Any]:
    return {
        "text": {"type": "plain_text", "text": truncate(text, OPTION_TEXT_MAX_CHARS)},
        "value": value,
    }


def _persona_option(p: Persona) -> dict[str, Any]:
    return _option(f"{p.display_name} ({p.role})", p.name)


def _target_option(t: TargetProfile) -> dict[str, Any]:
    return _option(f"{t.name} ({t.model_name})", t.name)


def new_session_modal(sessions: Sessions, *, channel_id: str) -> dict[str, Any]:
    """The modal view for a new session started from `channel_id`."""
    s = sessions.settings
    shipped = sorted(sessions.personas(), key=lambda p: p.name)
    profiles = sorted(targets(s.extra_profiles_dir).values(), key=lambda t: t.name)
    persona_select: dict[str, Any] = {
        "type": "static_select",
        "action_id": PERSONA,
        "placeholder": {"type": "plain_text", "text": "Choose a persona"},
        "options": [_persona_option(p) for p in shipped],
    }
    default_persona = next((p for p in shipped if p.name == s.default_persona), None)
    if default_persona is not None:
        persona_select["initial_option"] = _persona_option(default_persona)
    target_select: dict[str, Any] = {
        "type": "static_select",
        "action_id": TARGET,
        "options": [_target_option(t) for t in profiles],
    }
    default_target = next((t for t in profiles if t.name == s.default_target), None)
    if default_target is not None:
        target_select["initial_option"] = _target_option(default_target)
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK,
        "title": {"type": "plain_text", "text": "New Sora session"},
        "submit": {"type": "plain_text", "text": "Start"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel_id": channel_id}),
        "blocks": [
            {
                "type": "input",
                "block_id": IDEA,
                "label": {"type": "plain_text", "text": "Idea"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": IDEA,
                    "multiline": True,
                    "max_length": MAX_IDEA_CHARS,
                    "placeholder": {
                        "type": "plain_text",
                        "text": "A lighthouse keeper finds a message in a bottle",
                    },
                },
            },
            {
                "type": "input",
                "block_id": PERSONA,
                "optional": True,
                "label": {"type": "plain_text", "text": "Persona"},
                "element": persona_select,
            },
            {
                "type": "input",
                "block_id": PERSONA_TEXT,
                "optional": True,
                "label": {"type": "plain_text", "text": "…or describe your own persona"},
                "hint": {"type": "plain_text", "text": "Used instead of the choice above."},
                "element": {
                    "type": "plain_text_input",
                    "action_id": PERSONA_TEXT,
                    "max_length": FREE_TEXT_MAX_CHARS,
                    "placeholder": {
                        "type": "plain_text",
                        "text": "a 1970s Italian horror director",
                    },
                },
            },
            {
                "type": "input",
                "block_id": ROUNDS,
                "label": {"type": "plain_text", "text": "Rounds at most"},
                "element": {
                    "type": "number_input",
                    "action_id": ROUNDS,
                    "is_decimal_allowed": False,
                    "min_value": str(MIN_ROUNDS),
                    "max_value": str(MAX_ROUNDS),
                    "initial_value": str(s.default_rounds),
                },
            },
            {
                "type": "input",
                "block_id": TARGET,
                "label": {"type": "plain_text", "text": "Target video model"},
                "element": target_select,
            },
        ],
    }


def _value(values: dict[str, Any], block_id: str) -> str | None:
    """The value of an input block as typed or chosen; None when left empty."""
    element = (values.get(block_id) or {}).get(block_id) or {}
    selected = element.get("selected_option")
    raw = selected.get("value") if isinstance(selected, dict) else element.get("value")
    return str(raw) if raw not in (None, "") else None


async def on_new_session_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    values: dict[str, Any] = (view.get("state") or {}).get("values") or {}
    free_text = (_value(values, PERSONA_TEXT) or "").strip()
    request = CommandRequest(
        kind="start",
        idea=_value(values, IDEA) or "",
        persona=free_text or _value(values, PERSONA),
        rounds=_value(values, ROUNDS),
        target=_value(values, TARGET),
    )

    def block_for(field: str) -> str:
        # Block ids are the field names, but a typed persona is shown under its own input.
        return PERSONA_TEXT if field == PERSONA and free_text else field

    errors = field_errors(request, sessions.settings)
    if errors:
        await ack(
            response_action="errors",
            errors={block_for(field): message for field, message in errors.items()},
        )
        return
    try:
        session = sessions.build(request)
    except BadInput as e:  # field_errors found none; kept so no input can slip through
        await ack(response_action="errors", errors={block_for(e.field or IDEA): str(e)})
        return
    await ack()
    await after_ack.submit(_start_from_modal(session, body, view, client, sessions, after_ack))


async def _start_from_modal(
    session: Session,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    user = body.get("user") or {}
    metadata = json.loads(view.get("private_metadata") or "{}")
    invoker = Invoker(
        channel_id=str(metadata["channel_id"]),
        user_id=str(user["id"]),
        team_id=user.get("team_id") or (body.get("team") or {}).get("id"),
        user_name=user.get("username") or user.get("name"),
    )
    await start(session, invoker, sessions=sessions, after_ack=after_ack, client=client)
