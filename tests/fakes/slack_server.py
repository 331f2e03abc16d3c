"""A fake Slack Web API server, so the app can be tested without ever reaching Slack.

The app talks to Slack only through slack_sdk's ``AsyncWebClient``, whose ``base_url`` comes
from the ``SLACK_API_URL`` setting. Point that at :attr:`FakeSlack.api_url` and every Web API
call lands here instead, where a test can look at what the app did (messages, threads, pins,
reactions, files, views, every request) and make Slack misbehave (rate limits, server errors,
API errors) on demand.

Two ways to run it:

* in-process, from async tests::

      async with FakeSlack() as slack:
          client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
          ...
          assert slack.thread(channel, ts)[1]["text"] == "..."

* as a process, for end-to-end tests that start the app in a subprocess::

      python -m tests.fakes.slack_server --port 0

  prints its API URL (``http://127.0.0.1:PORT/api/``) on the first line of stdout, then
  serves until SIGINT/SIGTERM. A test in another process inspects and steers it over HTTP:
  ``GET /_fake/state``, ``GET /_fake/calls``, ``POST /_fake/faults``, ``DELETE /_fake/faults``,
  ``POST /_fake/rate_limit``, ``POST /_fake/seed``, ``POST /_fake/reset``,
  ``GET /_fake/files/{file_id}`` (see :meth:`FakeSlack._build_app`).

Slack behaviours it imitates:

* transport: ``POST``/``GET`` ``/api/<method>``; arguments from the query string, form bodies
  (urlencoded or multipart) and JSON bodies, merged. JSON bodies are honoured only by the
  methods Slack accepts JSON for (``chat.*``, ``views.*``, ``pins.add``, ``reactions.*``,
  ``files.completeUploadExternal``); for the read methods (``conversations.*``, ``users.info``,
  ``auth.test``, ...) Slack ignores a JSON body and so does the fake.
* auth: ``Authorization: Bearer`` (or a ``token`` form/query argument); none gives
  ``not_authed``, an unknown token ``invalid_auth``.
* errors: HTTP 200 with ``{"ok": false, "error": ...}``, with ``response_metadata.messages``
  for argument and block errors; rate limits as HTTP 429 + ``Retry-After`` +
  ``{"ok": false, "error": "ratelimited"}``; server faults as an HTML 5xx page.
* ``ts`` values like Slack's (``"1732395600.000100"``: epoch seconds and six digits), strictly
  increasing; ids shaped like Slack's (``C…``, ``F…``, ``V…``); threads (``thread_ts``,
  ``reply_count``, ``reply_users``, ``latest_reply``, ``parent_user_id``, broadcasts),
  ``edited`` on updates, tombstones when a thread root is deleted, metadata returned only with
  ``include_all_metadata``, cursor pagination with ``response_metadata.next_cursor``.
* validation: ``no_text``, ``msg_too_long`` (text over 40,000 characters; a stream's
  ``markdown_text`` over 12,000), ``invalid_blocks`` / ``invalid_blocks_format`` (over 50
  blocks, section text over 3,000 or empty, section field over 2,000, header over 150,
  markdown blocks together over 12,000 per message, duplicate ``block_id``, button text over
  75, context over 10 elements, actions over 25), ``invalid_metadata_format`` /
  ``invalid_metadata_schema``, ``channel_not_found``, ``message_not_found``,
  ``cant_update_message``, ``already_pinned``, ``already_reacted``, ``no_reaction``,
  ``invalid_name``, ``user_not_found``, ``user_not_in_channel``, ``hash_conflict``.
* chat streaming (``chat.startStream``/``appendStream``/``stopStream``): ``thread_ts`` required,
  ``missing_recipient_user_id``/``missing_recipient_team_id`` outside DMs,
  ``message_not_in_streaming_state`` after the stream stopped or expired (Slack ends a stream
  about five minutes after it starts: ``stream_ttl``); the message's ``text`` is the
  concatenation of every ``markdown_text`` argument and ``markdown_text`` chunk.
* the bot's membership of each channel (``seed_channel(bot_member=False)``): with
  ``chat:write.public`` it posts in a public channel it has not joined, but history reads
  (``conversations.replies``/``history``), ``pins.add`` and ``files.completeUploadExternal``
  there answer ``not_in_channel`` until ``conversations.join`` (which a private channel refuses
  with ``channel_not_found``/``method_not_supported_for_channel_type``, an archived one with
  ``is_archived``; a repeat join warns ``already_in_channel``). A private channel the bot is not
  in does not exist for it (``channel_not_found``); an archived one takes no posts. Sources:
  docs.slack.dev reference pages of conversations.join, chat.postMessage (chat:write.public),
  files.completeUploadExternal.
* the HTTP verb of each call (slack_sdk sends read methods such as ``conversations.replies``,
  ``conversations.history`` and ``chat.getPermalink`` as GET, with their arguments in the
  query string): recorded in :attr:`Call.http_method`, and answered either way.
* lost answers (:meth:`FakeSlack.lose_next`): the call is carried out, then its connection is
  closed without an answer, so the caller cannot tell whether it happened.
* the ``files_upload_v2`` flow (slack_sdk ``AsyncWebClient.files_upload_v2``: step 1
  ``files.getUploadURLExternal``, step 2 the POST of the bytes, step 3
  ``files.completeUploadExternal`` "and files.info"): ``files.getUploadURLExternal`` hands out
  an upload URL on this server, or ``file_upload_size_restricted`` when the file is over the
  workspace's upload limit (:attr:`FakeSlack.max_upload_bytes`; an admin's setting, per the
  method's reference page); the bytes are POSTed there (answer ``text/plain``
  ``OK - <size>``); ``files.completeUploadExternal`` answers the files' ids and titles and no
  message ``ts`` (bolt-js#2115, python-slack-sdk#1329), and shares them into the channel or
  thread as one message *asynchronously*, :attr:`FakeSlack.share_delay_s` later ("Files are
  processed asynchronously", files.getUploadURLExternal's reference page); ``files.info``
  shows a file's ``shares`` and ``channels`` only once that share has happened.

* OAuth (distributed apps; docs.slack.dev/authentication/installing-with-oauth and
  /using-token-rotation, the reference page of oauth.v2.access): ``GET /oauth/v2/authorize``
  shows a consent page whose *Allow* redirects to the app's ``redirect_uri`` with a one-use
  ``code`` (10 minutes) and the ``state`` it was given, or ``error=access_denied`` on
  *Cancel*; ``oauth.v2.access`` takes the client id and secret (HTTP Basic, or form fields)
  and exchanges a code for a bot token of the workspace installed into
  (:meth:`FakeSlack.add_team`), ``invalid_code`` for a code used twice or expired,
  ``bad_client_secret`` / ``invalid_client_id``. With token rotation on
  (:attr:`FakeSlack.token_rotation`) tokens expire after ``expires_in`` seconds
  (``token_expired`` after that) and come with a refresh token that
  ``grant_type=refresh_token`` exchanges for a new pair, revoking the one used
  (``invalid_refresh_token`` if used again). Each token belongs to one workspace: ``auth.test``
  answers its team, and :attr:`Call.token` says which token every call carried. An
  Enterprise Grid org-wide install (``add_team(..., enterprise_id=..., org_wide=True)``)
  answers ``is_enterprise_install: true`` with no team, as Slack does.

* Socket Mode: ``apps.connections.open`` (app-level token only; a bot token gets
  ``not_allowed_token_type``) answers a one-use ``ws://`` URL on this server; a client that
  connects gets Slack's ``hello``, then whatever envelopes a test pushes with
  :meth:`FakeSlack.socket_send` (``slash_commands``, ``events_api``, ``interactive``), and
  its acknowledgements (``{"envelope_id", "payload"?}``) are kept for
  :meth:`FakeSlack.socket_ack`.

What it does not imitate:

* Only the methods in :attr:`FakeSlack.METHODS`; anything else answers ``unknown_method``.
* No events over HTTP: Slack's Events API and interactivity requests are not sent to the
  app's request URL; tests sign and send those themselves. Socket Mode envelopes go out only
  when a test pushes them, and Slack's redelivery of unacknowledged envelopes and its
  periodic ``disconnect`` (refresh) are not imitated.
* Scopes, Enterprise Grid's event routing, and Slack's exact validation wording are not
  modelled; every workspace shares one set of channels and users; block
  validation checks only the limits above.
  Lengths are counted in Python characters.
* It is stricter than Slack in one place on purpose: a ``thread_ts`` that names no message in
  the channel is refused with ``thread_not_found`` (Slack accepts it and the reply is lost
  from view), so that bug shows in tests.
* No thumbnails, previews or transcoding of uploaded files.
* Slack's own tiered rate limits are not enforced unless :meth:`FakeSlack.set_rate_limit`
  turns on the per-channel ``chat.postMessage`` limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import html
import json
import mimetypes
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler as AiohttpHandler

from tests.fakes.loopback import LoopbackServer, serve_until_signalled

JSON = dict[str, Any]

TEAM_ID = "T0FAKE"
TEAM_NAME = "Fake Workspace"
TEAM_DOMAIN = "fake-workspace"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
BOT_NAME = "sora-copilot"
APP_ID = "A0FAKE"
DEFAULT_TOKEN = "xoxb-fake-bot-token"
DEFAULT_APP_TOKEN = "xapp-1-A0FAKE-1-fake-app-token"
CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "fake-client-secret"
OAUTH_CODE_TTL_S = 600  # Slack: an authorization code expires after ten minutes
ROTATING_TOKEN_TTL_S = 43_200  # Slack: a rotating access token lasts twelve hours
# Methods authenticated by the app's client id and secret, not a token.
CLIENT_AUTH_METHODS = frozenset({"oauth.v2.access"})
SOCKET_PATH = "/link/"
# Methods that take the app-level token (xapp-…) and nothing else.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
UPLOAD_METHOD = "upload"  # the name under which POSTs of file bytes are recorded and faulted

MAX_TEXT_CHARS = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT_CHARS = 3_000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_CHARS = 2_000
MAX_HEADER_TEXT_CHARS = 150
MAX_MARKDOWN_BLOCKS_CHARS = 12_000
MAX_BLOCK_ID_CHARS = 255
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT_CHARS = 75
MAX_STREAM_MARKDOWN_CHARS = 12_000
MAX_VIEW_TITLE_CHARS = 24
MAX_VIEW_BLOCKS = 100
MAX_PRIVATE_METADATA_CHARS = 3_000
DEFAULT_STREAM_TTL = 300.0
# How long after files.completeUploadExternal answers the file's share appears.
SHARE_DELAY_S = 0.05

# Methods for which Slack reads a JSON body. Others ignore it (they take form or query).
JSON_METHODS = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.postEphemeral",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "views.open",
        "views.update",
        "views.publish",
        "pins.add",
        "reactions.add",
        "reactions.remove",
        "files.completeUploadExternal",
        "assistant.threads.setStatus",  # its reference page lists application/json
    }
)
STREAM_CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
_ID_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_TS_RE = re.compile(r"^\d{10}\.\d{6}$")


class SlackError(Exception):
    """An API error: answered as HTTP 200 ``{"ok": false, "error": error}``."""

    def __init__(self, error: str, *messages: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.extra = extra

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


class _Lost(Exception):
    """Raised after a call whose connection was dropped on purpose (lose_next)."""


class _RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("ratelimited")
        self.retry_after = retry_after


@dataclass
class Call:
    """One request the fake received, in arrival order."""

    method: str
    params: JSON
    time: float  # epoch seconds
    token: str | None = None
    encoding: str = "none"  # "json", "form", "multipart", "query", "bytes" or "none"
    status: int = 200
    error: str | None = None  # the Slack error answered, if any
    http_method: str = "POST"
    lost: bool = False  # carried out, but its answer was never sent (see lose_next)

    def to_json(self) -> JSON:
        return {
            "method": self.method,
            "http_method": self.http_method,
            "lost": self.lost,
            "params": self.params,
            "time": self.time,
            "encoding": self.encoding,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class Fault:
    """A queued misbehaviour for the next call of a method."""

    status: int = 429
    retry_after: int = 1
    error: str | None = None  # with status 200: an ok:false answer with this error


@dataclass
class Channel:
    id: str
    name: str
    created: int
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False  # a group DM (is_private too)
    is_ext_shared: bool = False  # a Slack Connect channel shared with another organisation
    members: list[str] = field(default_factory=list)
    bot_member: bool = True  # whether the bot has joined (conversations.join)
    is_archived: bool = False
    messages: dict[str, JSON] = field(default_factory=dict)
    ephemerals: dict[str, list[JSON]] = field(default_factory=dict)
    pins: dict[str, JSON] = field(default_factory=dict)

    def info(self) -> JSON:
        """The conversation object `conversations.info` answers, shaped by kind as Slack's
        (docs.slack.dev/reference/objects/conversation-object; api.slack.com/types/im,
        /types/mpim, /types/group): a public channel is `is_channel` and not `is_private`;
        a private channel is `is_private` (and `is_channel`, or `is_group` instead when its
        id starts with G: made before March 2021); a group DM is `is_mpim` and
        `is_private`, named `mpdm-…`; a DM carries `is_im` and the other `user`, and none
        of the channel booleans; a Slack Connect channel is `is_ext_shared` and `is_shared`.
        """
        if self.is_im:
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "context_team_id": TEAM_ID,
                "user": next((m for m in self.members if m != BOT_USER_ID), ""),
                "is_user_deleted": False,
                "priority": 0,
            }
        legacy_group = self.is_private and not self.is_mpim and self.id.startswith("G")
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "created": self.created,
            "creator": BOT_USER_ID,
            "is_channel": not self.is_mpim and not legacy_group,
            "is_group": legacy_group,
            "is_im": False,
            "is_mpim": self.is_mpim,
            "is_private": self.is_private or self.is_mpim,
            "is_archived": self.is_archived,
            "is_general": False,
            "is_shared": self.is_ext_shared,
            "is_org_shared": False,
            "is_ext_shared": self.is_ext_shared,
            "is_pending_ext_shared": False,
            "is_member": self.bot_member,
            "context_team_id": TEAM_ID,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


def ts_key(ts: str) -> tuple[int, int]:
    """Sort key for a Slack ``ts`` (``"1732395600.000100"`` → ``(1732395600, 100)``)."""
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction.ljust(6, "0")[:6] or 0)


def _as_bool(value: Any) -> bool:
    return value is True or value == 1 or value in ("1", "true", "True", "TRUE")


def _str_arg(params: JSON, key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _required(params: JSON, key: str, error: str = "invalid_arguments") -> str:
    value = _str_arg(params, key)
    if value is None:
        raise SlackError(error, f"[ERROR] missing required field: {key}")
    return value


def _int_arg(params: JSON, key: str, default: int) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SlackError("invalid_arguments", f"[ERROR] {key} must be an integer") from None


def _json_arg(params: JSON, key: str, error: str) -> Any:
    """A JSON-valued argument, given either as JSON (JSON bodies) or as a JSON string (forms)."""
    value = params.get(key)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise SlackError(error, f"[ERROR] {key} is not valid JSON") from None
    return value


def _text_object_errors(obj: Any, ptr: str, max_len: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"[ERROR] must be an object [json-pointer:{ptr}]"]
    errors: list[str] = []
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in allowed:
        errors.append(f"[ERROR] must be one of {', '.join(allowed)} [json-pointer:{ptr}/type]")
    text = obj.get("text")
    if not isinstance(text, str) or text == "":
        errors.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
    elif len(text) > max_len:
        errors.append(
            f"[ERROR] must be less than {max_len + 1} characters [json-pointer:{ptr}/text]"
        )
    return errors


def _block_errors(block: Any, ptr: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"[ERROR] must be an object [json-pointer:{ptr}]"]
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        return [f"[ERROR] missing required field: type [json-pointer:{ptr}]"]
    errors: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None and (
        not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID_CHARS
    ):
        errors.append(f"[ERROR] must be less than 256 characters [json-pointer:{ptr}/block_id]")
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            errors.append(f"[ERROR] must provide either text or fields [json-pointer:{ptr}]")
        if text is not None:
            errors += _text_object_errors(text, f"{ptr}/text", MAX_SECTION_TEXT_CHARS)
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                errors.append(f"[ERROR] no more than 10 items allowed [json-pointer:{ptr}/fields]")
            else:
                for i, f in enumerate(fields):
                    errors += _text_object_errors(f, f"{ptr}/fields/{i}", MAX_SECTION_FIELD_CHARS)
    elif kind == "header":
        errors += _text_object_errors(
            block.get("text"), f"{ptr}/text", MAX_HEADER_TEXT_CHARS, plain_only=True
        )
    elif kind == "markdown":
        text = block.get("text")
        if not isinstance(text, str) or text == "":
            errors.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            errors.append(f"[ERROR] must have 1 to 10 items [json-pointer:{ptr}/elements]")
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
            errors.append(f"[ERROR] must have 1 to 25 items [json-pointer:{ptr}/elements]")
        else:
            for i, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") == "button":
                    errors += _text_object_errors(
                        element.get("text"),
                        f"{ptr}/elements/{i}/text",
                        MAX_BUTTON_TEXT_CHARS,
                        plain_only=True,
                    )
    return errors


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_BLOCKS) -> None:
    """Raise ``invalid_blocks``/``invalid_blocks_format`` as Slack would, for cheap checks."""
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format", "[ERROR] must be an array [json-pointer:/blocks]")
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]")
    seen_ids: set[str] = set()
    markdown_chars = 0
    for i, block in enumerate(blocks):
        errors += _block_errors(block, f"/blocks/{i}")
        if not isinstance(block, dict):
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                errors.append(f"[ERROR] duplicate block_id [json-pointer:/blocks/{i}/block_id]")
            seen_ids.add(block_id)
        if block.get("type") == "markdown" and isinstance(block.get("text"), str):
            markdown_chars += len(block["text"])
    if markdown_chars > MAX_MARKDOWN_BLOCKS_CHARS:
        errors.append(
            f"[ERROR] markdown blocks together must be at most {MAX_MARKDOWN_BLOCKS_CHARS}"
            " characters [json-pointer:/blocks]"
        )
    if errors:
        raise SlackError("invalid_blocks", *errors)


def _validate_metadata(metadata: Any) -> JSON:
    if not isinstance(metadata, dict):
        raise SlackError("invalid_metadata_format")
    if not isinstance(metadata.get("event_type"), str) or not metadata["event_type"]:
        raise SlackError("invalid_metadata_schema", "[ERROR] missing required field: event_type")
    if not isinstance(metadata.get("event_payload", {}), dict):
        raise SlackError("invalid_metadata_schema", "[ERROR] event_payload must be an object")
    return {
        "event_type": metadata["event_type"],
        "event_payload": metadata.get("event_payload", {}),
    }


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor.encode(), validate=True).decode()
    except ValueError:
        raise SlackError("invalid_cursor") from None
    digits = raw.removeprefix("next_ts:")
    if not raw.startswith("next_ts:") or not digits.isdigit() or len(digits) <= 6:
        raise SlackError("invalid_cursor")
    return f"{digits[:-6]}.{digits[-6:]}"


def _paginate(items: list[JSON], limit: int, cursor: str | None) -> tuple[list[JSON], str]:
    start = 0
    if cursor:
        wanted = _decode_cursor(cursor)
        for i, item in enumerate(items):
            if item["ts"] == wanted:
                start = i
                break
        else:
            raise SlackError("invalid_cursor")
    page = items[start : start + limit]
    rest = items[start + limit :]
    return page, _encode_cursor(rest[0]["ts"]) if rest else ""


def _in_range(ts: str, params: JSON) -> bool:
    inclusive = _as_bool(params.get("inclusive"))
    oldest, latest = _str_arg(params, "oldest"), _str_arg(params, "latest")
    key = ts_key(ts)
    if oldest is not None and (key < ts_key(oldest) or (key == ts_key(oldest) and not inclusive)):
        return False
    return not (
        latest is not None and (key > ts_key(latest) or (key == ts_key(latest) and not inclusive))
    )


Handler = Callable[[JSON, str | None], JSON]


# -------------------------------------------------- issue 10: tiers, who sees a stream live
#
# Slack's Web API limits apply per method, per app, per workspace, in per-minute windows;
# beyond a method's tier it answers HTTP 429 with `Retry-After` and does nothing. Tier 3
# (chat.update, chat.delete) is "50+ per minute" (api.slack.com/apis/rate-limits). The fake
# enforces the tiers in `METHOD_TIERS` by default, as exactly the tier's number per any 60 s.
#
# A `chat.startStream` message in a channel streams live only for its `recipient_user_id`:
# every other member sees its first chunk, then nothing until the stream stops (reported in
# agentconnect-md/agentconnect#1494; no multi-recipient stream exists). In a DM the one
# reader is the recipient. `seen_by` answers what one member sees now.

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# Each method's tier, from its reference page (docs.slack.dev/reference/methods/<method>,
# "Rate limits"): chat.update, chat.delete, reactions.add and conversations.replies are
# Tier 3 ("50+ per minute"); views.publish and conversations.members are Tier 4
# (api.slack.com/methods/views.publish, api.slack.com/methods/conversations.members); the
# other methods the app calls are Tier 2 or above, or "special" (chat.postMessage,
# assistant.threads.setStatus), and are not limited here.
METHOD_TIERS = {
    "chat.update": 3,
    "chat.delete": 3,
    "reactions.add": 3,
    "conversations.replies": 3,
    "views.publish": 4,
    "conversations.members": 4,
    "files.info": 4,  # docs.slack.dev/reference/methods/files.info: Tier 4
}
TIER_WINDOW_S = 60.0
# chat.postMessage: "generally allows posting one message per second per channel, while
# also maintaining a workspace-wide limit"; "short bursts >1 allowed"
# (docs.slack.dev/apis/web-api/rate-limits). Modelled, when a test turns it on with
# `FakeSlack.set_post_bucket`, as a token bucket per channel: `burst` tokens, refilled
# at `per_second`; a post with no token gets 429 and a Retry-After until the next one.
# assistant.threads.setStatus: its status clears after two minutes, or when the app posts
# a message in the thread (docs.slack.dev/reference/methods/assistant.threads.setStatus).
STATUS_TIMEOUT_S = 120.0
MAX_LOADING_MESSAGES = 10


class _SlackTiers:
    """Per-method tier limits and stream visibility, mixed into FakeSlack."""

    calls: list[Call]

    def _tier_limits(self) -> dict[str, int | None]:
        limits: dict[str, int | None] | None = self.__dict__.get("_tier_limit_overrides")
        if limits is None:
            limits = {m: TIER_PER_MINUTE[t] for m, t in METHOD_TIERS.items()}
            self.__dict__["_tier_limit_overrides"] = limits
        return limits

    def set_method_limit(self, method: str, per_minute: int | None) -> None:
        """At most ``per_minute`` accepted calls of ``method`` in any 60 s (None: no limit)."""
        self._tier_limits()[method] = per_minute

    def _accepted(self, method: str, since: float, but: Call | None = None) -> list[float]:
        return [
            c.time
            for c in self.calls
            if c.method == method and c is not but and c.status == 200 and c.time > since
        ]

    def _check_tier(self, call: Call) -> None:
        limit = self._tier_limits().get(call.method)
        if limit is None:
            return
        now = time.time()
        # The accepted calls of the last minute, per method (a scan of every call would
        # make a long run quadratic).
        windows: dict[str, deque[float]] = self.__dict__.setdefault("_tier_windows", {})
        recent = windows.setdefault(call.method, deque())
        while recent and recent[0] <= now - TIER_WINDOW_S:
            recent.popleft()
        if len(recent) >= limit:
            oldest = recent[0]
            raise _RateLimited(retry_after=max(1, int(oldest + TIER_WINDOW_S - now + 0.999)))
        recent.append(now)

    def set_status_clock(self, clock: Callable[[], float]) -> None:
        """The clock that times a thread status line's two minutes (a test's own clock)."""
        self.__dict__["_status_clock"] = clock

    def _status_now(self) -> float:
        clock: Callable[[], float] = self.__dict__.get("_status_clock", time.monotonic)
        return clock()

    def set_post_bucket(self, per_second: float | None, burst: int = 3) -> None:
        """Enforce Slack's post rate: per channel, ``burst`` posts at once, then
        ``per_second`` (None: off). Beyond it, 429 with the seconds to the next token."""
        self.__dict__["_post_bucket"] = None if per_second is None else (per_second, burst)
        self.__dict__["_post_tokens"] = {}

    def _check_post_bucket(self, method: str, channel: str) -> None:
        bucket: tuple[float, int] | None = self.__dict__.get("_post_bucket")
        if bucket is None or method != "chat.postMessage":
            return
        rate, burst = bucket
        tokens_at: dict[str, tuple[float, float]] = self.__dict__["_post_tokens"]
        now = time.monotonic()
        tokens, at = tokens_at.get(channel, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens < 1:
            tokens_at[channel] = (tokens, now)
            raise _RateLimited(retry_after=max(1, int((1 - tokens) / rate + 0.999)))
        tokens_at[channel] = (tokens - 1, now)

    def most_in_a_minute(self, method: str) -> int:
        """The most accepted calls of ``method`` in any 60 s window so far."""
        times = sorted(self._accepted(method, 0.0))
        most, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - TIER_WINDOW_S:
                start += 1
            most = max(most, end - start + 1)
        return most

    def seen_by(self, channel: str, ts: str, user: str) -> str | None:
        """The text member ``user`` sees of message ``ts`` right now (None: no such message).

        A message being streamed shows its whole text so far only to the stream's
        recipient (anyone, in a DM); everyone else sees its first chunk until it stops.
        """
        msg = self.message(channel, ts)  # type: ignore[attr-defined]
        if msg is None:
            return None
        ch = self._find_channel(channel)  # type: ignore[attr-defined]
        stream = (ch.messages.get(ts) or {}).get("_stream") if ch is not None else None
        if stream is None or stream["state"] != "streaming" or ch.is_im:
            return str(msg.get("text") or "")
        if user == stream.get("recipient_user_id"):
            return str(msg.get("text") or "")
        return str(stream.get("first_chunk") or "")


class FakeSlack(_SlackTiers, LoopbackServer):
    """An in-memory Slack workspace behind a real HTTP server on 127.0.0.1.

    Use ``async with FakeSlack() as slack`` (or :meth:`start`/:meth:`stop`). State is plain
    Python data, read through the accessors below; every request is in :attr:`calls`.
    """

    METHODS: tuple[str, ...] = (
        "auth.test",
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.postEphemeral",
        "chat.getPermalink",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "conversations.replies",
        "conversations.history",
        "conversations.info",
        "conversations.join",
        "conversations.members",
        "pins.add",
        "pins.list",
        "reactions.add",
        "reactions.remove",
        "users.info",
        "views.open",
        "views.update",
        "views.publish",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
        "files.info",
        "apps.connections.open",
    )

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        tokens: Iterable[str] = (),
        app_token: str = DEFAULT_APP_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        auto_create_channels: bool = True,
        post_rate_limit: int | None = None,
        stream_ttl: float = DEFAULT_STREAM_TTL,
    ) -> None:
        """Set up the workspace; the server starts in :meth:`start`.

        Args:
            token: the bot token the fake accepts (also :attr:`token`).
            tokens: further accepted tokens; any other gives ``invalid_auth``.
            app_token: the app-level token ``apps.connections.open`` accepts (Socket Mode).
            host, port: where to listen; port 0 picks a free one.
            auto_create_channels: create a channel the first time a method names it;
                when off, only seeded channels exist and others give ``channel_not_found``.
            post_rate_limit: if set, at most this many ``chat.postMessage`` per channel per
                second, beyond which HTTP 429 (see :meth:`set_rate_limit`).
            stream_ttl: seconds after ``chat.startStream`` when a stream stops accepting
                appends (Slack: about five minutes).
        """
        self.token = token
        self.tokens = {token, *tokens}
        self.app_token = app_token
        # OAuth: the app's credentials, the workspaces that can install it, issued tokens.
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.redirect_uri: str | None = None  # the app's configured Redirect URL
        self.token_rotation = False
        self.token_ttl_s = ROTATING_TOKEN_TTL_S
        self.teams: dict[str, JSON] = {TEAM_ID: {"id": TEAM_ID, "name": TEAM_NAME}}
        self.install_team = TEAM_ID  # the workspace the person at the consent page picks
        self.token_teams: dict[str, str] = {token: TEAM_ID}
        self.token_expiry: dict[str, float] = {}
        self.revoked: set[str] = set()
        self._codes: dict[str, tuple[str, float, str | None, str]] = {}
        self._refresh: dict[str, str] = {}  # live refresh token -> team id
        self.installs = 0
        self.refreshes = 0
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_opened = asyncio.Event()
        self._acks: dict[str, JSON] = {}
        self._ack_waiters: dict[str, asyncio.Event] = {}
        self.hellos = 0  # Socket Mode connections greeted so far
        self.host = host
        self.port = port
        self.auto_create_channels = auto_create_channels
        self.stream_ttl = stream_ttl
        # files.completeUploadExternal shares this long after it answers (Slack: async).
        self.share_delay_s = SHARE_DELAY_S
        # The workspace's file upload limit (an admin's setting); None: Slack's own 1 GB.
        self.max_upload_bytes: int | None = None
        self.calls: list[Call] = []
        self.internal_errors: list[str] = []  # exceptions inside the fake itself (a fake bug)
        self._faults: dict[str, deque[Fault]] = {}
        self._lost: dict[str, int] = {}
        # Called with each Web API call once it is carried out and before its answer
        # leaves: a test can act "between a call and its answer" (kill the caller).
        self.on_call: Callable[[Call], None] | None = None
        self._rate_limit: int | None = None
        self._rate_methods: frozenset[str] = frozenset({"chat.postMessage"})
        self._rate_windows: dict[tuple[str, str], deque[float]] = {}
        self._handlers: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "conversations.join": self._conversations_join,
            "conversations.members": self._conversations_members,
            "pins.add": self._pins_add,
            "pins.list": self._pins_list,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "users.info": self._users_info,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "files.info": self._files_info,
            "apps.connections.open": self._apps_connections_open,
            "oauth.v2.access": self._oauth_v2_access,
            "auth.revoke": self._auth_revoke,
            "assistant.threads.setStatus": self._assistant_threads_set_status,
        }
        self._reset_state()
        self.set_rate_limit(post_rate_limit)

    # ------------------------------------------------------------------ lifecycle

    def _reset_state(self) -> None:
        self._seq = 0
        self._last_ts_us = 0
        self._channels: dict[str, Channel] = {}
        self._users: dict[str, JSON] = {}
        self._files: dict[str, JSON] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._upload_keys: dict[str, str] = {}
        self._views: dict[str, JSON] = {}
        self._homes: dict[str, JSON] = {}  # user id -> the Home tab view published for them
        self._users[BOT_USER_ID] = self._user_object(
            BOT_USER_ID, BOT_NAME, is_admin=False, display_name=BOT_NAME, real_name="Sora Copilot"
        )
        self._users[BOT_USER_ID]["is_bot"] = True
        self._users[BOT_USER_ID]["profile"]["bot_id"] = BOT_ID

    def reset(self) -> None:
        """Forget every channel, user, message, file, view, call and fault."""
        self._reset_state()
        self.calls.clear()
        self._faults.clear()
        self._rate_windows.clear()
        self.__dict__.pop("_tier_windows", None)
        self.__dict__.pop("_thread_statuses", None)

    async def _before_stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server stopping")

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/`` (valid once started)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        """The value for ``SLACK_API_URL`` / slack_sdk's ``base_url``; ends with ``/api/``."""
        return f"{self.base_url}api/"

    # ------------------------------------------------------------------ seeding

    def seed_channel(
        self,
        name: str,
        id: str | None = None,
        *,
        is_private: bool = False,
        members: Sequence[str] = (),
        bot_member: bool = True,
        is_archived: bool = False,
        is_mpim: bool = False,
        is_ext_shared: bool = False,
    ) -> str:
        """Create (or return) a channel and give its id. ``D…`` ids are DMs.

        If ``members`` is given, ``chat.postEphemeral`` to anyone else is refused with
        ``user_not_in_channel``. ``bot_member=False``: the bot has not joined it (see
        :meth:`_require_member`); ``is_archived``: it takes no posts and no joins;
        ``is_mpim``: a group DM; ``is_ext_shared``: a Slack Connect channel.
        """
        name = name.lstrip("#")
        existing = self._find_channel(id or name)
        if existing is not None:
            existing.members.extend(m for m in members if m not in existing.members)
            return existing.id
        channel_id = id or self._new_id("C")
        channel = Channel(
            id=channel_id,
            name=name,
            created=int(time.time()),
            is_private=is_private or is_mpim or channel_id.startswith("G"),
            is_im=channel_id.startswith("D"),
            is_mpim=is_mpim,
            is_ext_shared=is_ext_shared,
            members=list(members),
            bot_member=bot_member,
            is_archived=is_archived,
        )
        self._channels[channel_id] = channel
        return channel_id

    def make_private(self, channel: str) -> None:
        """Convert a public channel to private (Slack: admin.conversations.convertToPrivate)."""
        ch = self._channel(channel)
        ch.is_private = True

    def seed_user(
        self,
        id: str,
        name: str,
        is_admin: bool = False,
        *,
        display_name: str | None = None,
        real_name: str | None = None,
        is_owner: bool = False,
    ) -> JSON:
        """Add a workspace member (``name`` is the handle; display name defaults to it)."""
        user = self._user_object(
            id,
            name,
            is_admin=is_admin or is_owner,
            display_name=display_name if display_name is not None else name,
            real_name=real_name if real_name is not None else name,
        )
        user["is_owner"] = is_owner
        self._users[id] = user
        return copy.deepcopy(user)

    def seed_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        thread_ts: str | None = None,
        blocks: list[JSON] | None = None,
    ) -> str:
        """Put a message from a person (not the bot) into a channel or thread; returns its ts."""
        ch = self._channel(channel, create=True)
        msg: JSON = {
            "type": "message",
            "ts": self._new_ts(),
            "user": user,
            "team": TEAM_ID,
            "text": text,
        }
        if blocks is not None:
            msg["blocks"] = blocks
        if thread_ts is not None:
            self._attach_to_thread(ch, msg, thread_ts)
        ch.messages[msg["ts"]] = msg
        return str(msg["ts"])

    # ------------------------------------------------------------------ accessors

    def channel_id(self, channel: str) -> str:
        """The id of a channel given by id, name or ``#name`` (KeyError if unknown)."""
        ch = self._find_channel(channel)
        if ch is None:
            raise KeyError(channel)
        return ch.id

    def channels(self) -> list[JSON]:
        return [ch.info() for ch in self._channels.values()]

    def messages(self, channel: str) -> list[JSON]:
        """Every message in a channel, thread replies included, oldest first, with metadata."""
        ch = self._find_channel(channel)
        if ch is None:
            return []
        return [self._render(ch, m, metadata=True) for m in self._sorted(ch.messages.values())]

    def thread(self, channel: str, ts: str) -> list[JSON]:
        """A thread's root then its replies, oldest first, with metadata."""
        ch = self._find_channel(channel)
        if ch is None:
            return []
        return [self._render(ch, m, metadata=True) for m in self._thread_messages(ch, ts)]

    def message(self, channel: str, ts: str) -> JSON | None:
        ch = self._find_channel(channel)
        if ch is None or ts not in ch.messages:
            return None
        return self._render(ch, ch.messages[ts], metadata=True)

    def pins(self, channel: str) -> list[str]:
        """The ts of each pinned message, in pin order."""
        ch = self._find_channel(channel)
        return list(ch.pins) if ch is not None else []

    def reactions(self, channel: str, ts: str) -> dict[str, list[str]]:
        """Reaction name → the users who added it, for one message."""
        ch = self._find_channel(channel)
        if ch is None or ts not in ch.messages:
            return {}
        return {r["name"]: list(r["users"]) for r in ch.messages[ts].get("reactions", [])}

    def ephemerals(self, channel: str, user: str) -> list[JSON]:
        """Ephemeral messages shown to one user in a channel, oldest first."""
        ch = self._find_channel(channel)
        return copy.deepcopy(ch.ephemerals.get(user, [])) if ch is not None else []

    def files(self) -> list[JSON]:
        """Every completed upload as a Slack file object (bytes via :meth:`file_content`)."""
        return [self._public(copy.deepcopy(f)) for f in self._files.values() if f["_complete"]]

    def file_content(self, file_id: str) -> bytes:
        return self._file_bytes[file_id]

    def views(self) -> list[JSON]:
        return [copy.deepcopy(v) for v in self._views.values()]

    def home(self, user: str) -> JSON | None:
        """The Home tab view last published for ``user`` (None: never published)."""
        view = self._homes.get(user)
        return copy.deepcopy(view) if view is not None else None

    def users(self) -> list[JSON]:
        return [copy.deepcopy(u) for u in self._users.values()]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def state(self) -> JSON:
        """Everything, as JSON: what ``GET /_fake/state`` answers."""
        return {
            "team": {"id": TEAM_ID, "name": TEAM_NAME, "domain": TEAM_DOMAIN},
            "bot": {"user_id": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID},
            "api_url": self.api_url,
            "channels": self.channels(),
            "users": self.users(),
            "messages": {cid: self.messages(cid) for cid in self._channels},
            "ephemerals": {cid: copy.deepcopy(ch.ephemerals) for cid, ch in self._channels.items()},
            "pins": {cid: list(ch.pins) for cid, ch in self._channels.items()},
            "reactions": {
                cid: {
                    ts: self.reactions(cid, ts)
                    for ts, m in ch.messages.items()
                    if m.get("reactions")
                }
                for cid, ch in self._channels.items()
            },
            "files": self.files(),
            "views": self.views(),
            "calls": len(self.calls),
        }

    # ------------------------------------------------------------------ faults

    def fail_next(self, method: str, k: int = 1, status: int = 429, retry_after: int = 1) -> None:
        """Make the next ``k`` calls of ``method`` (``"*"``: any method) fail at the HTTP level.

        429 answers ``Retry-After: retry_after`` and ``{"ok": false, "error": "ratelimited"}``;
        any other status (500, 503, ...) answers an HTML error page.
        """
        if status == 200:
            raise ValueError("use error_next for ok:false answers")
        queue = self._faults.setdefault(method, deque())
        queue.extend(Fault(status=status, retry_after=retry_after) for _ in range(k))

    def error_next(self, method: str, error: str, k: int = 1) -> None:
        """Make the next ``k`` calls of ``method`` answer HTTP 200 ``ok: false`` with ``error``."""
        queue = self._faults.setdefault(method, deque())
        queue.extend(Fault(status=200, error=error) for _ in range(k))

    def lose_next(self, method: str, k: int = 1) -> None:
        """Carry out the next ``k`` calls of ``method``, then drop their connections
        without an answer: the caller cannot tell whether the call happened."""
        self._lost[method] = self._lost.get(method, 0) + k

    def clear_faults(self) -> None:
        self._faults.clear()
        self._lost.clear()

    def set_rate_limit(
        self, per_second: int | None, methods: Iterable[str] = ("chat.postMessage",)
    ) -> None:
        """At most ``per_second`` calls of ``methods`` per channel in any one second (None: off).

        Calls beyond it get HTTP 429 with ``Retry-After: 1`` and are not carried out.
        """
        self._rate_limit = per_second
        self._rate_methods = frozenset(methods)
        self._rate_windows.clear()

    def _take_fault(self, method: str) -> Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.status == 429:
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(fault.retry_after)},
            )
        if fault.status == 200:
            return web.json_response({"ok": False, "error": fault.error})
        reason = "Service Unavailable" if fault.status == 503 else "Internal Server Error"
        return web.Response(
            status=fault.status,
            text=f"<html><body><h1>{fault.status} {reason}</h1></body></html>",
            content_type="text/html",
        )

    def _check_rate_limit(self, method: str, params: JSON) -> None:
        raw = _str_arg(params, "channel") or ""
        found = self._find_channel(raw)
        self._check_post_bucket(method, found.id if found is not None else raw)
        if self._rate_limit is None or method not in self._rate_methods:
            return
        key = (method, found.id if found is not None else raw)
        now = time.monotonic()
        window = self._rate_windows.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self._rate_limit:
            raise _RateLimited(retry_after=1)
        window.append(now)

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_app(self) -> web.Application:
        """Routes: the Web API, the upload URLs, private file URLs and the ``/_fake`` API.

        * ``GET|POST /api/{method}`` - the Slack Web API.
        * ``POST /upload/v1/{key}`` - upload URLs from ``files.getUploadURLExternal``.
        * ``GET /files-pri/{team}-{file_id}/{name}`` - ``url_private`` (needs the bearer token).
        * ``GET /_fake/state`` - :meth:`state`.
        * ``GET /_fake/calls[?method=M]`` - every recorded :class:`Call` as JSON.
        * ``POST /_fake/faults`` - ``{"method", "k"?, "status"?, "retry_after"?}`` for
          :meth:`fail_next`, or ``{"method", "k"?, "error"}`` for :meth:`error_next`.
        * ``DELETE /_fake/faults`` - :meth:`clear_faults`.
        * ``POST /_fake/rate_limit`` - ``{"per_second": N | null, "methods"?: [...]}``.
        * ``POST /_fake/seed`` - ``{"channels": [{"name", "id"?, "members"?}],
          "users": [{"id", "name", "is_admin"?, "display_name"?, "real_name"?}],
          "messages": [{"channel", "text", "user", "thread_ts"?}]}``; answers the ids/ts.
        * ``POST /_fake/reset`` - :meth:`reset`.
        * ``GET /_fake/files/{file_id}`` - an uploaded file's bytes, no auth.
        * ``GET /link/?ticket=…`` - the Socket Mode WebSocket (``apps.connections.open``).
        """
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._guard])
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{key}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._private_file)
        app.router.add_get("/_fake/state", self._http_state)
        app.router.add_get("/_fake/calls", self._http_calls)
        app.router.add_post("/_fake/faults", self._http_add_fault)
        app.router.add_delete("/_fake/faults", self._http_clear_faults)
        app.router.add_post("/_fake/rate_limit", self._http_rate_limit)
        app.router.add_post("/_fake/seed", self._http_seed)
        app.router.add_post("/_fake/reset", self._http_reset)
        app.router.add_get("/_fake/files/{file_id}", self._http_file)
        app.router.add_get(SOCKET_PATH, self._socket)
        app.router.add_get("/oauth/v2/authorize", self._authorize_page)
        app.router.add_get("/oauth/v2/authorize/decide", self._authorize_decide)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except _Lost:
            return web.Response(status=200)  # never reaches the client: its connection is gone
        except Exception as exc:  # a bug in the fake: make it loud, never a silent 200
            self.internal_errors.append(f"{request.path}: {exc!r}")
            return web.Response(status=500, text=f"fake slack internal error: {exc!r}")

    async def _read_params(self, request: web.Request, method: str) -> tuple[JSON, str]:
        params: JSON = dict(request.query)
        encoding = "query" if params else "none"
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.read()
                if raw:
                    encoding = "json"
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        raise SlackError("invalid_json") from None
                    if not isinstance(body, dict):
                        raise SlackError("invalid_json")
                    if method in JSON_METHODS:
                        params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                if form:
                    encoding = "form" if ctype.endswith("urlencoded") else "multipart"
                for key, value in form.items():
                    if isinstance(value, str):
                        params[key] = value
        return params, encoding

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        call = Call(method=method, params={}, time=time.time(), http_method=request.method)
        self.calls.append(call)
        try:
            call.params, call.encoding = await self._read_params(request, method)
            form_token = call.params.pop("token", None)
            token = token or (str(form_token) if form_token else None)
            call.token = token
            fault = self._take_fault(method)
            if fault is not None:
                call.status = fault.status
                call.error = "ratelimited" if fault.status == 429 else fault.error
                return self._fault_response(fault)
            handler = self._handlers.get(method)
            if handler is None:
                raise SlackError("unknown_method", req_method=method)
            if method in CLIENT_AUTH_METHODS:
                self._check_client(auth, call.params)
            elif token is None:
                raise SlackError("not_authed")
            elif method in APP_TOKEN_METHODS:
                if token != self.app_token:
                    known = token in self.tokens
                    raise SlackError("not_allowed_token_type" if known else "invalid_auth")
            elif token not in self.tokens:
                known = token == self.app_token
                error = "token_revoked" if token in self.revoked else "invalid_auth"
                raise SlackError("not_allowed_token_type" if known else error)
            elif self.token_expiry.get(token, float("inf")) <= time.time():
                raise SlackError("token_expired")
            self._check_rate_limit(method, call.params)
            self._check_tier(call)
            body: JSON = {"ok": True, **handler(call.params, token)}
        except _RateLimited as limited:
            call.status, call.error = 429, "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(limited.retry_after)},
            )
        except SlackError as err:
            body = err.body()
            call.error = err.error
        if self.on_call is not None:
            self.on_call(call)  # after the call is carried out, before its answer is sent
        if self._lost.get(method):
            self._lost[method] -= 1
            call.lost = True
            if request.transport is not None:
                request.transport.close()  # done, and the answer never arrives
            raise _Lost()
        return web.json_response(body)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        call = Call(
            method=UPLOAD_METHOD,
            params={"key": request.match_info["key"], "size": len(data)},
            time=time.time(),
            encoding="bytes",
        )
        self.calls.append(call)
        fault = self._take_fault(UPLOAD_METHOD)
        if fault is not None:
            call.status = fault.status
            return self._fault_response(fault)
        file_id = self._upload_keys.get(request.match_info["key"])
        if file_id is None:
            call.status = 404
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        self._file_bytes[file_id] = data
        self._files[file_id]["size"] = len(data)
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _private_file(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ").strip() not in self.tokens:
            return web.Response(status=302, headers={"Location": f"{self.base_url}?redir=login"})
        file_id = request.match_info["team_file"].rpartition("-")[2]
        if file_id not in self._file_bytes:
            raise web.HTTPNotFound()
        mimetype = str(self._files[file_id].get("mimetype", "application/octet-stream"))
        return web.Response(body=self._file_bytes[file_id], content_type=mimetype)

    async def _http_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())

    async def _http_calls(self, request: web.Request) -> web.StreamResponse:
        method = request.query.get("method")
        calls = [c.to_json() for c in self.calls if method is None or c.method == method]
        return web.json_response(calls)

    async def _http_add_fault(self, request: web.Request) -> web.StreamResponse:
        spec = await request.json()
        k = int(spec.get("k", 1))
        if spec.get("error"):
            self.error_next(str(spec["method"]), str(spec["error"]), k=k)
        else:
            self.fail_next(
                str(spec["method"]),
                k=k,
                status=int(spec.get("status", 429)),
                retry_after=int(spec.get("retry_after", 1)),
            )
        return web.json_response({"ok": True})

    async def _http_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _http_rate_limit(self, request: web.Request) -> web.StreamResponse:
        spec = await request.json()
        per_second = spec.get("per_second")
        self.set_rate_limit(
            int(per_second) if per_second is not None else None,
            spec.get("methods", ["chat.postMessage"]),
        )
        return web.json_response({"ok": True})

    async def _http_seed(self, request: web.Request) -> web.StreamResponse:
        spec = await request.json()
        channels = [
            self.seed_channel(c["name"], c.get("id"), members=c.get("members", ()))
            for c in spec.get("channels", [])
        ]
        users = [
            self.seed_user(
                u["id"],
                u["name"],
                bool(u.get("is_admin", False)),
                display_name=u.get("display_name"),
                real_name=u.get("real_name"),
            )["id"]
            for u in spec.get("users", [])
        ]
        messages = [
            self.seed_message(m["channel"], m["text"], user=m["user"], thread_ts=m.get("thread_ts"))
            for m in spec.get("messages", [])
        ]
        return web.json_response({"ok": True, "channels": channels, "users": users, "ts": messages})

    async def _http_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.json_response({"ok": True})

    async def _http_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        if file_id not in self._file_bytes:
            raise web.HTTPNotFound()
        return web.Response(body=self._file_bytes[file_id], content_type="application/octet-stream")

    # ------------------------------------------------------------------ internals

    def _new_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}0{self._seq:08X}"

    def _new_ts(self) -> str:
        now_us = int(time.time() * 1_000_000)
        us = max(now_us, self._last_ts_us + 1)
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _find_channel(self, channel: str) -> Channel | None:
        key = channel.lstrip("#")
        if key in self._channels:
            return self._channels[key]
        for ch in self._channels.values():
            if ch.name == key:
                return ch
        return None

    def _channel(self, channel: str | None, *, create: bool | None = None) -> Channel:
        if not channel:
            raise SlackError("channel_not_found")
        found = self._find_channel(channel)
        if found is not None:
            return found
        if not (self.auto_create_channels if create is None else create):
            raise SlackError("channel_not_found")
        key = channel.lstrip("#")
        if _ID_RE.match(key):
            return self._channels[self.seed_channel(key.lower(), key)]
        return self._channels[self.seed_channel(key)]

    def _message(self, ch: Channel, ts: str | None) -> JSON:
        if ts is None or ts not in ch.messages:
            raise SlackError("message_not_found")
        return ch.messages[ts]

    @staticmethod
    def _sorted(messages: Iterable[JSON]) -> list[JSON]:
        return sorted(messages, key=lambda m: ts_key(m["ts"]))

    def _thread_messages(self, ch: Channel, ts: str) -> list[JSON]:
        root = ch.messages.get(ts)
        if root is None:
            return []
        root_ts = root.get("thread_ts", ts)
        if root_ts != ts:  # a reply: Slack answers with that message alone
            return [root]
        return self._sorted(
            m for m in ch.messages.values() if m["ts"] == ts or m.get("thread_ts") == ts
        )

    def _attach_to_thread(self, ch: Channel, msg: JSON, thread_ts: str) -> None:
        parent = ch.messages.get(thread_ts)
        if parent is None:
            raise SlackError("thread_not_found")
        root_ts = str(parent.get("thread_ts", thread_ts))
        root = ch.messages.get(root_ts, parent)
        msg["thread_ts"] = root_ts
        msg["parent_user_id"] = root.get("user", BOT_USER_ID)

    def _render(self, ch: Channel, msg: JSON, *, metadata: bool) -> JSON:
        out = {
            k: copy.deepcopy(v)
            for k, v in msg.items()
            if not k.startswith("_") and (metadata or k != "metadata")
        }
        ts = str(msg["ts"])
        if msg.get("thread_ts", ts) == ts:
            replies = self._sorted(
                m for m in ch.messages.values() if m.get("thread_ts") == ts and m["ts"] != ts
            )
            if replies:
                reply_users = list(dict.fromkeys(str(m.get("user", "")) for m in replies))
                out.update(
                    thread_ts=ts,
                    reply_count=len(replies),
                    reply_users=reply_users,
                    reply_users_count=len(reply_users),
                    latest_reply=replies[-1]["ts"],
                    is_locked=False,
                    subscribed=False,
                )
        if ts in ch.pins:
            out["pinned_to"] = [ch.id]
        return out

    @staticmethod
    def _public(obj: JSON) -> JSON:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    @staticmethod
    def _user_object(
        user_id: str, name: str, *, is_admin: bool, display_name: str, real_name: str
    ) -> JSON:
        return {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "is_admin": is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {
                "display_name": display_name,
                "display_name_normalized": display_name,
                "real_name": real_name,
                "real_name_normalized": real_name,
                "team": TEAM_ID,
            },
        }

    def _message_content(self, params: JSON, *, required: bool) -> JSON:
        """text/blocks/attachments/metadata/markdown_text of a post or update, validated."""
        content: JSON = {}
        text = params.get("text")
        markdown_text = _str_arg(params, "markdown_text")
        blocks = _json_arg(params, "blocks", "invalid_blocks_format")
        attachments = _json_arg(params, "attachments", "invalid_attachments")
        metadata = _json_arg(params, "metadata", "invalid_metadata_format")
        if markdown_text is not None:
            if len(markdown_text) > MAX_MARKDOWN_BLOCKS_CHARS:
                raise SlackError("msg_too_long")
            text = text or markdown_text
            blocks = [{"type": "markdown", "text": markdown_text}, *(blocks or [])]
        has_text = isinstance(text, str) and text != ""
        if required and not has_text and not blocks and not attachments:
            raise SlackError("no_text")
        if text is not None:
            if len(str(text)) > MAX_TEXT_CHARS:
                raise SlackError("msg_too_long")
            content["text"] = str(text)
        if blocks is not None:
            validate_blocks(blocks)
            content["blocks"] = blocks
        if attachments is not None:
            if not isinstance(attachments, list):
                raise SlackError("invalid_attachments")
            content["attachments"] = attachments
        if metadata is not None:
            content["metadata"] = _validate_metadata(metadata)
        return content

    def _bot_message(self, ts: str, params: JSON) -> JSON:
        msg: JSON = {
            "type": "message",
            "ts": ts,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": "",
            "bot_profile": {
                "id": BOT_ID,
                "app_id": APP_ID,
                "name": BOT_NAME,
                "team_id": TEAM_ID,
                "deleted": False,
            },
        }
        username = _str_arg(params, "username")
        if username is not None:
            msg["username"] = username
        icon_emoji, icon_url = _str_arg(params, "icon_emoji"), _str_arg(params, "icon_url")
        if icon_emoji is not None:
            msg["icons"] = {"emoji": icon_emoji}
        elif icon_url is not None:
            msg["icons"] = {"image_36": icon_url, "image_48": icon_url, "image_72": icon_url}
        return msg

    # ------------------------------------------------------------------ OAuth

    def add_team(
        self,
        team_id: str,
        name: str,
        *,
        enterprise_id: str | None = None,
        org_wide: bool = False,
    ) -> None:
        """A workspace that can install the app (``org_wide``: an Enterprise Grid org install)."""
        self.teams[team_id] = {
            "id": team_id,
            "name": name,
            "enterprise_id": enterprise_id,
            "org_wide": org_wide,
        }

    def grant_refresh_token(self, team_id: str, refresh_token: str) -> None:
        """A refresh token for `team_id` as if Slack had issued it (benchmarks start there)."""
        self._refresh[refresh_token] = team_id

    def team_of(self, call: Call) -> str | None:
        """The workspace whose token a call carried."""
        return self.token_teams.get(call.token or "")

    def revoke_team(self, team_id: str) -> None:
        """The app is uninstalled from a workspace: its tokens stop working (token_revoked)."""
        for token, team in list(self.token_teams.items()):
            if team == team_id:
                self.tokens.discard(token)
                self.revoked.add(token)
        for refresh, team in list(self._refresh.items()):
            if team == team_id:
                del self._refresh[refresh]

    def _auth_revoke(self, params: JSON, token: str | None) -> JSON:
        """The calling token stops working (docs.slack.dev/reference/methods/auth.revoke)."""
        if token is not None and _str_arg(params, "test") is None:
            self.tokens.discard(token)
            self.revoked.add(token)
        return {"revoked": True}

    def _check_client(self, auth: str, params: JSON) -> None:
        client_id, client_secret = _str_arg(params, "client_id"), _str_arg(params, "client_secret")
        if auth.startswith("Basic "):
            try:
                raw = base64.b64decode(auth[len("Basic ") :]).decode()
            except ValueError:
                raise SlackError("invalid_client_id") from None
            client_id, _, client_secret = raw.partition(":")
        if client_id != self.client_id:
            raise SlackError("invalid_client_id")
        if client_secret != self.client_secret:
            raise SlackError("bad_client_secret")

    def _issue_token(self, team_id: str) -> JSON:
        token = f"xoxb-{team_id}-{secrets.token_hex(8)}"
        if self.token_rotation:
            token = f"xoxe.{token}"
        self.tokens.add(token)
        self.token_teams[token] = team_id
        if not self.token_rotation:
            return {"access_token": token}
        refresh = f"xoxe-1-{secrets.token_hex(12)}"
        self._refresh[refresh] = team_id
        self.token_expiry[token] = time.time() + self.token_ttl_s
        return {"access_token": token, "refresh_token": refresh, "expires_in": self.token_ttl_s}

    def _oauth_v2_access(self, params: JSON, token: str | None) -> JSON:
        if _str_arg(params, "grant_type") == "refresh_token":
            refresh = _str_arg(params, "refresh_token") or ""
            team_id = self._refresh.pop(refresh, None)  # a refresh token is used once
            if team_id is None:
                raise SlackError("invalid_refresh_token")
            self.refreshes += 1
            return {"token_type": "bot", "team": {"id": team_id}, **self._issue_token(team_id)}
        code = _str_arg(params, "code") or ""
        found = self._codes.pop(code, None)
        if found is None or found[1] < time.time():
            raise SlackError("invalid_code")
        team_id, _, redirect_uri, scope = found
        if redirect_uri is not None and _str_arg(params, "redirect_uri") != redirect_uri:
            raise SlackError("bad_redirect_uri")
        team = self.teams[team_id]
        self.installs += 1
        org_wide = bool(team.get("org_wide"))
        enterprise = (
            {"id": team["enterprise_id"], "name": f"{team['name']} Org"}
            if team.get("enterprise_id")
            else None
        )
        return {
            "app_id": APP_ID,
            "authed_user": {"id": "U0INSTALLER"},
            "scope": scope,
            "token_type": "bot",
            "bot_user_id": BOT_USER_ID,
            "team": None if org_wide else {"id": team_id, "name": team["name"]},
            "enterprise": enterprise,
            "is_enterprise_install": org_wide,
            **self._issue_token(team_id),
        }

    async def _authorize_page(self, request: web.Request) -> web.StreamResponse:
        """Slack's consent page: which app, which workspace, which scopes; Allow or Cancel."""
        q = request.query
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="Invalid client_id parameter")
        redirect_uri = q.get("redirect_uri") or self.redirect_uri
        if not redirect_uri:
            return web.Response(status=400, text="No redirect URL is configured for this app")
        team_id = q.get("team") or self.install_team
        if team_id not in self.teams:
            return web.Response(status=400, text="Unknown workspace")
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in (
                ("redirect_uri", redirect_uri),
                ("state", q.get("state", "")),
                ("scope", q.get("scope", "")),
                ("team", team_id),
                ("explicit_redirect", "1" if q.get("redirect_uri") else ""),
            )
        )
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in q.get("scope", "").split(",") if s)
        body = (
            "<!doctype html><html><head><title>Allow access</title></head><body>"
            f"<h1>Sora Copilot is requesting permission to access the "
            f"{html.escape(self.teams[team_id]['name'])} Slack workspace</h1>"
            f"<ul>{scopes}</ul>"
            f'<form action="/oauth/v2/authorize/decide" method="get">{hidden}'
            '<button name="decision" value="allow" id="allow">Allow</button>'
            '<button name="decision" value="cancel" id="cancel">Cancel</button>'
            "</form></body></html>"
        )
        return web.Response(text=body, content_type="text/html")

    async def _authorize_decide(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        redirect_uri, state, team_id = q["redirect_uri"], q.get("state", ""), q["team"]
        sep = "&" if "?" in redirect_uri else "?"
        if q.get("decision") != "allow":
            raise web.HTTPFound(f"{redirect_uri}{sep}error=access_denied&state={state}")
        code = f"{team_id}.{secrets.token_hex(10)}"
        explicit = redirect_uri if q.get("explicit_redirect") else None
        self._codes[code] = (team_id, time.time() + OAUTH_CODE_TTL_S, explicit, q.get("scope", ""))
        raise web.HTTPFound(f"{redirect_uri}{sep}code={code}&state={state}")

    # ------------------------------------------------------------------ methods: auth, chat

    def _auth_test(self, params: JSON, token: str | None) -> JSON:
        team = self.teams.get(self.token_teams.get(token or "", TEAM_ID), self.teams[TEAM_ID])
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": team["name"],
            "user": BOT_NAME,
            "team_id": team["id"],
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        self._require_postable(ch)
        content = self._message_content(params, required=True)
        thread_ts = _str_arg(params, "thread_ts")
        msg = self._bot_message(self._new_ts(), params)
        msg.update(content)
        if thread_ts is not None:
            self._attach_to_thread(ch, msg, thread_ts)
            if _as_bool(params.get("reply_broadcast")):
                msg["subtype"] = "thread_broadcast"
            self._clear_thread_status(ch.id, thread_ts)  # the app replied: the status ends
        ch.messages[msg["ts"]] = msg
        return {"channel": ch.id, "ts": msg["ts"], "message": self._render(ch, msg, metadata=True)}

    def _assistant_threads_set_status(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel_id"))
        thread_ts = _str_arg(params, "thread_ts")
        if thread_ts is None or thread_ts not in ch.messages:
            raise SlackError("invalid_thread_ts")
        if "status" not in params:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: status")
        loading = params.get("loading_messages")
        if isinstance(loading, list) and len(loading) > MAX_LOADING_MESSAGES:
            raise SlackError("invalid_arguments", "[ERROR] too many loading_messages")
        status = str(params.get("status") or "")
        statuses: dict[tuple[str, str], tuple[str, float, str | None]] = self.__dict__.setdefault(
            "_thread_statuses", {}
        )
        if status:
            statuses[(ch.id, thread_ts)] = (
                status,
                self._status_now(),
                _str_arg(params, "username"),
            )
        else:
            statuses.pop((ch.id, thread_ts), None)
        return {}

    def thread_status(self, channel: str, thread_ts: str) -> str | None:
        """The status line a thread shows now ("Name is writing…"), or None."""
        statuses: dict[tuple[str, str], tuple[str, float, str | None]] = self.__dict__.get(
            "_thread_statuses", {}
        )
        found = statuses.get((channel, thread_ts))
        if found is None or self._status_now() - found[1] > STATUS_TIMEOUT_S:
            return None
        status, _, username = found
        return f"{username or BOT_NAME} {status}"

    def _clear_thread_status(self, channel: str, thread_ts: str) -> None:
        self.__dict__.setdefault("_thread_statuses", {}).pop((channel, thread_ts), None)

    def _chat_update(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        msg = self._message(ch, _str_arg(params, "ts"))
        if msg.get("bot_id") != BOT_ID:
            raise SlackError("cant_update_message")
        content = self._message_content(params, required=False)
        if not {"text", "blocks", "attachments"} & content.keys():
            raise SlackError("no_text")
        msg.update(content)
        msg["edited"] = {"user": BOT_USER_ID, "ts": self._new_ts()}
        rendered = self._render(ch, msg, metadata=True)
        return {"channel": ch.id, "ts": msg["ts"], "text": msg["text"], "message": rendered}

    def _chat_delete(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        msg = self._message(ch, _str_arg(params, "ts"))
        ts = str(msg["ts"])
        if msg.get("bot_id") != BOT_ID:
            raise SlackError("cant_delete_message")
        has_replies = any(m.get("thread_ts") == ts and m["ts"] != ts for m in ch.messages.values())
        ch.pins.pop(ts, None)
        if has_replies:  # the thread stays, under a tombstone
            ch.messages[ts] = {
                "type": "message",
                "subtype": "tombstone",
                "ts": ts,
                "thread_ts": ts,
                "user": "USLACKBOT",
                "text": "This message was deleted.",
                "hidden": True,
            }
        else:
            del ch.messages[ts]
        return {"channel": ch.id, "ts": ts}

    def _chat_post_ephemeral(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        user = _required(params, "user", "user_not_found")
        if ch.members and user not in ch.members:
            raise SlackError("user_not_in_channel")
        content = self._message_content(params, required=True)
        ts = self._new_ts()
        msg: JSON = {"type": "message", "ts": ts, "user": BOT_USER_ID, "bot_id": BOT_ID}
        msg.update(content)
        thread_ts = _str_arg(params, "thread_ts")
        if thread_ts is not None:
            msg["thread_ts"] = thread_ts
        username = _str_arg(params, "username")
        if username is not None:
            msg["username"] = username
        ch.ephemerals.setdefault(user, []).append(msg)
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        msg = self._message(ch, _str_arg(params, "message_ts"))
        ts = str(msg["ts"])
        link = f"https://{TEAM_DOMAIN}.slack.com/archives/{ch.id}/p{ts.replace('.', '')}"
        thread_ts = msg.get("thread_ts")
        if thread_ts is not None and thread_ts != ts:
            link += f"?thread_ts={thread_ts}&cid={ch.id}"
        return {"channel": ch.id, "permalink": link}

    # ------------------------------------------------------------------ methods: streaming

    def _stream_chunks(self, params: JSON) -> tuple[str, list[JSON], list[JSON]]:
        """(markdown to append, chunks, blocks from blocks-chunks) of a stream call."""
        markdown = _str_arg(params, "markdown_text") or ""
        if len(markdown) > MAX_STREAM_MARKDOWN_CHARS:
            raise SlackError("msg_too_long")
        chunks = _json_arg(params, "chunks", "invalid_chunks")
        if chunks is None:
            chunks = []
        if not isinstance(chunks, list):
            raise SlackError("invalid_chunks")
        extra_blocks: list[JSON] = []
        for i, chunk in enumerate(chunks):
            if not isinstance(chunk, dict) or chunk.get("type") not in STREAM_CHUNK_TYPES:
                raise SlackError(
                    "invalid_chunks", f"[ERROR] unknown chunk [json-pointer:/chunks/{i}]"
                )
            if chunk["type"] == "markdown_text":
                text = chunk.get("text")
                if not isinstance(text, str):
                    raise SlackError(
                        "invalid_chunks", f"[ERROR] missing text [json-pointer:/chunks/{i}]"
                    )
                if len(text) > MAX_STREAM_MARKDOWN_CHARS:
                    raise SlackError("msg_too_long")
                markdown += text
            elif chunk["type"] == "blocks":
                validate_blocks(chunk.get("blocks"))
                extra_blocks += chunk["blocks"]
        return markdown, chunks, extra_blocks

    def _streaming_message(self, params: JSON) -> tuple[Channel, JSON]:
        ch = self._channel(_str_arg(params, "channel"))
        msg = self._message(ch, _str_arg(params, "ts"))
        stream = msg.get("_stream")
        if stream is None or stream["state"] != "streaming":
            raise SlackError("message_not_in_streaming_state")
        if time.monotonic() - stream["started"] > self.stream_ttl:
            stream["state"] = "expired"
            raise SlackError("message_not_in_streaming_state")
        return ch, msg

    def _chat_start_stream(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        thread_ts = _required(params, "thread_ts")
        if not ch.is_im:
            if _str_arg(params, "recipient_user_id") is None:
                raise SlackError("missing_recipient_user_id")
            if _str_arg(params, "recipient_team_id") is None:
                raise SlackError("missing_recipient_team_id")
        team = _str_arg(params, "recipient_team_id")
        if team is not None and team != TEAM_ID:
            raise SlackError("team_not_found")
        markdown, chunks, extra_blocks = self._stream_chunks(params)
        msg = self._bot_message(self._new_ts(), params)
        self._attach_to_thread(ch, msg, thread_ts)
        msg["text"] = markdown
        if extra_blocks:
            msg["blocks"] = extra_blocks
        msg["_stream"] = {
            "state": "streaming",
            "started": time.monotonic(),
            "recipient_user_id": _str_arg(params, "recipient_user_id"),
            "recipient_team_id": team,
            "chunks": list(chunks),
            "first_chunk": markdown or None,  # what members but the recipient see (issue 10)
        }
        ch.messages[msg["ts"]] = msg
        return {"channel": ch.id, "ts": msg["ts"]}

    def _chat_append_stream(self, params: JSON, token: str | None) -> JSON:
        ch, msg = self._streaming_message(params)
        if params.get("markdown_text") is None and params.get("chunks") is None:
            raise SlackError("no_text")
        markdown, chunks, extra_blocks = self._stream_chunks(params)
        msg["text"] += markdown
        if extra_blocks:
            msg["blocks"] = [*msg.get("blocks", []), *extra_blocks]
        msg["_stream"]["chunks"] += chunks
        msg["_stream"]["first_chunk"] = msg["_stream"]["first_chunk"] or markdown or None
        return {"channel": ch.id, "ts": msg["ts"]}

    def _chat_stop_stream(self, params: JSON, token: str | None) -> JSON:
        ch, msg = self._streaming_message(params)
        markdown, chunks, extra_blocks = self._stream_chunks(params)
        blocks = _json_arg(params, "blocks", "invalid_blocks_format")
        if blocks is not None:
            validate_blocks(blocks)
        metadata = _json_arg(params, "metadata", "invalid_metadata_format")
        msg["text"] += markdown
        all_blocks = [*msg.get("blocks", []), *extra_blocks, *(blocks or [])]
        if all_blocks:
            msg["blocks"] = all_blocks
        if metadata is not None:
            msg["metadata"] = _validate_metadata(metadata)
        msg["_stream"]["chunks"] += chunks
        msg["_stream"]["state"] = "stopped"
        rendered = self._render(ch, msg, metadata=True)
        return {"channel": ch.id, "ts": msg["ts"], "message": rendered}

    # ------------------------------------------------------------------ methods: conversations

    def _require_member(self, ch: Channel) -> None:
        """Slack: reading history, pinning and sharing files need the bot in the channel
        (``chat:write.public`` covers only posting in public channels). A private
        channel the bot is not in does not exist for it."""
        if ch.bot_member or ch.is_im:
            return
        raise SlackError("channel_not_found" if ch.is_private else "not_in_channel")

    def _conversations_join(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        if ch.is_im or ch.is_private:
            if not ch.bot_member:
                raise SlackError(
                    "channel_not_found"
                    if ch.is_private
                    else "method_not_supported_for_channel_type"
                )
            raise SlackError("method_not_supported_for_channel_type")
        if ch.is_archived:
            raise SlackError("is_archived")
        extra: JSON = {}
        if ch.bot_member:
            extra = {
                "warning": "already_in_channel",
                "response_metadata": {"warnings": ["already_in_channel"]},
            }
        ch.bot_member = True
        return {"channel": ch.info(), **extra}

    def _conversations_replies(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        self._require_member(ch)
        ts = _required(params, "ts")
        thread = self._thread_messages(ch, ts)
        if not thread:
            raise SlackError("thread_not_found")
        metadata = _as_bool(params.get("include_all_metadata"))
        items = [m for m in thread if m["ts"] == ts or _in_range(m["ts"], params)]
        limit = min(max(_int_arg(params, "limit", 1000), 1), 1000)
        page, cursor = _paginate(items, limit, _str_arg(params, "cursor"))
        return {
            "messages": [self._render(ch, m, metadata=metadata) for m in page],
            "has_more": bool(cursor),
            "response_metadata": {"next_cursor": cursor},
        }

    def _conversations_history(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        self._require_member(ch)
        metadata = _as_bool(params.get("include_all_metadata"))
        items = [
            m
            for m in reversed(self._sorted(ch.messages.values()))
            if (m.get("thread_ts", m["ts"]) == m["ts"] or m.get("subtype") == "thread_broadcast")
            and _in_range(m["ts"], params)
        ]
        limit = min(max(_int_arg(params, "limit", 100), 1), 999)
        page, cursor = _paginate(items, limit, _str_arg(params, "cursor"))
        return {
            "messages": [self._render(ch, m, metadata=metadata) for m in page],
            "has_more": bool(cursor),
            "pin_count": len(ch.pins),
            "response_metadata": {"next_cursor": cursor},
        }

    def _require_postable(self, ch: Channel) -> None:
        """Posting: archived channels take nothing; a private channel the bot is not in
        is invisible; a public one takes posts without joining (``chat:write.public``)."""
        if ch.is_archived:
            raise SlackError("is_archived")
        if ch.is_private and not ch.bot_member:
            raise SlackError("channel_not_found")

    def _conversations_info(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        info = ch.info()
        if _as_bool(params.get("include_num_members")):
            info["num_members"] = len(ch.members)
        return {"channel": info}

    def _conversations_members(self, params: JSON, token: str | None) -> JSON:
        # docs.slack.dev/reference/methods/conversations.members: the member ids of a
        # conversation, paginated by cursor; a private channel the bot is not in answers
        # channel_not_found (the bot cannot see it), as Slack does.
        ch = self._channel(_str_arg(params, "channel"))
        if (ch.is_private or ch.is_im) and not ch.bot_member:
            raise SlackError("channel_not_found")
        limit = _int_arg(params, "limit", 100)
        cursor = _str_arg(params, "cursor")
        start = int(cursor) if cursor and cursor.isdigit() else 0
        page = ch.members[start : start + max(1, min(limit, 1000))]
        end = start + len(page)
        next_cursor = str(end) if end < len(ch.members) else ""
        return {"members": list(page), "response_metadata": {"next_cursor": next_cursor}}

    # ------------------------------------------------------------------ methods: pins, reactions

    def _pins_add(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        self._require_member(ch)
        ts = _str_arg(params, "timestamp")
        if ts is None:
            raise SlackError("no_item_specified")
        self._message(ch, ts)
        if ts in ch.pins:
            raise SlackError("already_pinned")
        ch.pins[ts] = {"created": int(time.time()), "created_by": BOT_USER_ID}
        return {}

    def _pins_list(self, params: JSON, token: str | None) -> JSON:
        ch = self._channel(_str_arg(params, "channel"))
        items = [
            {
                "type": "message",
                "channel": ch.id,
                "created": pin["created"],
                "created_by": pin["created_by"],
                "message": self._render(ch, ch.messages[ts], metadata=False),
            }
            for ts, pin in reversed(ch.pins.items())
            if ts in ch.messages
        ]
        return {"items": items}

    def _reaction_target(self, params: JSON) -> tuple[JSON, str]:
        ch = self._channel(_str_arg(params, "channel"))
        ts = _str_arg(params, "timestamp")
        if ts is None:
            raise SlackError("no_item_specified")
        msg = self._message(ch, ts)
        name = _str_arg(params, "name")
        if name is None or ":" in name or any(c.isspace() for c in name):
            raise SlackError("invalid_name")
        return msg, name

    def _reactions_add(self, params: JSON, token: str | None) -> JSON:
        msg, name = self._reaction_target(params)
        reactions: list[JSON] = msg.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["name"] == name:
                if BOT_USER_ID in reaction["users"]:
                    raise SlackError("already_reacted")
                reaction["users"].append(BOT_USER_ID)
                reaction["count"] += 1
                return {}
        reactions.append({"name": name, "users": [BOT_USER_ID], "count": 1})
        return {}

    def _reactions_remove(self, params: JSON, token: str | None) -> JSON:
        msg, name = self._reaction_target(params)
        reactions: list[JSON] = msg.get("reactions", [])
        for reaction in reactions:
            if reaction["name"] == name and BOT_USER_ID in reaction["users"]:
                reaction["users"].remove(BOT_USER_ID)
                reaction["count"] -= 1
                if not reaction["users"]:
                    reactions.remove(reaction)
                if not reactions:
                    msg.pop("reactions", None)
                return {}
        raise SlackError("no_reaction")

    # ------------------------------------------------------------------ methods: users, views

    def _users_info(self, params: JSON, token: str | None) -> JSON:
        user_id = _str_arg(params, "user")
        if user_id is None or user_id not in self._users:
            raise SlackError("user_not_found")
        user = copy.deepcopy(self._users[user_id])
        if _as_bool(params.get("include_locale")):
            user["locale"] = "en-US"
        return {"user": user}

    def _view_arg(self, params: JSON) -> JSON:
        view = _json_arg(params, "view", "invalid_arguments")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", "[ERROR] missing required field: view")
        errors: list[str] = []
        if view.get("type") not in ("modal", "home"):
            errors.append("[ERROR] must be one of modal, home [json-pointer:/view/type]")
        if view.get("type") == "modal":
            errors += _text_object_errors(
                view.get("title"), "/view/title", MAX_VIEW_TITLE_CHARS, plain_only=True
            )
        if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA_CHARS:
            errors.append(
                "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]"
            )
        if errors:
            raise SlackError("invalid_arguments", *errors)
        validate_blocks(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        return view

    def _view_object(self, view: JSON, view_id: str, previous: JSON | None) -> JSON:
        return {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": view["type"],
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get(
                "external_id", previous.get("external_id", "") if previous else ""
            ),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": previous["root_view_id"] if previous else view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }

    def _views_open(self, params: JSON, token: str | None) -> JSON:
        _required(params, "trigger_id")
        view = self._view_arg(params)
        external_id = view.get("external_id")
        if external_id and any(v["external_id"] == external_id for v in self._views.values()):
            raise SlackError("duplicate_external_id")
        view_id = self._new_id("V")
        self._views[view_id] = self._view_object(view, view_id, None)
        return {"view": copy.deepcopy(self._views[view_id])}

    def _views_update(self, params: JSON, token: str | None) -> JSON:
        view = self._view_arg(params)
        view_id = _str_arg(params, "view_id")
        external_id = _str_arg(params, "external_id")
        current: JSON | None = None
        if view_id is not None:
            current = self._views.get(view_id)
        elif external_id is not None:
            current = next(
                (v for v in self._views.values() if v["external_id"] == external_id), None
            )
        else:
            raise SlackError("invalid_arguments", "[ERROR] view_id or external_id is required")
        if current is None:
            raise SlackError("not_found")
        expected = _str_arg(params, "hash")
        if expected is not None and expected != current["hash"]:
            raise SlackError("hash_conflict")
        updated = self._view_object(view, current["id"], current)
        self._views[current["id"]] = updated
        return {"view": copy.deepcopy(updated)}

    def _views_publish(self, params: JSON, token: str | None) -> JSON:
        # api.slack.com/methods/views.publish: user_id and a view of type "home" (at most
        # 100 blocks); `hash` guards against a race like views.update's.
        user = _required(params, "user_id")
        if user not in self._users:
            raise SlackError("invalid_arguments", "[ERROR] invalid `user_id`")
        view = self._view_arg(params)
        if view.get("type") != "home":
            raise SlackError("invalid_arguments", "[ERROR] must be home [json-pointer:/view/type]")
        current = self._homes.get(user)
        expected = _str_arg(params, "hash")
        if expected is not None and current is not None and expected != current["hash"]:
            raise SlackError("hash_conflict")
        view_id = current["id"] if current is not None else self._new_id("V")
        self._homes[user] = self._view_object(view, view_id, current)
        return {"view": copy.deepcopy(self._homes[user])}

    # ------------------------------------------------------------------ Socket Mode

    def _apps_connections_open(self, params: JSON, token: str | None) -> JSON:
        ticket = secrets.token_urlsafe(16)
        self._tickets.add(ticket)
        return {"url": f"ws://{self.host}:{self.port}{SOCKET_PATH}?ticket={ticket}&app_id={APP_ID}"}

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)  # Slack's URLs are good for one connection
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        self.hellos += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._socket_opened.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    self.internal_errors.append(f"socket: not JSON: {msg.data[:200]!r}")
                    continue
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                if not envelope_id:
                    continue
                self._acks[envelope_id] = data
                waiter = self._ack_waiters.pop(envelope_id, None)
                if waiter is not None:
                    waiter.set()
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_opened.clear()
        return ws

    async def wait_socket(self, within: float = 30.0) -> None:
        """Wait until a Socket Mode client is connected (and greeted)."""
        await asyncio.wait_for(self._socket_opened.wait(), within)

    async def socket_send(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
    ) -> str:
        """Push an envelope (``slash_commands``, ``events_api``, ``interactive``) to the
        newest connection, as Slack does to one of an app's connections; its envelope id."""
        if not self._sockets:
            raise RuntimeError("no Socket Mode client is connected")
        envelope_id = str(uuid.uuid4())
        envelope: JSON = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": (
                kind != "events_api"
                if accepts_response_payload is None
                else accepts_response_payload
            ),
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        self._ack_waiters[envelope_id] = asyncio.Event()
        await self._sockets[-1].send_json(envelope)
        return envelope_id

    async def socket_ack(self, envelope_id: str, within: float = 10.0) -> JSON:
        """The client's acknowledgement of an envelope: ``{"envelope_id", "payload"?}``."""
        if envelope_id not in self._acks:
            waiter = self._ack_waiters.setdefault(envelope_id, asyncio.Event())
            await asyncio.wait_for(waiter.wait(), within)
        return self._acks[envelope_id]

    # ------------------------------------------------------------------ methods: files

    def _files_get_upload_url_external(self, params: JSON, token: str | None) -> JSON:
        filename = _required(params, "filename")
        length = _int_arg(params, "length", -1)
        if length < 0:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: length")
        if self.max_upload_bytes is not None and length > self.max_upload_bytes:
            # "The size of provided file is too large, as the team has restricted uploads
            # of large files." (the method's reference page, errors)
            raise SlackError("file_upload_size_restricted")
        file_id = self._new_id("F")
        key = secrets.token_urlsafe(12)
        self._upload_keys[key] = file_id
        now = int(time.time())
        mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        filetype = filename.rpartition(".")[2].lower() if "." in filename else "binary"
        self._files[file_id] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": filename,
            "title": filename,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": BOT_USER_ID,
            "user_team": TEAM_ID,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "is_public": True,
            "size": length,
            "url_private": f"{self.base_url}files-pri/{TEAM_ID}-{file_id}/{filename}",
            "url_private_download": (
                f"{self.base_url}files-pri/{TEAM_ID}-{file_id}/download/{filename}"
            ),
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{BOT_USER_ID}/{file_id}/{filename}",
            "channels": [],
            "groups": [],
            "ims": [],
            "shares": {},
            "alt_txt": _str_arg(params, "alt_txt"),
            "_complete": False,
            "_length": length,
        }
        upload_url = f"{self.base_url}upload/v1/{key}"
        return {"upload_url": upload_url, "file_id": file_id}

    def _files_complete_upload_external(self, params: JSON, token: str | None) -> JSON:
        entries = _json_arg(params, "files", "invalid_arguments")
        if not isinstance(entries, list) or not entries:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: files")
        files: list[JSON] = []
        for entry in entries:
            file_id = entry.get("id") if isinstance(entry, dict) else None
            if file_id not in self._files or file_id not in self._file_bytes:
                raise SlackError("file_not_found")
            files.append(self._files[file_id])
        channel_ids = [_str_arg(params, "channel_id")] if _str_arg(params, "channel_id") else []
        channel_ids += [c for c in str(params.get("channels") or "").split(",") if c]
        thread_ts = _str_arg(params, "thread_ts")
        if thread_ts is not None and not channel_ids:
            raise SlackError("invalid_arguments", "[ERROR] thread_ts requires channel_id")
        channels = [self._channel(c) for c in channel_ids]
        for ch in channels:
            self._require_member(ch)
            if thread_ts is not None and thread_ts not in ch.messages:
                raise SlackError("thread_not_found")
        for f, entry in zip(files, entries, strict=True):
            f["_complete"] = True
            if entry.get("title"):
                f["title"] = entry["title"]
        comment = _str_arg(params, "initial_comment") or ""

        def share() -> None:
            for ch in channels:
                self._share(ch, files, thread_ts, comment)

        if self.share_delay_s > 0:
            asyncio.get_running_loop().call_later(self.share_delay_s, share)
        else:
            share()
        return {"files": [{"id": f["id"], "title": f["title"]} for f in files]}

    def _share(self, ch: Channel, files: list[JSON], thread_ts: str | None, comment: str) -> None:
        """The message that shares `files` in `ch` (or in its thread `thread_ts`)."""
        if thread_ts is not None and thread_ts not in ch.messages:
            return  # the thread's root went away meanwhile: Slack shares nowhere visible
        msg = self._bot_message(self._new_ts(), {})
        msg.update(text=comment, upload=True)
        msg["display_as_bot"] = False
        if thread_ts is not None:
            self._attach_to_thread(ch, msg, thread_ts)
        for f in files:
            share: JSON = {
                "ts": msg["ts"],
                "channel_name": ch.name,
                "team_id": TEAM_ID,
                "share_user_id": BOT_USER_ID,
            }
            if thread_ts is not None:
                share["thread_ts"] = msg["thread_ts"]
            kind = "private" if ch.is_private or ch.is_im else "public"
            f["shares"].setdefault(kind, {}).setdefault(ch.id, []).append(share)
            key = "ims" if ch.is_im else "groups" if ch.is_private else "channels"
            if ch.id not in f[key]:
                f[key].append(ch.id)
        msg["files"] = [self._public(f) for f in files]
        ch.messages[msg["ts"]] = msg

    def _files_info(self, params: JSON, token: str | None) -> JSON:
        """A file as Slack describes it: its ``shares`` fill in once the async share is done."""
        file_id = _required(params, "file")
        f = self._files.get(file_id)
        if f is None or not f["_complete"]:
            raise SlackError("file_not_found")
        return {"file": self._public(copy.deepcopy(f)), "comments": [], "response_metadata": {}}


# ---------------------------------------------------------------------- standalone process


async def _serve(args: argparse.Namespace) -> None:
    slack = FakeSlack(
        token=args.token[0] if args.token else DEFAULT_TOKEN,
        tokens=args.token[1:] if args.token else (),
        host=args.host,
        port=args.port,
        auto_create_channels=not args.no_auto_create,
        post_rate_limit=args.rate_limit,
        stream_ttl=args.stream_ttl,
    )
    await serve_until_signalled(slack, lambda: slack.api_url)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.slack_server",
        description="Fake Slack Web API. Prints its API URL, then serves until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument(
        "--token",
        action="append",
        help=f"accepted bot token; repeatable (default: {DEFAULT_TOKEN})",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="at most N chat.postMessage per channel per second (default: off)",
    )
    parser.add_argument("--no-auto-create", action="store_true", help="only seeded channels exist")
    parser.add_argument("--stream-ttl", type=float, default=DEFAULT_STREAM_TTL)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
