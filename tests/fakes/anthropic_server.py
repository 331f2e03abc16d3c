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
  "chunk_delay": seconds, "storm": {"seconds", "status"}, "refuse": {"k", "category",
  "explanation"}, "text_chars": n}``; ``GET /_fake/requests``; ``POST /_fake/reset``.

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
  ``"max_tokens"``. Thinking counts toward it.
* thinking, per the model pages: models that think by default (the 5.x family) do so unless
  ``thinking`` is ``disabled`` or ``between_tools``; a model that refuses a setting answers
  400 as the real one does (``disabled`` on Opus 5.5 / Fable / Mythos and on Sonnet 5.5,
  ``between_tools`` above effort high, ...). Thinking spends ``thinking_tokens[effort]``
  output tokens (the model's default effort when none is sent) in a thinking block with its
  text omitted, before the text, and is reported in ``usage.output_tokens_details``. A
  budget that thinking uses up ends with ``max_tokens`` and no text.
* refusals: :meth:`FakeAnthropic.refuse_next` answers ``stop_reason: "refusal"`` with empty
  content and ``stop_details``.
* outages: :meth:`FakeAnthropic.storm` answers every request with 529 for a while, longer
  than the SDK's retries if asked.
* structured outputs: the keywords the grammar does not support (``minLength``,
  ``maximum``, ``minItems`` above 1, ...) are a 400, as is an object without
  ``additionalProperties: false``.
* the schema-only model: with nothing scripted, the reply fills the request's schema without
  reading the system prompt or the conversation (:class:`SchemaFiller`: first enum value,
  first anyOf branch, arbitrary strings that honour the description's length hints).
* prompt caching: a prompt is the model, the output format and the tools, then the system
  blocks, then the message blocks, in that order; each ``cache_control`` block ends a prefix
  that is written to the cache (keyed on content: moving a breakpoint changes nothing else).
  A request reads the longest cached prefix found by looking back up to 20 blocks from each
  of its breakpoints, writes the rest up to its last breakpoint, and pays plain input for the
  blocks after it. A breakpoint whose prefix is below the model's minimum cacheable length
  (MIN_CACHE_TOKENS) neither writes nor reads. Tokens are ``len(text) // 4`` per block.
  :meth:`FakeAnthropic.account` does the sums.
* recording: :attr:`FakeAnthropic.requests` holds every parsed request body in arrival order
  (rejected and faulted ones too, so retries show), :attr:`FakeAnthropic.request_headers`
  their headers (e.g. the SDK's ``x-stainless-retry-count``).

What it does not imitate: tools, images, documents, thinking text, token counting by a real
tokenizer, the structured-output grammar for scripted replies (a script says what it says),
cache TTLs (nothing expires) and rate-limit headers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
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

# The minimum cacheable prompt per model (tokens): a breakpoint whose prefix is shorter is
# neither written nor read, silently. Sources: Opus 5's what's-new page (512, down from
# 1,024 on Opus 4.8); the 5.5 migration notes ("512-token minimum cacheable prompt"); Fable
# 5.1 keeps Fable 5's 512; the prompt-caching page's table for the 4.x models (1,024 for
# Sonnet 4.5/4.6, Opus 4.8 and Sonnet 5; 2,048 for Opus 4.7; 4,096 for Opus 4.5/4.6 and
# Haiku 4.5). Longest matching prefix wins; an unknown model gets UNKNOWN_MIN_CACHE_TOKENS.
MIN_CACHE_TOKENS: dict[str, int] = {
    "claude-fable-5": 512,
    "claude-mythos-5": 512,
    "claude-opus-5": 512,
    "claude-opus-5-5": 512,
    "claude-sonnet-5-5": 512,
    "claude-haiku-5-5": 512,
    "claude-sonnet-5": 1024,
    "claude-opus-4-8": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-7": 2048,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
}
UNKNOWN_MIN_CACHE_TOKENS = 1024

# Thinking, as the model pages describe it (see bot/llm/anthropic_model.py for the sources).
# Models that think unless told otherwise, and their default effort:
THINKS_BY_DEFAULT: dict[str, str] = {
    "claude-fable-5": "high",
    "claude-mythos-5": "high",
    "claude-opus-5-5": "medium",
    "claude-opus-5": "high",
    "claude-sonnet-5-5": "high",
    "claude-sonnet-5": "high",
    "claude-haiku-5-5": "medium",
}
ALWAYS_THINKS = ("claude-fable-5", "claude-mythos-5", "claude-opus-5-5")  # disabled is a 400
BETWEEN_TOOLS_ONLY = ("claude-sonnet-5-5",)  # disabled is a 400; between_tools is the floor
DISABLED_UP_TO_HIGH = ("claude-opus-5", "claude-haiku-5-5")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
# Output tokens the fake spends thinking at each effort (the real amount varies per request;
# these are fixed so tests can reason about budgets). Thinking counts toward max_tokens.
DEFAULT_THINKING_TOKENS: dict[str, int] = {
    "low": 300,
    "medium": 1500,
    "high": 4000,
    "xhigh": 8000,
    "max": 16000,
}

# JSON-schema keywords structured outputs do not accept (the SDK's transform_schema moves
# them into the description for this reason: anthropic/lib/_parse/_transform.py).
UNSUPPORTED_SCHEMA_KEYWORDS = frozenset(
    {
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "maxItems",
        "uniqueItems",
    }
)
_HINT = re.compile(r"\{([^{}]*)\}\s*$")


def _family(model: str, table: Any) -> str | None:
    """The longest key of `table` that `model` is, or starts with at a "-" boundary."""
    best: str | None = None
    for base in table:
        if (model == base or model.startswith(base + "-")) and (
            best is None or len(base) > len(best)
        ):
            best = base
    return best


def min_cache_tokens_for(model: str) -> int:
    family = _family(model, MIN_CACHE_TOKENS)
    return MIN_CACHE_TOKENS[family] if family else UNKNOWN_MIN_CACHE_TOKENS


def thinking_effort(body: JSON) -> str | None:
    """The effort the model thinks at for this request, or None when it does not think."""
    model = str(body.get("model", ""))
    family = _family(model, THINKS_BY_DEFAULT)
    kind = (body.get("thinking") or {}).get("type")
    effort = (body.get("output_config") or {}).get("effort")
    if kind in ("disabled", "between_tools"):  # no tools: between_tools answers in text only
        return None
    if kind in ("adaptive", "enabled") or (kind is None and family is not None):
        default = THINKS_BY_DEFAULT[family] if family else "high"
        return str(effort or default)
    return None


def _thinking_problem(body: JSON) -> str | None:
    model = str(body.get("model", ""))
    thinking = body.get("thinking")
    config = body.get("output_config") or {}
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None and effort not in EFFORTS:
        return "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("adaptive", "enabled", "disabled", "between_tools"):
        return "thinking.type: Input tag does not match any of the expected tags"
    always = _family(model, {f: 0 for f in ALWAYS_THINKS})
    if always and kind in ("disabled", "enabled"):
        return (
            f'"thinking.type.{kind}" is not supported for this model. Use '
            '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
        )
    if _family(model, {f: 0 for f in BETWEEN_TOOLS_ONLY}) and not always:
        if kind == "disabled":
            return (
                '"thinking.type.disabled" is not supported for this model. Use '
                '"thinking.type.between_tools" to turn off up-front thinking.'
            )
        if kind == "between_tools" and effort in ("xhigh", "max"):
            return '"thinking.type.between_tools" is not supported at effort xhigh or max.'
    if kind == "disabled" and effort in ("xhigh", "max"):
        if _family(model, {f: 0 for f in DISABLED_UP_TO_HIGH}) and not always:
            return "thinking can be disabled only at effort high or lower on this model."
    return None


@dataclass(frozen=True)
class CannedReply:
    text: str
    stop_reason: str = "end_turn"
    model: str | None = None  # served model; None: the requested one, dated
    stop_details: JSON | None = None  # with stop_reason "refusal"


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: float | None = None


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


@dataclass(frozen=True)
class _Output:
    """What a reply holds: its text, the tokens spent thinking before it, why it stopped."""

    text: str
    thinking: int
    stop_reason: str
    stop_details: JSON | None = None

    @property
    def output_tokens(self) -> int:
        return self.thinking + (max(tokens(self.text), 1) if self.text else 0)

    @property
    def signature(self) -> str:
        return f"sig_{self.thinking}"

    def content(self) -> list[JSON]:
        blocks: list[JSON] = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": "", "signature": self.signature})
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        return blocks


def tokens(text: str) -> int:
    """The fake's tokenizer: four characters a token."""
    return len(text) // 4


# ---- default replies -----------------------------------------------------------------------


def _length_hints(schema: JSON) -> dict[str, int]:
    """The `{minLength: 120, maxLength: 4000}` a description ends with (the SDK's way of
    passing limits the grammar cannot enforce), as a dict."""
    found = _HINT.search(str(schema.get("description", "")))
    hints: dict[str, int] = {}
    if found:
        for item in found.group(1).split(","):
            key, _, value = item.partition(":")
            if value.strip().isdigit():
                hints[key.strip()] = int(value.strip())
    return hints


class SchemaFiller:
    """Fills a schema the way a model that reads only the schema would.

    The first enum value, the first anyOf branch, and for strings arbitrary text that differs
    from call to call, as long as `text_chars` (or `field_chars[name]` for a property of that
    name) unless the schema's description gives length limits; arrays hold `minItems` items
    (at least one). It never reads the system prompt or the conversation.
    """

    def __init__(self, text_chars: int = 60, field_chars: dict[str, int] | None = None) -> None:
        self.text_chars = text_chars
        self.field_chars = dict(field_chars or {})
        self.calls = 0

    def __call__(self, body: JSON) -> str:
        fmt = (body.get("output_config") or {}).get("format") or {}
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
            self.calls += 1
            return json.dumps(self.instance(fmt["schema"]))
        return "Hello from the fake Anthropic API."

    def text(self, schema: JSON, path: str) -> str:
        hints = _length_hints(schema)
        name = path.rsplit(".", 1)[-1].split("[", 1)[0]
        wanted = self.field_chars.get(name, self.text_chars)
        low = hints.get("minLength", 1)
        high = hints.get("maxLength", max(wanted, low))
        length = min(max(wanted, low), high)
        seed = f"{path} {self.calls}: arbitrary words that fill the schema. "
        return (seed * (length // len(seed) + 1))[:length].strip().ljust(length, ".")

    def instance(self, schema: JSON, root: JSON | None = None, path: str = "") -> Any:
        root = schema if root is None else root
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            return self.instance(root.get("$defs", {})[name], root, path)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.instance(schema[key][0], root, path)
        if schema.get("allOf"):
            return self.instance(schema["allOf"][0], root, path)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            props: JSON = schema.get("properties", {})
            return {
                k: self.instance(props[k], root, f"{path}.{k}".lstrip("."))
                for k in schema.get("required", list(props))
            }
        if kind == "array":
            items = schema.get("items") or {"type": "string"}
            n = max(int(schema.get("minItems", 1)), 1)
            return [self.instance(items, root, f"{path}[{i}]") for i in range(n)]
        if kind == "string":
            return self.text(schema, path)
        defaults: dict[str, Any] = {"integer": 1, "number": 1, "boolean": False}
        return defaults.get(str(kind))


def schema_instance(schema: JSON) -> Any:
    """A value that follows `schema`, as the schema-only filler writes it."""
    return SchemaFiller().instance(schema)


def schema_responder(body: JSON) -> str:
    """Replies with an instance of the request's output schema, or a greeting."""
    return SchemaFiller()(body)


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


def _schema_problem(schema: Any, path: str = "schema", in_properties: bool = False) -> str | None:
    if isinstance(schema, dict):
        if not in_properties:
            if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
                return (
                    f"output_config.format.{path}: For 'object' type, 'additionalProperties' "
                    "must be explicitly set to false"
                )
            for key in UNSUPPORTED_SCHEMA_KEYWORDS & schema.keys():
                return f"output_config.format.{path}: property '{key}' is not supported"
            if schema.get("minItems", 0) not in (0, 1):
                return (
                    f"output_config.format.{path}: 'minItems' values other than 0 or 1 are "
                    "not supported"
                )
        for key, value in schema.items():
            problem = _schema_problem(
                value, f"{path}.{key}", in_properties=key in ("properties", "$defs")
            )
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
    if body.get("thinking") is not None and not isinstance(body.get("thinking"), dict):
        return "thinking: Input should be a valid dictionary"
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
            problem = _schema_problem(fmt["schema"])
            if problem:
                return problem
    return _thinking_problem(body)


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
        min_cache_tokens: int | None = None,
        model_date: str = DEFAULT_MODEL_DATE,
        thinking_tokens: dict[str, int] | None = None,
    ) -> None:
        """
        Args:
            api_key: the only ``x-api-key`` accepted.
            port: 0 for a free port (read :attr:`base_url` once started).
            chunk_chars: characters per ``text_delta`` when streaming.
            chunk_delay: seconds to wait before each delta, so streaming can be watched.
            min_cache_tokens: a prefix shorter than this is neither cached nor read. None
                (the default): each model's real minimum (MIN_CACHE_TOKENS); 0 caches
                everything, which makes small test prompts measurable.
            model_date: the date suffix of served model ids.
            thinking_tokens: output tokens spent thinking at each effort, when the request
                lets the model think (DEFAULT_THINKING_TOKENS).
        """
        self.api_key = api_key
        self.host = host
        self.port = port
        self.chunk_chars = max(chunk_chars, 1)
        self.chunk_delay = chunk_delay
        self.min_cache_tokens = min_cache_tokens
        self.model_date = model_date
        self.thinking_tokens = dict(thinking_tokens or DEFAULT_THINKING_TOKENS)
        self.responder: Responder | None = None
        # The schema-only model: what answers when nothing is scripted and no responder is set.
        self.filler = SchemaFiller()
        self.requests: list[JSON] = []
        self.request_headers: list[dict[str, str]] = []
        self.internal_errors: list[str] = []  # exceptions inside the fake itself (a fake bug)
        self._replies: deque[CannedReply] = deque()
        self._faults: deque[Fault] = deque()
        self._truncations = 0
        self._mid_stream_errors: deque[str] = deque()
        self._cache: set[str] = set()
        self._storm_until = 0.0
        self._storm_status = 529
        # What storms are timed by; a test may share a virtual clock with the app's sleeps.
        self.clock: Callable[[], float] = time.monotonic

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

    def storm(self, seconds: float, status: int = 529) -> None:
        """Answer every request for the next `seconds` with `status` (an overload that lasts
        longer than the SDK's retries, which give up after about 8 s)."""
        self._storm_until = self.clock() + seconds
        self._storm_status = status

    def refuse_next(
        self, k: int = 1, category: str | None = None, explanation: str | None = None
    ) -> None:
        """Answer the next `k` requests with ``stop_reason: "refusal"`` and empty content, as
        the streaming classifiers do, with ``stop_details`` saying why."""
        details = {"type": "refusal", "category": category, "explanation": explanation}
        for _ in range(k):
            self._replies.appendleft(CannedReply("", "refusal", None, details))

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
        self._storm_until = 0.0
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
        minimum = self.min_cache_tokens
        if minimum is None:
            minimum = min_cache_tokens_for(str(body.get("model", "")))
        marks = [i for i, b in enumerate(blocks) if b.breakpoint and cumulative[i] >= minimum]
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

        if self.clock() < self._storm_until:
            error_type = ERROR_TYPES.get(self._storm_status, "api_error")
            return self._error(self._storm_status, error_type, ERROR_MESSAGES[error_type])

        reply = self._next_reply(body)
        usage = self.account(body)
        text, stop_reason = reply.text, reply.stop_reason
        budget = body["max_tokens"]
        effort = thinking_effort(body) if stop_reason != "refusal" else None
        thinking = min(self.thinking_tokens.get(effort, 0), budget) if effort else 0
        limit = (budget - thinking) * 4
        if self._truncations:
            self._truncations -= 1
            limit = min(limit, len(text) // 2)
        if len(text) > limit:
            text, stop_reason = text[:limit], "max_tokens"
        served = reply.model or self.served_model(body["model"])
        mid_error = self._mid_stream_errors.popleft() if self._mid_stream_errors else None
        out = _Output(text, thinking, stop_reason, reply.stop_details)

        if not body.get("stream"):
            if mid_error is not None:
                status = STATUS_OF_TYPE.get(mid_error, 500)
                return self._error(status, mid_error, ERROR_MESSAGES.get(mid_error, mid_error))
            return web.json_response(
                self._message(served, out, usage), headers={"request-id": self._request_id()}
            )
        return await self._stream(request, served, out, usage, mid_error)

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
        responder = self.responder or self.filler
        return CannedReply(responder(body))

    @staticmethod
    def _usage(usage: CacheUsage, out: _Output | None) -> JSON:
        return {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": out.output_tokens if out else 1,
            "output_tokens_details": {"thinking_tokens": out.thinking if out else 0},
            "service_tier": "standard",
        }

    def _message(self, model: str, out: _Output | None, usage: CacheUsage) -> JSON:
        """A message object; with `out` None, the empty one a stream's message_start carries."""
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": out.content() if out else [],
            "stop_reason": out.stop_reason if out else None,
            "stop_details": out.stop_details if out else None,
            "stop_sequence": None,
            "usage": self._usage(usage, out),
        }

    async def _stream(
        self,
        request: web.Request,
        model: str,
        out: _Output,
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

        async def fail(error_type: str) -> web.StreamResponse:
            message = ERROR_MESSAGES.get(error_type, error_type)
            await send(
                "error", {"type": "error", "error": {"type": error_type, "message": message}}
            )
            await response.write_eof()
            return response

        text = out.text
        step = self.chunk_chars
        # Always at least two deltas for a text of two or more characters, as real streams
        # rarely deliver a reply in one piece and clients must cope with several.
        if 1 < len(text) <= step:
            step = (len(text) + 1) // 2
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        try:
            await send(
                "message_start",
                {"type": "message_start", "message": self._message(model, None, usage)},
            )
            index = 0
            if out.thinking:
                # Thinking first, its text omitted (the default display on the 5.5 models):
                # an empty thinking block with a signature, as the API streams it.
                block = {"type": "thinking", "thinking": "", "signature": ""}
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
                delta = {"type": "signature_delta", "signature": out.signature}
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
                await send("content_block_stop", {"type": "content_block_stop", "index": 0})
                index = 1
            if text:
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            await send("ping", {"type": "ping"})
            for n, chunk in enumerate(chunks):
                if mid_error is not None and n >= max(len(chunks) // 2, 1):
                    return await fail(mid_error)
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": chunk},
                    },
                )
            if mid_error is not None:  # too short to break in the middle: break at the end
                return await fail(mid_error)
            if text:
                await send("content_block_stop", {"type": "content_block_stop", "index": index})
            final = self._usage(usage, out)
            del final["cache_creation"], final["service_tier"]
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": out.stop_reason,
                        "stop_sequence": None,
                        "stop_details": out.stop_details,
                    },
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
            self.responder = None if body["mode"] == "schema" else RESPONDERS[body["mode"]]
        if "text_chars" in body:
            self.filler.text_chars = int(body["text_chars"])
        if "storm" in body:
            storm = body["storm"]
            self.storm(float(storm["seconds"]), int(storm.get("status", 529)))
        if "refuse" in body:
            refuse = body["refuse"]
            self.refuse_next(
                int(refuse.get("k", 1)), refuse.get("category"), refuse.get("explanation")
            )
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
    fake.responder = None if args.mode == "schema" else RESPONDERS[args.mode]
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
    parser.add_argument(
        "--min-cache-tokens",
        type=int,
        default=None,
        help="cache only prefixes this long (default: each model's real minimum)",
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
