"""What an operator sees: /metrics on every process, and the audit trail of who did what.

The end-to-end test runs `serve` and a `worker` as real processes against the fake Slack
and the fake Anthropic, scrapes both /metrics endpoints (parsed with prometheus_client's
own parser) and checks that every counter moved by exactly what the session did, read
back from the fakes and the stored session; then that the audit trail holds the
session's actions in order, with the right people.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.cli import audit_line, parse_since
from bot.dialogue.models import SessionStatus
from bot.llm.prices import estimate_cost
from bot.llm.usage import Usage
from bot.sessions import BadInput
from bot.slack.blocks import ACTION_STOP
from bot.slack.client import UPLOAD
from state import State
from tests import test_handlers
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import TEAM_ID, UPLOAD_METHOD, FakeSlack
from tests.redis_fixtures import REDIS_TEST_URL
from tests.slack_signing import FORM, JSON_TYPE, command_body, event_body, thread_reply_event
from tests.support import app_processes, run_cli, wait_until
from tests.test_e2e_slack import (
    CHANNEL,
    INTERJECTION,
    PROMPTS,
    SECRET,
    STARTER,
    TEAMMATE,
    app_env,
    free_port,
    post_signed,
    seed_workspace,
)

TEAM = "T0FAKE"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return parse(await r.text())


@pytest.fixture
async def app(
    real_state: State, prefix: str
) -> AsyncIterator[tuple[FakeSlack, FakeAnthropic, str, str]]:
    """serve and a worker with METRICS_PORT; yields the fakes and both /metrics URLs."""
    async with FakeSlack() as slack, FakeAnthropic(chunk_delay=0.0) as claude:
        seed_workspace(slack, claude, channel=CHANNEL, prompts=PROMPTS)
        web_port, worker_port = free_port(), free_port()
        env = app_env(
            slack,
            claude,
            prompts=PROMPTS,
            REDIS_URL=REDIS_TEST_URL,
            REDIS_PREFIX=prefix,
            SLACK_SIGNING_SECRET=SECRET,
            PORT=str(web_port),
            METRICS_PORT=str(worker_port),
        )
        url = f"http://127.0.0.1:{web_port}"
        worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
        async with app_processes([("serve",), ("worker",)], env=env, url=url):
            async with aiohttp.ClientSession() as http:

                async def up() -> bool:
                    try:
                        async with http.get(worker_metrics) as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_until(up, "the worker's /metrics", within=30)
            yield slack, claude, url, worker_metrics


async def test_metrics_and_audit_after_a_session_through_slack(
    app: tuple[FakeSlack, FakeAnthropic, str, str], real_state: State
) -> None:
    slack, claude, url, worker_metrics = app
    async with aiohttp.ClientSession() as http:
        web_before = await scrape(http, f"{url}/metrics")
        worker_before = await scrape(http, worker_metrics)
        calls_before = len(slack.calls)
        started = datetime.now(UTC) - timedelta(seconds=1)
        assert (
            await post_signed(
                http,
                url,
                command_body(
                    token="unused",
                    team_id=TEAM,
                    team_domain="fake",
                    channel_id=CHANNEL,
                    channel_name="video",
                    user_id=STARTER,
                    user_name="ana",
                    command="/sora",
                    text="A lighthouse keeper finds a message in a bottle persona: director "
                    "rounds: 3",
                    response_url=f"{slack.base_url}/_fake/response",
                    trigger_id="1.2.3",
                    api_app_id="A0FAKE",
                ),
                FORM,
            )
            == 200
        )

        def root() -> dict[str, Any] | None:
            tops = [m for m in slack.messages(CHANNEL) if m.get("thread_ts") in (None, m["ts"])]
            return tops[0] if tops else None

        root_ts = (await wait_until(root, "the thread root"))["ts"]
        await wait_until(lambda: len(claude.requests) >= 1, "the opening")
        human_ts = slack.seed_message(CHANNEL, INTERJECTION, user=TEAMMATE, thread_ts=root_ts)
        event = thread_reply_event(
            channel=CHANNEL,
            user=TEAMMATE,
            text=INTERJECTION,
            ts=human_ts,
            thread_ts=root_ts,
            event_id="Ev0METRICS",
        )
        assert await post_signed(http, url, event_body(event), JSON_TYPE) == 200
        sid = await wait_until(
            lambda: real_state.threads.lookup(TEAM_ID, CHANNEL, root_ts), "the index"
        )

        async def locked_and_shown() -> bool:
            s = await real_state.sessions.load(sid)
            root_now = json.dumps(slack.message(CHANNEL, root_ts))
            return bool(
                s
                and s.status == SessionStatus.LOCKED
                and slack.pins(CHANNEL)
                and slack.messages(PROMPTS)
                and "Locked" in root_now
            )

        await wait_until(locked_and_shown, "the lock and its steps", within=60)
        session = await real_state.sessions.load(sid)
        assert session is not None

        # Every Slack call the fake saw was counted once, by the process that made it.
        mismatch: dict[str, tuple[float, int]] = {}

        async def counted_all() -> bool:
            web_now = await scrape(http, f"{url}/metrics")
            worker_now = await scrape(http, worker_metrics)
            seen = [
                dataclasses.replace(c, method=UPLOAD if c.method == UPLOAD_METHOD else c.method)
                for c in slack.calls[calls_before:]
            ]
            for method in {c.method for c in seen}:
                counted = sum(
                    total(now, "sora_slack_calls_total", method=method)
                    - total(before, "sora_slack_calls_total", method=method)
                    for now, before in ((web_now, web_before), (worker_now, worker_before))
                )
                n = sum(1 for c in seen if c.method == method)
                if counted != n:
                    mismatch.clear()
                    mismatch[method] = (counted, n)
                    return False
            return True

        try:
            await wait_until(counted_all, "every Slack call counted", within=20)
        except AssertionError:
            raise AssertionError(f"Slack calls (counted, seen): {mismatch}") from None
        web = await scrape(http, f"{url}/metrics")
        worker = await scrape(http, worker_metrics)

    def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # Sessions: started by the web process, locked by the worker.
    assert moved(web, web_before, "sora_sessions_started_total", surface="slack") == 1
    assert moved(worker, worker_before, "sora_sessions_locked_total", reason="approved") == 1
    assert moved(worker, worker_before, "sora_sessions_locked_total") == 1
    assert moved(worker, worker_before, "sora_sessions_stopped_total") == 0
    assert moved(worker, worker_before, "sora_sessions_paused_total") == 0

    # Turns by speaker, all ok; durations observed once per turn.
    agent_turns = session.agent_turns
    for speaker in ("copilot", "persona"):
        n = sum(1 for t in agent_turns if t.speaker.value == speaker)
        assert n >= 1
        assert moved(worker, worker_before, "sora_turns_total", speaker=speaker, outcome="ok") == n
        assert moved(worker, worker_before, "sora_turn_seconds_count", speaker=speaker) == n
    assert moved(worker, worker_before, "sora_turns_total") == len(agent_turns)

    # Tokens and cost: exactly the stored session's usage, by model and kind.
    models = {t.model for t in agent_turns}
    assert len(models) == 1
    [model] = models
    assert model is not None
    usage = session.usage
    for kind, n in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ):
        assert moved(worker, worker_before, "sora_model_tokens_total", model=model, kind=kind) == n
    assert usage.output_tokens > 0
    cost = sum(estimate_cost(model, t.usage) or 0.0 for t in agent_turns)
    assert moved(worker, worker_before, "sora_model_cost_usd_total", model=model) == pytest.approx(
        cost
    )
    assert moved(worker, worker_before, "sora_model_seconds_count", model=model) == len(agent_turns)

    # No 429 and no Redis error in a quiet run; the must-land updates waited on the budget.
    assert moved(worker, worker_before, "sora_slack_rate_limit_wait_seconds_count") == 0
    assert moved(worker, worker_before, "sora_redis_errors_total") == 0
    assert moved(worker, worker_before, "sora_update_budget_wait_seconds_count") >= 1
    # The queue, read at the scrape: nothing left.
    assert (
        total(web, "sora_queue_jobs") == 0 and total(worker, "sora_queue_dead_lettered_jobs") == 0
    )

    # The audit trail: the start, the interjection and the lock, in order, with who.
    entries = await real_state.audit.read(TEAM, since=started)
    assert [(e.action, e.actor, e.actor_name, e.session) for e in entries] == [
        ("start", STARTER, "ana", sid),
        ("interject", TEAMMATE, "Bo", sid),
        ("locked", "", session.persona.display_name, sid),
    ]
    assert session.locked is not None
    assert entries[-1].detail == f"v{session.locked.draft.version}, approved"
    assert INTERJECTION not in json.dumps([e.detail for e in entries])  # who, not what


# ---- the audit trail's API and command ----------------------------------------------------


async def test_the_trail_keeps_order_people_and_sessions_per_workspace(
    real_state: State,
) -> None:
    audit = real_state.audit
    await audit.record("T1", "start", session="s1", actor="U1", actor_name="Ana")
    await audit.record("T2", "start", session="s2", actor="U9", actor_name="Zed")
    await audit.record("T1", "stop", session="s1", actor="U2", actor_name="Bo")
    await audit.record("T1", "delete", session="s1", actor="U1", actor_name="Ana")
    got = await audit.read("T1")
    assert [(e.action, e.actor_name) for e in got] == [
        ("start", "Ana"),
        ("stop", "Bo"),
        ("delete", "Ana"),
    ]
    assert [e.team for e in got] == ["T1"] * 3
    assert await audit.teams() == ["T1", "T2"]
    assert await audit.read("T1", since=datetime.now(UTC) + timedelta(minutes=1)) == []
    with pytest.raises(ValueError):
        await audit.record("T1", "hack", session="s1")


async def test_the_trail_is_capped(real_state: State) -> None:
    from state.audit import AuditTrail

    capped = AuditTrail(real_state.redis, real_state.keys, maxlen=100)
    for i in range(400):
        await capped.record("T1", "interject", session=f"s{i}", actor="U1")
    n = await real_state.redis.xlen(real_state.keys.audit("T1"))
    assert 100 <= n < 400  # MAXLEN ~ trims whole macro nodes: about the cap, never all
    newest = (await capped.read("T1"))[-1]
    assert newest.session == "s399"


def test_since_takes_durations_and_dates() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now=now) == now - timedelta(hours=24)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("2026-12-01", now=now) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(BadInput, match="--since 'yesterday'"):
        parse_since("yesterday", now=now)


async def test_the_audit_command_prints_the_trail(
    real_state: State, prefix: str, tmp_path: Path
) -> None:
    await real_state.audit.record(
        "T7", "lock", session="s7", actor="U7", actor_name="Ana", detail="v2"
    )
    await real_state.audit.record("T8", "retry", session="s8", actor="U8", actor_name="Bo")
    env = {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": prefix}
    p = await asyncio.to_thread(run_cli, "audit", "--team", "T7", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr.decode()
    [line] = p.stdout.decode().splitlines()
    assert "  T7  lock  Ana (U7)  session s7  v2" in line
    p = await asyncio.to_thread(run_cli, "audit", "--since", "1h", "--json", cwd=tmp_path, env=env)
    rows = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [(r["team"], r["action"], r["actor_name"]) for r in rows] == [
        ("T7", "lock", "Ana"),
        ("T8", "retry", "Bo"),
    ]
    p = await asyncio.to_thread(run_cli, "audit", "--since", "soon", cwd=tmp_path, env=env)
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1
    p = await asyncio.to_thread(run_cli, "audit", cwd=tmp_path)
    assert p.returncode == 2 and "needs REDIS_URL" in p.stderr.decode()


def test_audit_line_names_people_and_sessions() -> None:
    from state.audit import AuditEntry

    e = AuditEntry(
        id="1764763200000-0",
        team="T1",
        action="stop",
        actor="U1",
        actor_name="Ana",
        session="abc",
        detail="",
    )
    assert audit_line(e) == "2025-12-03 12:00:00Z  T1  stop  Ana (U1)  session abc"


# ---- the metrics module ----------------------------------------------------------------


def test_a_failed_turn_counts_its_kind_and_pauses() -> None:
    from bot import metrics

    before = parse(metrics.generate_latest(metrics.REGISTRY).decode())
    metrics.turn_taken("copilot", "refused", seconds=1.5)
    metrics.jobs_dead_lettered(2)
    metrics.leases_reclaimed(3)
    metrics.render_finished("offline", "succeeded", seconds=4.0, cost_usd=0.0)
    metrics.redis_error_if(RedisConnectionError("gone"), "save")
    metrics.redis_error_if(ValueError("not Redis"), "save")
    after = parse(metrics.generate_latest(metrics.REGISTRY).decode())

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("sora_turns_total", speaker="copilot", outcome="refused") == 1
    assert moved("sora_sessions_paused_total", reason="refused") == 1
    assert moved("sora_sessions_paused_total", reason="dead_letter") == 2
    assert moved("sora_jobs_dead_lettered_total") == 2
    assert moved("sora_leases_reclaimed_total") == 3
    assert moved("sora_renders_total", renderer="offline", outcome="succeeded") == 1
    assert moved("sora_redis_errors_total", where="save") == 1
    assert moved("sora_model_tokens_total") == 0  # a failed turn has no usage here
    assert Usage().total == 0


# ---- every person's action, through signed Slack requests ------------------------------

handlers_slack = test_handlers.slack
make_harness = test_handlers.make_harness


@pytest.fixture(name="slack")
def _slack(handlers_slack: FakeSlack) -> FakeSlack:
    return handlers_slack


async def test_stop_and_delete_are_audited_with_who_did_them(
    make_harness: test_handlers.HarnessFactory,
) -> None:
    app = await make_harness()
    since = datetime.now(UTC) - timedelta(seconds=1)
    sid, root_ts = await app.start(user=test_handlers.ADA)
    await app.click(ACTION_STOP, sid, user=test_handlers.BOSS, root_ts=root_ts)
    await app.settle()
    await app.command(f"delete {sid}", user=test_handlers.ADA)
    await app.settle()
    entries = await app.state.audit.read(TEAM_ID, since=since)
    assert [(e.action, e.actor, e.session) for e in entries] == [
        ("start", test_handlers.ADA, sid),
        ("stop", test_handlers.BOSS, sid),
        ("delete", test_handlers.ADA, sid),
    ]
    assert [e.actor_name for e in entries][1:] == ["The Boss", "Ada"]
