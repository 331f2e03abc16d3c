"""The Claude client: one streamed, structured, cache-friendly Messages API call per turn.

It turns a :class:`ModelRequest` into a ``messages.stream`` call on ``anthropic.AsyncAnthropic``
and the result into a :class:`ModelReply`:

* every call streams, and each text delta goes to ``on_text`` as it arrives;
* the reply must follow ``request.schema``, sent as ``output_config.format`` (a
  ``json_schema`` format: structured outputs);
* prompt caching: the system prompt is a text block with a cache breakpoint, and the last
  block of the last user message carries the second one. An agent's next request is its
  previous one plus new turns, so everything up to the old breakpoint is read from the cache
  and only the new turns are written. Nothing time-dependent goes into a request;
* thinking and effort are set on purpose (``thinking_param``, ``effort_for``): thinking tokens
  count toward ``max_tokens``, and the 5.x models think by default at their default effort;
* the reply records the model the response names (a dated id), not the configured alias, the
  thinking tokens the usage reports, and a refusal's explanation;
* the SDK retries 429/529/5xx and connection failures (``max_retries``); whatever survives,
  and an ``error`` event in the middle of a stream, becomes a :class:`ModelError`. No SDK
  exception leaves this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import anthropic
import httpx2
from anthropic.types import (
    AssistantMessageParam,
    CacheControlEphemeralParam,
    MessageParam,
    OutputConfigParam,
    TextBlockParam,
    ThinkingConfigParam,
    UserMessageParam,
)

from bot.config import Settings
from bot.llm.base import Message, ModelError, ModelReply, ModelRequest, TextCallback
from bot.llm.usage import Usage

log = logging.getLogger(__name__)

# An `error` event inside a 200 stream has no HTTP status of its own; these are the statuses
# the API gives the same error types when it can still answer with one.
STATUS_BY_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_WHAT_WENT_WRONG: dict[int, str] = {
    400: "rejected the request",
    401: "rejected the API key",
    402: "refused the request for billing reasons",
    403: "denied permission",
    404: "does not know the model or endpoint",
    408: "timed out",
    413: "found the request too large",
    429: "rate limit reached",
    500: "internal error",
    502: "bad gateway",
    503: "unavailable",
    504: "timed out",
    529: "overloaded",
}


Effort = Literal["low", "medium", "high", "xhigh", "max"]
ThinkingMode = Literal["off", "adaptive"]

# What each model accepts for `thinking`, from Anthropic's model pages (read 2026-11-25):
# - thinking is always on (`disabled` and `enabled` are a 400; omit it or send `adaptive`):
#   Opus 5.5 and Fable 5.1 (platform.claude.com/docs/en/models/opus-5-5/whats-new-opus-5-5),
#   Fable 5 / Mythos 5 / Mythos preview ("only support adaptive thinking", Bedrock's adaptive
#   thinking page), and Fable 5.2 (always on, effort defaults to high);
# - Sonnet 5.5 refuses `disabled` with a 400 and takes `between_tools` as its lowest setting,
#   which without tools answers with text only, as `disabled` did; it is a 400 at effort xhigh
#   or max (platform.claude.com/docs/en/models/sonnet-5-5/whats-new-sonnet-5-5);
# - Opus 5 and Haiku 5.5 accept `disabled` only at effort high or below;
# - Sonnet 4.5, Opus 4.5 and Haiku 4.5 have no adaptive thinking (extended thinking, off unless
#   enabled), and Sonnet 4.5 and Haiku 4.5 take no effort parameter.
ALWAYS_THINKING = ("claude-opus-5-5", "claude-fable-5", "claude-mythos-5", "claude-mythos-preview")
BETWEEN_TOOLS_IS_OFF = ("claude-sonnet-5-5",)
DISABLED_UP_TO_HIGH = ("claude-opus-5", "claude-haiku-5-5")
NO_ADAPTIVE = ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5")
NO_EFFORT = ("claude-sonnet-4-5", "claude-haiku-4-5")
_ABOVE_HIGH = ("xhigh", "max")


def _in_family(model: str, families: Sequence[str]) -> bool:
    """`model` is one of `families` or a dated/numbered id of one ("claude-fable-5-1")."""
    return any(model == f or model.startswith(f + "-") for f in families)


def _is(model: str, families: Sequence[str]) -> bool:
    # "claude-opus-5" must not claim "claude-opus-5-5": an exact id or a dated one (8 digits).
    return any(
        model == f or (model.startswith(f + "-") and model[len(f) + 1 :].isdigit())
        for f in families
    )


def thinking_param(
    model: str, mode: ThinkingMode, effort: Effort | None
) -> ThinkingConfigParam | None:
    """The `thinking` value for `model`, or None to leave the field out."""
    if _is(model, NO_ADAPTIVE):
        return None  # thinking is off unless enabled with a budget
    if mode == "adaptive":
        return {"type": "adaptive"}
    if _in_family(model, ALWAYS_THINKING):
        return None  # cannot be turned off: a low effort keeps it short
    above_high = effort in _ABOVE_HIGH
    if _is(model, BETWEEN_TOOLS_IS_OFF):
        return None if above_high else {"type": "between_tools"}
    if _is(model, DISABLED_UP_TO_HIGH) and above_high:
        return None
    return {"type": "disabled"}


def effort_for(model: str, effort: Effort | None) -> Effort | None:
    """The `output_config.effort` to send, or None where the model takes none."""
    if effort is None or _is(model, NO_EFFORT):
        return None
    return effort


def is_retryable_status(status: int) -> bool:
    """Whether the same request may succeed later (the SDK's own retry policy)."""
    return status in (408, 409, 429) or status >= 500


class AnthropicModel:
    """A :class:`~bot.llm.base.ChatModel` backed by the Anthropic Messages API."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        http_client: httpx2.AsyncClient | None = None,
        effort: Effort | None = "low",
        thinking: ThinkingMode = "off",
    ) -> None:
        self.model = model
        self.max_retries = max_retries
        self.effort = effort_for(model, effort)
        self.thinking = thinking_param(model, thinking, effort)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            http_client=http_client,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicModel:
        if settings.anthropic_api_key is None:
            raise ValueError("ANTHROPIC_API_KEY is not set; the Anthropic model needs it.")
        return cls(
            api_key=settings.anthropic_api_key.get_secret_value(),
            model=settings.anthropic_model,
            base_url=settings.anthropic_base_url,
            max_retries=settings.anthropic_max_retries,
            timeout=settings.anthropic_timeout_seconds,
            effort=None if settings.anthropic_effort == "default" else settings.anthropic_effort,
            thinking=settings.anthropic_thinking,
        )

    @property
    def offline(self) -> bool:
        return False

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened."""
        await self._client.close()

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        output_config: OutputConfigParam = {
            "format": {"type": "json_schema", "schema": request.schema}
        }
        if self.effort is not None:
            output_config["effort"] = self.effort
        system = system_blocks(request.system)
        # Set when `on_text` itself fails, so its exception is re-raised as it is and not
        # mistaken for a failure of the API (a sink may use httpx2 too).
        sink_error: BaseException | None = None
        stopped = False
        try:
            async with self._client.messages.stream(
                model=self.model,
                max_tokens=request.max_tokens,
                messages=message_params(request.messages),
                output_config=output_config,
                system=system if system else anthropic.omit,
                thinking=self.thinking if self.thinking is not None else anthropic.omit,
            ) as stream:
                async for event in stream:
                    if event.type == "text":
                        if on_text is not None:
                            try:
                                await on_text(event.text)
                            except BaseException as e:
                                sink_error = e
                                raise
                    elif event.type == "message_stop":
                        stopped = True
                message = await stream.get_final_message()
        except (anthropic.AnthropicError, httpx2.HTTPError) as err:
            if err is sink_error:
                raise
            failure = to_model_error(err)
            log.warning("Claude call failed: %s", failure)
            raise failure from err
        if not stopped:
            # The body ended cleanly but early (a proxy cut it, say): the text may be half a
            # JSON document, and the usage is incomplete.
            raise ModelError("The Anthropic stream ended before message_stop.", retryable=True)

        text = "".join(block.text for block in message.content if block.type == "text")
        u = message.usage
        usage = Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
            thinking_tokens=u.output_tokens_details.thinking_tokens
            if u.output_tokens_details is not None
            else 0,
        )
        refusal = None
        if message.stop_reason == "refusal":
            details = message.stop_details
            refusal = (details.explanation or details.category) if details else None
        return ModelReply(
            text=text,
            stop_reason=message.stop_reason,
            usage=usage,
            model=message.model,
            refusal=refusal,
        )


