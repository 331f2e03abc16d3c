"""The Slack Web API client every process uses, with the retries Slack asks for.

`SLACK_API_URL` points it at Slack, a proxy, or the tests' fake server. It
keeps one aiohttp session, so calls reuse their connections: without one,
slack_sdk opens a new session and TCP connection for every API call. A 429
is retried after its full `Retry-After` (slack_sdk's own handler reads only
the header's first digit, so "30" would wait 3 s); 500/503 are retried with
backoff. A dropped connection is retried only for methods that are safe to
repeat: a post whose answer was lost may have been carried out, so it is
never re-sent blindly (the Slack surface looks for its tag first).

The worker's client (`rate_limit_retries=0`) leaves 429s to the Slack
surface, which waits out any length and teaches the shared limiter; slack_sdk's
request loop gives up after 100 attempts whatever its handlers say, so a long
storm cannot be left to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.config import Settings

# The Web API client, named for code outside bot.slack (which imports no slack_sdk).
SlackClient: TypeAlias = AsyncWebClient

RATE_LIMIT_RETRIES = 5
SERVER_ERROR_RETRIES = 3
MAX_RETRY_AFTER_S = 60.0
HTTP_TIMEOUT_S = 30.0

Sleep = Callable[[float], Awaitable[None]]


# Methods whose repetition would repeat their effect (a second message, a second share).
NOT_REPEATABLE = frozenset(
    {"chat.postMessage", "chat.startStream", "chat.postEphemeral", "files.completeUploadExternal"}
)


def api_method(request: HttpRequest) -> str:
    return request.url.rstrip("/").rpartition("/")[2].partition("?")[0]


class RepeatableConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's connection-error retry, except for methods not safe to repeat."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if api_method(request) in NOT_REPEATABLE:
            return False
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


class RetryAfterHandler(AsyncRetryHandler):
    """Retries a 429 after the number of seconds its `Retry-After` header says."""

    def __init__(self, max_retry_count: int = RATE_LIMIT_RETRIES, sleep: Sleep = asyncio.sleep):
        super().__init__(max_retry_count=max_retry_count)
        self.sleep = sleep

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        wait = retry_after_seconds(response)
        metrics.slack_rate_limit_wait(wait)
        await self.sleep(wait + random.uniform(0, 0.25))
        state.increment_current_attempt()


def retry_after_seconds(response: HttpResponse | None) -> float:
    """A 429's Retry-After, capped at MAX_RETRY_AFTER_S (for the client's own retries)."""
    if response is None:
        return 1.0
    return min(retry_after_seconds_of(response.headers), MAX_RETRY_AFTER_S)


def retry_after_seconds_of(headers: Mapping[str, Any] | None) -> float:
    """The seconds a 429's `Retry-After` header asks for, however long (1 if absent)."""
    for name, values in (headers or {}).items():
        if str(name).lower() == "retry-after":
            raw = values[0] if isinstance(values, list) and values else values
            try:
                return max(float(str(raw).strip()), 0.0)
            except ValueError:
                return 1.0
    return 1.0


SDK_LOGGER = "slack_sdk.web.async_client"


def sdk_logger() -> logging.Logger:
    """slack_sdk's logger, with an explicit level: the effective one when first asked.

    slack_sdk decides whether to build its debug lines with `logger.level <= DEBUG`,
    not `isEnabledFor`, so a logger left at NOTSET (0) formats every request's
    params and every response's headers and body on every call, only for the
    lines to be dropped: a fifth of the CPU of posting a message. Configure
    logging before the first client is made, as the CLI does.
    """
    log = logging.getLogger(SDK_LOGGER)
    if log.level == logging.NOTSET:
        log.setLevel(log.getEffectiveLevel())
    return log


UPLOAD = "file_upload"  # the bytes of a file, POSTed to the URL files.getUploadURLExternal gave


def api_method_of(url: object) -> str:
    """The Web API method a request URL calls (`…/api/chat.postMessage`), or UPLOAD."""
    path = str(url).partition("?")[0]
    _, sep, method = path.rpartition("/api/")
    return method.strip("/") if sep and method else UPLOAD


async def call_result(response: aiohttp.ClientResponse) -> str:
    """How one HTTP request to Slack ended: ok, ratelimited (429), Slack's error code
    (an `ok: false` answer), or http_<status>. Reads the body, which aiohttp keeps for
    slack_sdk to read again."""
    if response.status == 429:
        return "ratelimited"
    if response.status >= 400:
        return f"http_{response.status}"
    if response.content_type != "application/json":
        return "ok"
    try:
        data = await response.json()
    except (ValueError, aiohttp.ClientError):
        return "unreadable"
    if not isinstance(data, dict) or data.get("ok", True):
        return "ok"
    return str(data.get("error") or "error")


def metered() -> aiohttp.TraceConfig:
    """Counts every HTTP request the client's session makes to Slack, by method and result
    (`bot.metrics`). On the session, not the client: Bolt makes a client per request that
    shares the session, and each retry is a request of its own."""

    async def on_end(
        session: aiohttp.ClientSession, ctx: object, params: aiohttp.TraceRequestEndParams
    ) -> None:
        metrics.slack_call(api_method_of(params.url), await call_result(params.response))

    async def on_error(
        session: aiohttp.ClientSession, ctx: object, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        metrics.slack_call(api_method_of(params.url), type(params.exception).__name__)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_error)
    return trace


def make_client(
    settings: Settings,
    *,
    sleep: Sleep = asyncio.sleep,
    rate_limit_retries: int = RATE_LIMIT_RETRIES,
    token: str | None = None,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """The client; with a running event loop, one that reuses its connections.

    `rate_limit_retries=0` leaves every 429 to the caller (the worker's Slack
    surface does that). Close it with `close_client` when the process stops.
    `token` (a workspace's, in OAuth mode) replaces SLACK_BOT_TOKEN; `session`
    shares another client's connections (then close only that one).
    """
    if token is None and settings.slack_bot_token:
        token = settings.slack_bot_token.get_secret_value()
    if session is None:
        try:
            asyncio.get_running_loop()
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S), trace_configs=[metered()]
            )
        except RuntimeError:
            pass  # no loop yet: slack_sdk makes a session per call
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        session=session,
        logger=sdk_logger(),
        retry_handlers=[
            RepeatableConnectionErrorRetryHandler(max_retry_count=2),
            RetryAfterHandler(max_retry_count=rate_limit_retries, sleep=sleep),
            AsyncServerErrorRetryHandler(
                max_retry_count=SERVER_ERROR_RETRIES,
                interval_calculator=BackoffRetryIntervalCalculator(backoff_factor=0.2),
            ),
        ],
    )


async def app_token_refusal(client: AsyncWebClient, app_token: str) -> str | None:
    """Slack's error for an app-level token it refuses (None: Socket Mode may connect)."""
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as e:
        return str(e.response.get("error") or "unknown_error")
    return None


async def close_client(client: AsyncWebClient) -> None:
    if client.session is not None and not client.session.closed:
        await client.session.close()
