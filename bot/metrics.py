"""Prometheus metrics: what an operator watches, and the hooks the code calls to move them.

Every process serves its own `/metrics`: `serve` on its HTTP port beside
`/healthz`, each `worker` (and `dev`) on `METRICS_PORT`. Prometheus scrapes each
process and sums them (`sum by (…)` in the dashboard), which is the library's
ordinary model for separate processes; its multiprocess mode is for pre-fork
servers whose workers share one port, which this app does not have. The queue's
gauges (depth, pending, dead-lettered) are read from Redis at each scrape, so any
process reports the whole queue: take `max`, not `sum`, of them.

Nothing else imports prometheus_client: the dialogue, Slack and state code call
the hooks below (one line at each call site), and the renderers report through
`render_finished`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from redis.exceptions import RedisError

from bot.llm.prices import estimate_cost

if TYPE_CHECKING:
    from bot.dialogue.models import Session, SessionStatus
    from bot.llm.usage import Usage

log = logging.getLogger("sora.metrics")

METRICS_PATH = "/metrics"
REGISTRY = CollectorRegistry()
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

# Turns take seconds to minutes (a streamed reply, outage waits of up to two minutes).
_TURN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Waits for Slack: from nothing to a long 429.
_WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_RENDER_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200)

SESSIONS_STARTED = Counter(
    "sora_sessions_started",
    "Sessions started (thread root posted, turn 0 queued).",
    ["surface"],
    registry=REGISTRY,
)
SESSIONS_LOCKED = Counter(
    "sora_sessions_locked",
    "Sessions locked, by why (approved, human, round_limit, no_progress).",
    ["reason"],
    registry=REGISTRY,
)
SESSIONS_STOPPED = Counter(
    "sora_sessions_stopped", "Sessions stopped by a person.", registry=REGISTRY
)
SESSIONS_PAUSED = Counter(
    "sora_sessions_paused",
    "Sessions paused for a person to Retry, by why (api, invalid, truncated, refused, "
    "dead_letter).",
    ["reason"],
    registry=REGISTRY,
)
TURNS = Counter(
    "sora_turns",
    "Agent turns taken, by speaker and outcome (ok, or why it failed).",
    ["speaker", "outcome"],
    registry=REGISTRY,
)
TURN_SECONDS = Histogram(
    "sora_turn_seconds",
    "Wall time of an agent turn: model calls, repairs, waits, engine.",
    ["speaker"],
    buckets=_TURN_BUCKETS,
    registry=REGISTRY,
)
MODEL_SECONDS = Histogram(
    "sora_model_seconds",
    "Time a turn spent in model calls.",
    ["model"],
    buckets=_TURN_BUCKETS,
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "sora_model_tokens",
    "Model tokens, by model and kind (input, output, cache_read, cache_write).",
    ["model", "kind"],
    registry=REGISTRY,
)
MODEL_COST = Counter(
    "sora_model_cost_usd",
    "Estimated model cost in US dollars (bot/llm/prices.py).",
    ["model"],
    registry=REGISTRY,
)
SLACK_CALLS = Counter(
    "sora_slack_calls",
    "Slack Web API calls, by method and result (ok, Slack's error code, ratelimited, or the "
    "connection error's type).",
    ["method", "result"],
    registry=REGISTRY,
)
SLACK_RATE_LIMIT_WAITS = Histogram(
    "sora_slack_rate_limit_wait_seconds",
    "Waits for a 429's Retry-After.",
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
UPDATE_BUDGET_WAITS = Histogram(
    "sora_update_budget_wait_seconds",
    "Waits of must-land chat.update calls for the workspace's shared budget (0: none).",
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "sora_queue_jobs",
    "Turn jobs in the queue not yet acknowledged (read at scrape).",
    registry=REGISTRY,
)
QUEUE_PENDING = Gauge(
    "sora_queue_pending_jobs",
    "Turn jobs taken by a worker and not yet acknowledged.",
    registry=REGISTRY,
)
QUEUE_DEAD = Gauge(
    "sora_queue_dead_lettered_jobs",
    "Jobs in the dead-letter stream (failed too often).",
    registry=REGISTRY,
)
LEASES_RECLAIMED = Counter(
    "sora_leases_reclaimed",
    "Jobs taken over from a worker that stopped heartbeating.",
    registry=REGISTRY,
)
JOBS_DEAD_LETTERED = Counter(
    "sora_jobs_dead_lettered",
    "Jobs set aside after failing too often (their session paused).",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "sora_redis_errors",
    "Redis commands that failed, by where.",
    ["where"],
    registry=REGISTRY,
)
RENDERS = Counter(
    "sora_renders",
    "Video renders, by renderer and outcome.",
    ["renderer", "outcome"],
    registry=REGISTRY,
)
RENDER_SECONDS = Histogram(
    "sora_render_seconds",
    "Wall time of a render, submit to clip.",
    ["renderer"],
    buckets=_RENDER_BUCKETS,
    registry=REGISTRY,
)
RENDER_COST = Counter(
    "sora_render_cost_usd",
    "Estimated render cost in US dollars.",
    ["renderer"],
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "sora_audit_events",
    "Entries written to the audit trail, by action.",
    ["action"],
    registry=REGISTRY,
)


# ---- hooks ------------------------------------------------------------------------------


def session_started(surface: str) -> None:
    SESSIONS_STARTED.labels(surface).inc()


def session_changed(before: SessionStatus, session: Session) -> None:
    """A saved session whose status moved from `before`: count a lock or a stop."""
    from bot.dialogue.models import SessionStatus

    if session.status == before:
        return
    if session.status == SessionStatus.LOCKED and session.locked is not None:
        SESSIONS_LOCKED.labels(session.locked.reason.value).inc()
    elif session.status == SessionStatus.STOPPED:
        SESSIONS_STOPPED.inc()


def session_paused(reason: str) -> None:
    SESSIONS_PAUSED.labels(reason).inc()


def turn_taken(
    speaker: str,
    outcome: str,
    *,
    seconds: float,
    model: str | None = None,
    model_seconds: float = 0.0,
    usage: Usage | None = None,
) -> None:
    """One agent turn, taken (`outcome` "ok", with its model, time and usage) or failed
    (`outcome` the failure's kind; the session is paused)."""
    TURNS.labels(speaker, outcome).inc()
    TURN_SECONDS.labels(speaker).observe(seconds)
    if outcome != "ok":
        session_paused(outcome)
    if model is None or usage is None:
        return
    MODEL_SECONDS.labels(model).observe(model_seconds)
    for kind, n in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ):
        if n:
            MODEL_TOKENS.labels(model, kind).inc(n)
    cost = estimate_cost(model, usage)
    if cost:
        MODEL_COST.labels(model).inc(cost)


