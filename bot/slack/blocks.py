"""How a session looks in Slack: the root message, turns, the locked prompt.

Pure functions from domain objects to Block Kit JSON. All Slack limits the app
respects live here. Model and human text is escaped before it reaches Slack,
so it can never ping `@channel`, `@here` or anyone: `<!channel>` becomes the
harmless text `&lt;!channel&gt;`, and messages are posted without `link_names`.
"""

from __future__ import annotations

from typing import Any

from bot.dialogue.models import Session, SessionStatus

# Slack's limits (one place for each).
MARKDOWN_BLOCK_MAX_CHARS = 12_000  # markdown blocks of one message, together
SECTION_TEXT_MAX_CHARS = 3_000
MESSAGE_TEXT_MAX_CHARS = 40_000
MAX_BLOCKS = 50
STREAM_UPDATE_MIN_INTERVAL_S = 1.0  # post-then-update fallback: at most one update a second

# Interactivity.
ACTION_STOP = "sora_stop"
ACTION_LOCK = "sora_lock"
ACTION_RETRY = "sora_retry"
MODAL_CALLBACK = "sora_new_session"
METADATA_EVENT = "sora_turn"  # message metadata tag of every post the app makes

STATUS_LABELS = {
    SessionStatus.RUNNING: ":hourglass_flowing_sand: Running",
    SessionStatus.PAUSED: ":warning: Paused",
    SessionStatus.LOCKED: ":lock: Locked",
    SessionStatus.STOPPED: ":black_square_for_stop: Stopped",
}


def escape(text: str) -> str:
    """Escape Slack's control characters so text shows as written and pings no one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _button(text: str, action_id: str, session_id: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": session_id,
    }
    if style:
        b["style"] = style
    return b


def root_text(session: Session) -> str:
    """Notification text of the root message."""
    return truncate(f"Sora Copilot session: {session.idea}", 300)


def root_blocks(session: Session) -> list[dict[str, Any]]:
    """The thread root: idea, persona, who started it, status, round, tokens, controls."""
    o = session.origin
    starter = f"<@{o.user_id}>" if o.user_id else escape(o.user_name or "someone")
    status = STATUS_LABELS[session.status]
    if session.status == SessionStatus.LOCKED and session.locked is not None:
        status += f" (v{session.locked.draft.version}, {session.locked.reason.value})"
    if session.status == SessionStatus.PAUSED and session.error:
        status += f": {escape(truncate(session.error, 300))}"
    usage = session.usage
    fields = [
        f"*Persona:* {escape(session.persona.display_name)}",
        f"*Target:* {escape(session.target.name)}",
        f"*Started by:* {starter}",
        f"*Round:* {session.rounds} of {session.max_rounds}",
        f"*Status:* {status}",
        f"*Tokens:* {usage.total:,}",
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(
                    f":clapper: *Sora Copilot* — {escape(session.idea)}", SECTION_TEXT_MAX_CHARS
                ),
            },
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    buttons: list[dict[str, Any]] = []
    if session.status in (SessionStatus.RUNNING, SessionStatus.PAUSED):
        if session.latest_draft is not None:
            buttons.append(_button("Lock latest draft", ACTION_LOCK, session.id, "primary"))
        buttons.append(_button("Stop", ACTION_STOP, session.id, "danger"))
    if session.status == SessionStatus.PAUSED:
        buttons.append(_button("Retry", ACTION_RETRY, session.id))
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks
