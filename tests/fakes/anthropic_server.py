"""A fake Anthropic Messages API server, so the Claude client is tested without reaching Anthropic.

The app talks to Claude only through ``anthropic.AsyncAnthropic``, whose ``base_url`` comes from
the ``ANTHROPIC_BASE_URL`` setting. Point that at :attr:`FakeAnthropic.base_url` and every
``POST /v1/messages`` lands here, where a test can script the replies, read every request body
(prefixes, cache breakpoints, interjections) and make the API misbehave on demand.

Two ways to run it:

* in-process, from async tests::

      async with FakeAnthropic() as fake:
          fake.enqueue_text('{"message": "hi"}')
          model = AnthropicModel(api_key=fake.api_key, model="claude-sonnet-5-5",
                                 base_url=fake.base_url)
          ...
          assert fake.requests[0]["system"][0]["cache_control"] == {"type": "ephemeral"}

* as a process, for end-to-end tests that start the app in a subprocess::

      python -m tests.fakes.anthropic_server --port 0

  prints its base URL (``http://127.0.0.1:PORT``) on the first line of stdout, then serves
  until SIGINT/SIGTERM. Another process steers it over HTTP: ``POST /_fake/script`` with any of
  ``{"replies": [text | {"text", "stop_reason", "model"}], "mode": "schema" | "echo",
  "fail": {"status", "k", "retry_after"}, "truncate": k, "error_mid_stream": k,
  "chunk_delay": seconds}``; ``GET /_fake/requests``; ``POST /_fake/reset``.

What it imitates:

* auth: the key, sent as ``x-api-key`` or (as anthropic 2.x does) ``Authorization: Bearer``,
  must be the fake's key (else 401 ``authentication_error``), and an ``anthropic-version``
  header is required (else 400, as the real API answers).
* validation (400 ``invalid_request_error``): unknown top-level fields, missing ``model`` /
  ``max_tokens`` / ``messages``, empty text blocks, more than 4 ``cache_control`` blocks, an
  ``output_config.format`` that is not a ``json_schema`` whose objects all say
  ``additionalProperties: false``.
* replies as the real payloads: a ``message`` JSON object, or with ``"stream": true`` SSE in the
  real order (``message_start``, ``content_block_start``, ``ping``, several
  ``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``). The
  served model is the requested one with a date suffix (``claude-sonnet-5-5`` is served as
  ``claude-sonnet-5-5-20260815``), so a test can tell it from the configured alias.
* errors in the real shape ``{"type": "error", "error": {"type", "message"}, "request_id"}``
  with a ``request-id`` header; 429 ``rate_limit_error`` (with ``retry-after`` when given),
  500 ``api_error``, 529 ``overloaded_error``; an ``event: error`` in the middle of a stream.
* ``max_tokens``: a reply longer than ``max_tokens`` tokens is cut there, with stop_reason
  ``"max_tokens"``.
* prompt caching: a prompt is the model, the output format and the tools, then the system
  blocks, then the message blocks, in that order; each ``cache_control`` block ends a prefix
  that is written to the cache (keyed on content: moving a breakpoint changes nothing else).
  A request reads the longest cached prefix found by looking back up to 20 blocks from each
  of its breakpoints, writes the rest up to its last breakpoint, and pays plain input for the
  blocks after it. Tokens are ``len(text) // 4`` per block. :meth:`FakeAnthropic.account`
  does the sums.
* recording: :attr:`FakeAnthropic.requests` holds every parsed request body in arrival order
  (rejected and faulted ones too, so retries show), :attr:`FakeAnthropic.request_headers`
  their headers (e.g. the SDK's ``x-stainless-retry-count``).

What it does not imitate: tools, images, documents, thinking, token counting by a real
tokenizer, the structured-output grammar (the reply is whatever the script says; with no
script it is a minimal instance of the schema), cache TTLs (nothing expires), rate-limit
headers, and the minimum cacheable prompt length unless ``min_cache_tokens`` asks for one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer, serve_until_signalled

JSON = dict[str, Any]
Responder = Callable[[JSON], str]

DEFAULT_API_KEY = "sk-ant-fake-key"
DEFAULT_MODEL_DATE = "20260815"
DEFAULT_CHUNK_CHARS = 16
LOOKBACK_BLOCKS = 20  # the API looks back about 20 blocks from a breakpoint for a cache hit
MAX_BREAKPOINTS = 4

KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stream",
        "metadata",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "service_tier",
        "container",
        "cache_control",
        "inference_geo",
        "speed",
        "diagnostics",
        "context_management",
        "mcp_servers",
    }
)

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_OF_TYPE = {v: k for k, v in ERROR_TYPES.items()}
ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timeout",
    "overloaded_error": "Overloaded",
}
_DATED = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class CannedReply:
    text: str
    stop_reason: str = "end_turn"
    model: str | None = None  # served model; None: the requested one, dated


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: float | None = None


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


def tokens(text: str) -> int:
    """The fake's tokenizer: four characters a token."""
    return len(text) // 4