def slack_call(method: str, result: str) -> None:
    SLACK_CALLS.labels(method, result).inc()


def slack_rate_limit_wait(seconds: float) -> None:
    SLACK_RATE_LIMIT_WAITS.observe(seconds)


def update_budget_wait(seconds: float) -> None:
    UPDATE_BUDGET_WAITS.observe(seconds)


def leases_reclaimed(n: int) -> None:
    if n:
        LEASES_RECLAIMED.inc(n)


def jobs_dead_lettered(n: int) -> None:
    if n:
        JOBS_DEAD_LETTERED.inc(n)
        SESSIONS_PAUSED.labels("dead_letter").inc(n)


def redis_error(where: str) -> None:
    REDIS_ERRORS.labels(where).inc()


def redis_error_if(error: BaseException, where: str) -> None:
    """Count `error` if Redis raised it (a worker's step can fail in Slack or the model too)."""
    if isinstance(error, RedisError):
        redis_error(where)


def render_finished(
    renderer: str, outcome: str, *, seconds: float, cost_usd: float | None = None
) -> None:
    """For the renderers: one render ended (`outcome`: succeeded, failed, refused, …)."""
    RENDERS.labels(renderer, outcome).inc()
    RENDER_SECONDS.labels(renderer).observe(seconds)
    if cost_usd:
        RENDER_COST.labels(renderer).inc(cost_usd)


def audited(action: str) -> None:
    AUDIT_EVENTS.labels(action).inc()


# ---- serving ----------------------------------------------------------------------------

Refresh = Callable[[], Awaitable[None]]


def queue_refresher(queue: Any) -> Refresh:
    """Reads the queue's numbers into their gauges (called at each scrape)."""

    async def refresh() -> None:
        stats = await queue.stats()
        QUEUE_DEPTH.set(stats.backlog)
        QUEUE_PENDING.set(stats.pending)
        QUEUE_DEAD.set(stats.dead)

    return refresh


def handler(refresh: Refresh | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler of GET /metrics."""

    async def metrics(request: web.Request) -> web.Response:
        if refresh is not None:
            try:
                await refresh()
            except Exception as e:  # the other families still answer
                redis_error("metrics")
                log.warning("metrics: could not read the queue: %r", e)
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


async def start_server(port: int, refresh: Refresh | None = None) -> web.AppRunner:
    """Serve GET /metrics on `port` (all interfaces, as Prometheus scrapes from outside).
    Clean up the returned runner when the process stops."""
    app = web.Application()
    app.router.add_get(METRICS_PATH, handler(refresh))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