# ---- request building --------------------------------------------------------------------


def _ephemeral() -> CacheControlEphemeralParam:
    # The default 5-minute TTL: turns follow each other within seconds, and a 5-minute write
    # costs less than a 1-hour one.
    return {"type": "ephemeral"}


def system_blocks(system: str) -> list[TextBlockParam]:
    """The system prompt as one cached text block (none when empty: the API rejects those)."""
    if not system:
        return []
    return [{"type": "text", "text": system, "cache_control": _ephemeral()}]


def message_params(messages: Sequence[Message]) -> list[MessageParam]:
    """Messages as content-block lists, with one cache breakpoint on the last user message.

    One breakpoint is enough for the whole conversation: the API looks back from it for the
    longest prefix it has cached, which is the previous request's last user message.
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    params: list[MessageParam] = []
    for i, m in enumerate(messages):
        block: TextBlockParam = {"type": "text", "text": m.content}
        if i == last_user:
            block["cache_control"] = _ephemeral()
        if m.role == "user":
            params.append(UserMessageParam(role="user", content=[block]))
        else:
            params.append(AssistantMessageParam(role="assistant", content=[block]))
    return params


# ---- errors --------------------------------------------------------------------------------


def _retries_taken(err: anthropic.APIError) -> int | None:
    # The SDK stamps each attempt with the number of retries before it, so the failing
    # attempt's header says how many retries were spent.
    try:
        value = err.request.headers.get("x-stainless-retry-count")
        return int(value) if value is not None else None
    except (AttributeError, RuntimeError, ValueError):
        return None


def _after(retries: int | None) -> str:
    if not retries:
        return ""
    return f" after {retries} {'retry' if retries == 1 else 'retries'}"


def to_model_error(err: BaseException) -> ModelError:
    """A clear ModelError for an SDK or transport failure."""
    if isinstance(err, anthropic.APIStatusError):
        status = err.status_code
        where = ""
        if status < 400:
            # An `error` event inside a stream that began with 200 OK.
            status = STATUS_BY_ERROR_TYPE.get(err.type or "", 500)
            where = " mid-stream"
        what = _WHAT_WENT_WRONG.get(status, "failed")
        detail = err.api_message or (err.type or "")
        retryable = is_retryable_status(status)
        message = f"Anthropic API {what} ({status}){where}"
        if not where and retryable:
            message += _after(_retries_taken(err))
        if detail:
            message += f": {detail}"
        if err.request_id:
            message += f" (request id {err.request_id})"
        return ModelError(message, status=status, retryable=retryable)
    if isinstance(err, anthropic.APITimeoutError):
        return ModelError(
            f"The Anthropic API timed out{_after(_retries_taken(err))}.", retryable=True
        )
    if isinstance(err, anthropic.APIConnectionError):
        return ModelError(
            f"Could not reach the Anthropic API{_after(_retries_taken(err))}: {err.message}",
            retryable=True,
        )
    if isinstance(err, anthropic.APIError):
        return ModelError(f"Anthropic API error: {err.message}", retryable=True)
    if isinstance(err, httpx2.HTTPError):
        return ModelError(
            f"The connection to the Anthropic API broke mid-stream: {type(err).__name__}: {err}",
            retryable=True,
        )
    # Other SDK errors are about configuration (credentials, arguments): retrying won't help.
    return ModelError(f"Anthropic client error: {err}", retryable=False)