# ---- default replies -----------------------------------------------------------------------


def schema_instance(schema: JSON, root: JSON | None = None) -> Any:
    """A minimal value that follows `schema` (first enum value, first anyOf branch, ...)."""
    root = schema if root is None else root
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return schema_instance(root.get("$defs", {})[name], root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], root)
    if schema.get("allOf"):
        return schema_instance(schema["allOf"][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props: JSON = schema.get("properties", {})
        return {k: schema_instance(props[k], root) for k in schema.get("required", list(props))}
    defaults: dict[str, Any] = {
        "string": "fake",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
    }
    return defaults.get(str(kind))


def schema_responder(body: JSON) -> str:
    """Replies with a minimal instance of the request's output schema, or a greeting."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return json.dumps(schema_instance(fmt["schema"]))
    return "Hello from the fake Anthropic API."


def echo_responder(body: JSON) -> str:
    """Replies with the text of the last user message."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return "".join(block_text(b) for b in content_blocks(message.get("content")))
    return ""


RESPONDERS: dict[str, Responder] = {"schema": schema_responder, "echo": echo_responder}


# ---- request anatomy -------------------------------------------------------------------------


def content_blocks(content: Any) -> list[JSON]:
    """A message's or system's content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def block_text(block: JSON) -> str:
    if block.get("type") == "text":
        return str(block.get("text", ""))
    return json.dumps(block, sort_keys=True)


@dataclass(frozen=True)
class _Block:
    key: str  # what the block is, without its cache_control: the cache keys on content only
    tokens: int
    breakpoint: bool


def _prompt_blocks(body: JSON) -> list[_Block]:
    out: list[_Block] = []
    for block in content_blocks(body.get("system")):
        bare = {k: v for k, v in block.items() if k != "cache_control"}
        key = json.dumps({"system": bare}, sort_keys=True)
        out.append(_Block(key, tokens(block_text(block)), "cache_control" in block))
    for message in body.get("messages", []):
        for block in content_blocks(message.get("content")):
            bare = {k: v for k, v in block.items() if k != "cache_control"}
            key = json.dumps({"role": message.get("role"), "block": bare}, sort_keys=True)
            out.append(_Block(key, tokens(block_text(block)), "cache_control" in block))
    return out


def _schema_problem(schema: Any, path: str = "schema") -> str | None:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            return (
                f"output_config.format.{path}: For 'object' type, 'additionalProperties' "
                "must be explicitly set to false"
            )
        for key, value in schema.items():
            problem = _schema_problem(value, f"{path}.{key}")
            if problem:
                return problem
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            problem = _schema_problem(value, f"{path}.{i}")
            if problem:
                return problem
    return None


def validate(body: Any) -> str | None:
    """What the real API would reject in `body` (its 400 message), or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    for key in body:
        if key not in KNOWN_FIELDS:
            return f"{key}: Extra inputs are not permitted"
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return f"{key}: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: String should have at least 1 character"
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    contents: list[tuple[str, Any]] = []
    if body.get("system") is not None:
        contents.append(("system", body["system"]))
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "content" not in message:
            return f"messages.{i}: a message needs a role and content"
        if message.get("role") not in ("user", "assistant", "system"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        contents.append((f"messages.{i}", message["content"]))
    breakpoints = 0
    for where, content in contents:
        blocks = content_blocks(content)
        if not blocks and where != "system":
            return f"{where}.content: at least one content block is required"
        for block in blocks:
            if block.get("type") == "text" and not str(block.get("text", "")).strip():
                return f"{where}: text content blocks must contain non-whitespace text"
            control = block.get("cache_control")
            if control is None:
                continue
            breakpoints += 1
            if not isinstance(control, dict) or control.get("type") != "ephemeral":
                return f"{where}.cache_control.type: Input should be 'ephemeral'"
            if control.get("ttl", "5m") not in ("5m", "1h"):
                return f"{where}.cache_control.ttl: Input should be '5m' or '1h'"
    if breakpoints > MAX_BREAKPOINTS:
        return (
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            return "output_config: Input should be a valid dictionary"
        fmt = config.get("format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
                return "output_config.format.type: Input should be 'json_schema'"
            if not isinstance(fmt.get("schema"), dict):
                return "output_config.format.schema: Field required"
            return _schema_problem(fmt["schema"])
    return None


# ---- the server ------------------------------------------------------------------------------


class FakeAnthropic(LoopbackServer):
    """The fake Messages API: scripted replies, recorded requests, injected faults."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        chunk_delay: float = 0.0,
        min_cache_tokens: int = 0,
        model_date: str = DEFAULT_MODEL_DATE,
    ) -> None:
        """
        Args:
            api_key: the only ``x-api-key`` accepted.
            port: 0 for a free port (read :attr:`base_url` once started).
            chunk_chars: characters per ``text_delta`` when streaming.
            chunk_delay: seconds to wait before each delta, so streaming can be watched.
            min_cache_tokens: a prefix shorter than this is neither cached nor read (the real
                minimum is 1024+ tokens depending on the model; 0 caches everything, which
                makes small test prompts measurable).
            model_date: the date suffix of served model ids.
        """
        self.api_key = api_key
        self.host = host
        self.port = port
        self.chunk_chars = max(chunk_chars, 1)
        self.chunk_delay = chunk_delay
        self.min_cache_tokens = min_cache_tokens
        self.model_date = model_date
        self.responder: Responder | None = None
        self.requests: list[JSON] = []
        self.request_headers: list[dict[str, str]] = []
        self.internal_errors: list[str] = []  # exceptions inside the fake itself (a fake bug)
        self._replies: deque[CannedReply] = deque()
        self._faults: deque[Fault] = deque()
        self._truncations = 0
        self._mid_stream_errors: deque[str] = deque()
        self._cache: set[str] = set()

    # ---- lifecycle

    @property
    def base_url(self) -> str:
        """The value for ``ANTHROPIC_BASE_URL`` / the SDK's ``base_url`` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    # ---- scripting

    def enqueue_text(
        self, text: str, stop_reason: str = "end_turn", model: str | None = None
    ) -> None:
        """Queue the text of a future reply (replies are served first in, first out)."""
        self._replies.append(CannedReply(text, stop_reason, model))

    def enqueue_json(self, value: Any, stop_reason: str = "end_turn") -> None:
        self.enqueue_text(json.dumps(value, ensure_ascii=False), stop_reason)

    def fail_next(self, status: int, k: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `k` requests with an HTTP error of `status` (429, 500, 529, ...).

        The real API sends ``retry-after`` with a 429; pass `retry_after` to imitate it (the
        SDK then waits that long instead of backing off exponentially).
        """
        self._faults.extend(Fault(status, retry_after) for _ in range(k))

    def truncate_next(self, k: int = 1) -> None:
        """Cut the next `k` replies in half, with stop_reason ``"max_tokens"``."""
        self._truncations += k

    def error_mid_stream_next(self, k: int = 1, error_type: str = "overloaded_error") -> None:
        """Break the next `k` streams with an ``event: error`` after some deltas.

        A non-streaming request answers the same error as an HTTP status instead.
        """
        self._mid_stream_errors.extend(error_type for _ in range(k))

    def reset(self) -> None:
        """Forget every request, scripted reply, fault and cached prefix."""
        self.requests.clear()
        self.request_headers.clear()
        self.internal_errors.clear()
        self._replies.clear()
        self._faults.clear()
        self._truncations = 0
        self._mid_stream_errors.clear()
        self._cache.clear()
        self.responder = None

    def served_model(self, requested: str) -> str:
        return requested if _DATED.search(requested) else f"{requested}-{self.model_date}"

    # ---- cache accounting

    def account(self, body: JSON) -> CacheUsage:
        """Split the prompt's tokens into cache read, cache write and plain input, and cache.

        Mirrors the real accounting: read = the longest cached prefix reachable from a
        breakpoint, write = from there to the last breakpoint, input = the rest.
        """
        blocks = _prompt_blocks(body)
        fmt = (body.get("output_config") or {}).get("format")
        digest = hashlib.sha256(
            json.dumps([body.get("model"), fmt, body.get("tools")], sort_keys=True).encode()
        )
        hashes: list[str] = []
        cumulative: list[int] = []
        running = 0
        for block in blocks:
            digest.update(block.key.encode())
            hashes.append(digest.copy().hexdigest())
            running += block.tokens
            cumulative.append(running)
        total = running
        marks = [
            i
            for i, b in enumerate(blocks)
            if b.breakpoint and cumulative[i] >= self.min_cache_tokens
        ]
        hit = -1
        for mark in marks:
            for j in range(mark, max(mark - LOOKBACK_BLOCKS, -1), -1):
                if hashes[j] in self._cache:
                    hit = max(hit, j)
                    break
        read = cumulative[hit] if hit >= 0 else 0
        write = cumulative[marks[-1]] - read if marks and marks[-1] > hit else 0
        for mark in marks:
            self._cache.add(hashes[mark])
        return CacheUsage(
            input_tokens=total - read - write,
            cache_creation_input_tokens=write,
            cache_read_input_tokens=read,
        )

    # ---- HTTP

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/_fake/script", self._script)
        app.router.add_get("/_fake/requests", self._requests)
        app.router.add_post("/_fake/reset", self._reset)
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            self.internal_errors.append(traceback.format_exc())
            return self._error(500, "api_error", "fake server bug (see internal_errors)")

    @staticmethod
    def _request_id() -> str:
        return f"req_{uuid.uuid4().hex[:24]}"

    def _error(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        rid = self._request_id()
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": rid,
        }
        return web.json_response(
            body, status=status, headers={"request-id": rid, **(headers or {})}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            return self._error(400, "invalid_request_error", "Request body is not valid JSON")
        self.requests.append(body)
        self.request_headers.append({k.lower(): v for k, v in request.headers.items()})

        if self._presented_key(request) != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        problem = validate(body)
        if problem:
            return self._error(400, "invalid_request_error", problem)
        if self._faults:
            fault = self._faults.popleft()
            error_type = ERROR_TYPES.get(fault.status, "api_error")
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            return self._error(fault.status, error_type, ERROR_MESSAGES[error_type], headers)

        reply = self._next_reply(body)
        usage = self.account(body)
        text, stop_reason = reply.text, reply.stop_reason
        limit = body["max_tokens"] * 4
        if self._truncations:
            self._truncations -= 1
            limit = min(limit, len(text) // 2)
        if len(text) > limit:
            text, stop_reason = text[:limit], "max_tokens"
        served = reply.model or self.served_model(body["model"])
        mid_error = self._mid_stream_errors.popleft() if self._mid_stream_errors else None

        if not body.get("stream"):
            if mid_error is not None:
                status = STATUS_OF_TYPE.get(mid_error, 500)
                return self._error(status, mid_error, ERROR_MESSAGES.get(mid_error, mid_error))
            return web.json_response(
                self._message(served, text, stop_reason, usage, max(tokens(text), 1)),
                headers={"request-id": self._request_id()},
            )
        return await self._stream(request, served, text, stop_reason, usage, mid_error)

    @staticmethod
    def _presented_key(request: web.Request) -> str | None:
        # The API takes the key as `x-api-key` (curl, older SDKs) or as a bearer token, which
        # is how anthropic 2.x sends it.
        key = request.headers.get("x-api-key")
        if key is not None:
            return key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def _next_reply(self, body: JSON) -> CannedReply:
        if self._replies:
            return self._replies.popleft()
        responder = self.responder or schema_responder
        return CannedReply(responder(body))

    @staticmethod
    def _usage(usage: CacheUsage, output_tokens: int) -> JSON:
        return {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def _message(
        self,
        model: str,
        text: str,
        stop_reason: str | None,
        usage: CacheUsage,
        output_tokens: int,
        content: list[JSON] | None = None,
    ) -> JSON:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}] if content is None else content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(usage, output_tokens),
        }

    async def _stream(
        self,
        request: web.Request,
        model: str,
        text: str,
        stop_reason: str,
        usage: CacheUsage,
        mid_error: str | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": self._request_id(),
            },
        )
        await response.prepare(request)

        async def send(event: str, data: JSON) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        step = self.chunk_chars
        # Always at least two deltas for a text of two or more characters, as real streams
        # rarely deliver a reply in one piece and clients must cope with several.
        if 1 < len(text) <= step:
            step = (len(text) + 1) // 2
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        try:
            start = self._message(model, "", None, usage, 1, content=[])
            await send("message_start", {"type": "message_start", "message": start})
            await send(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            await send("ping", {"type": "ping"})
            for n, chunk in enumerate(chunks):
                if mid_error is not None and n >= max(len(chunks) // 2, 1):
                    message = ERROR_MESSAGES.get(mid_error, mid_error)
                    error = {"type": "error", "error": {"type": mid_error, "message": message}}
                    await send("error", error)
                    await response.write_eof()
                    return response
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": chunk},
                    },
                )
            if mid_error is not None:  # too short to break in the middle: break at the end
                message = ERROR_MESSAGES.get(mid_error, mid_error)
                await send(
                    "error", {"type": "error", "error": {"type": mid_error, "message": message}}
                )
                await response.write_eof()
                return response
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
            final = self._usage(usage, max(tokens(text), 1))
            del final["cache_creation"], final["service_tier"]
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": final,
                },
            )
            await send("message_stop", {"type": "message_stop"})
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client hung up; nothing more to send
        return response

    # ---- control endpoints (standalone mode)

    async def _script(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("mode", "schema") not in RESPONDERS:
            return web.json_response(
                {"ok": False, "error": f"mode must be one of {sorted(RESPONDERS)}"}, status=400
            )
        for item in body.get("replies", []):
            if isinstance(item, str):
                self.enqueue_text(item)
            else:
                self.enqueue_text(
                    item["text"], item.get("stop_reason", "end_turn"), item.get("model")
                )
        if "mode" in body:
            self.responder = RESPONDERS[body["mode"]]
        if "fail" in body:
            fail = body["fail"]
            self.fail_next(int(fail["status"]), int(fail.get("k", 1)), fail.get("retry_after"))
        if "truncate" in body:
            self.truncate_next(int(body["truncate"]))
        if "error_mid_stream" in body:
            self.error_mid_stream_next(int(body["error_mid_stream"]))
        if "chunk_delay" in body:
            self.chunk_delay = float(body["chunk_delay"])
        return web.json_response({"ok": True, "queued": len(self._replies)})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


# ---- standalone process ----------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeAnthropic(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        chunk_delay=args.chunk_delay,
        min_cache_tokens=args.min_cache_tokens,
    )
    fake.responder = RESPONDERS[args.mode]
    await serve_until_signalled(fake, lambda: fake.base_url)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.anthropic_server",
        description="Fake Anthropic Messages API. Prints its base URL, then serves until "
        "SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--mode",
        choices=sorted(RESPONDERS),
        default="schema",
        help="reply when nothing is scripted: a minimal schema instance, or an echo",
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--min-cache-tokens", type=int, default=0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
