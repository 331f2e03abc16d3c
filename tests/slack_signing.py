"""Requests signed exactly as Slack signs them, for tests that post to `/slack/events`.

Slack sends `X-Slack-Request-Timestamp: <epoch seconds>` and
`X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<raw body>" keyed
with the signing secret>`. Slash commands and interactivity come form-encoded
(interactivity as a single `payload=<JSON>` field); the Events API sends JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


def signature(secret: str, timestamp: int, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, body: str, *, content_type: str, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(secret, ts, body),
    }


def command_body(**fields: str) -> str:
    """A slash command's form body (`command`, `text`, `user_id`, `channel_id`, …)."""
    return urlencode(fields)


def interactive_body(payload: dict[str, Any]) -> str:
    """A block_actions or view_submission request: `payload=<JSON>`, form-encoded."""
    return urlencode({"payload": json.dumps(payload)})


def event_body(envelope: dict[str, Any]) -> str:
    """An Events API request: the envelope as JSON."""
    return json.dumps(envelope)


def thread_reply_event(
    *,
    channel: str,
    user: str,
    text: str,
    ts: str,
    thread_ts: str,
    event_id: str,
    team_id: str = "T0FAKE",
    api_app_id: str = "A0FAKE",
) -> dict[str, Any]:
    """The Events API `event_callback` Slack sends for a person's reply in a thread."""
    return {
        "token": "unused",
        "team_id": team_id,
        "api_app_id": api_app_id,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
            "channel_type": "channel",
        },
    }
