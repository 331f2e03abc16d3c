"""Slack's errors, read once: what a failed call means and what a person can do about it.

slack_sdk raises `SlackApiError` for every answer with `ok: false` or an HTTP
error, keeping the answer on `.response`; a dropped connection raises aiohttp's
or asyncio's own errors, and then the call may or may not have been carried
out. Code outside `bot.slack` never sees either: it gets `SlackRefusal` (Slack
said no, `error` is its code) or `SlackUnreachable` (no answer).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

# Refusals no retry fixes: a step that gets one is recorded as skipped.
PERMANENT = frozenset(
    {
        "not_in_channel",
        "missing_scope",
        "is_archived",
        "channel_not_found",
        "restricted_action",
        "not_allowed_token_type",
        "method_not_supported_for_channel_type",
        "ekm_access_denied",
        "team_access_not_granted",
        "access_denied",
        "no_permission",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
    }
)
# Connection-level failures: the request may or may not have been carried out.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)
SLACK_OR_CONNECTION: tuple[type[Exception], ...] = (SlackApiError, *CONNECTION_ERRORS)
# What may go wrong with a best-effort call made while a model writes: it is then skipped.
BEST_EFFORT_ERRORS: tuple[type[Exception], ...] = (*SLACK_OR_CONNECTION, RedisError)


class SlackRefusal(Exception):
    """Slack answered a call with an error; `error` is its code (`not_in_channel`, ...)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class SlackUnreachable(Exception):
    """Slack gave no answer (a dropped connection, a timeout)."""


def slack_error(e: SlackApiError) -> str:
    """The `error` code of a Slack answer ("" if it has none, e.g. an HTML 5xx page)."""
    try:
        return str(e.response.get("error") or "")
    except Exception:  # a body that is not JSON
        return ""


def status_of(e: SlackApiError) -> int:
    return int(e.response.status_code)


def transient(e: SlackApiError) -> bool:
    """A rate limit or server fault (not a refusal)."""
    status = status_of(e)
    return status == 429 or status >= 500


class HttpAnswer:
    """The minimal response a SlackApiError needs, for an HTTP error outside the Web API
    (an upload URL's)."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return default


def http_error(message: str, status: int) -> SlackApiError:
    return SlackApiError(message, HttpAnswer(status))  # type: ignore[no-untyped-call]
