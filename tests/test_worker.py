"""Workers on the real Redis: sessions survive races, crashes and restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import worker as worker_module
from bot.dialogue.engine import Engine
from bot.dialogue.models import LockReason, Session, SessionStatus, Speaker
from bot.llm.offline import OfflineModel
from bot.surfaces.recording import RecordingSurface, recorded
from bot.worker import Worker, WorkerConfig
from state import InboxEntry, State
from tests.redis_fixtures import REDIS_TEST_URL
from tests.support import make_session, run_cli, wait_until

# On the Redis Cluster too: a session run to its lock, two workers racing, and the crash
# test (worker processes SIGKILLed mid-turn, short leases).
ON_CLUSTER_TOO = {
    "test_a_worker_runs_a_session_to_its_locked_prompt",
    "test_two_workers_racing_for_one_session_never_both_advance_it",
    "test_a_worker_killed_mid_turn_loses_nothing_and_posts_nothing_twice",
}

FAST = WorkerConfig(
    concurrency=20,
    lease_ttl_ms=1000,
    reclaim_idle_ms=1500,
    reclaim_every_s=0.2,
    block_ms=50,
    drain_s=0.5,
)


@pytest.fixture
async def started(real_state: State) -> AsyncIterator[Callable[..., Worker]]:
    """Start workers on the real Redis; they are stopped when the test ends."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(*, model: Any = None, surface: Any = None, config: WorkerConfig = FAST) -> Worker:
        worker = Worker(
            state=real_state,
            engine=Engine(model=model or OfflineModel()),
            surface=surface or RecordingSurface(real_state.redis, real_state.keys),
            config=config,
        )
        stopping = asyncio.Event()
        running.append((stopping, asyncio.create_task(worker.run(stopping))))
        return worker

    yield start
    for stopping, _ in running:
        stopping.set()
    await asyncio.gather(*(t for _, t in running), return_exceptions=True)


async def finished(state: State, sid: str) -> Session | None:
    s = await state.sessions.load(sid)
    return s if s is not None and s.status != SessionStatus.RUNNING else None


def assert_each_turn_once(session: Session, events: list[dict[str, Any]]) -> None:
    assert [t.index for t in session.turns] == list(range(len(session.turns)))
    posts = [e["turn"] for e in events if e["kind"] == "post"]
    assert sorted(posts) == list(range(len(session.agent_turns))), posts


async def test_a_worker_runs_a_session_to_its_locked_prompt(
    real_state: State, started: Callable[..., Worker]
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    started()
    await wait_until(lambda: finished(real_state, session.id))
    done = await real_state.sessions.load(session.id)
    assert done is not None and done.status == SessionStatus.LOCKED
    assert done.locked is not None and done.locked.reason == LockReason.APPROVED

    # Decide, save, then show: the lock is saved before its steps are shown, so its
    # "locked" event may follow the status by a moment (the save and the enqueue of the
    # steps' job are two slots now).
    async def shown_locked() -> bool:
        events = await recorded(real_state.redis, real_state.keys, session.id)
        return bool(events) and events[-1]["kind"] == "locked"

    await wait_until(shown_locked)
    events = await recorded(real_state.redis, real_state.keys, session.id)
    assert_each_turn_once(done, events)
    assert events[-1]["kind"] == "locked"
    entry = await real_state.library.get(session.id, team=session.origin.team_id)
    assert entry is not None and entry.locked == done.locked
    # The lock is saved before its steps are shown; the job is acked once they are.
    await wait_until(lambda: _queue_empty(real_state), within=10)
    assert await real_state.redis.ttl(real_state.keys.session(session.id)) > 0


async def test_two_workers_racing_for_one_session_never_both_advance_it(
    real_state: State, started: Callable[..., Worker]
) -> None:
    sessions = [make_session() for _ in range(4)]
    for s in sessions:
        await real_state.sessions.create(s, enqueue=True)
        await real_state.queue.enqueue(s.id, 0)  # a duplicate job for every first turn
    slow = OfflineModel(latency=0.05)
    started(model=slow)
    started(model=slow)
    for s in sessions:
        await wait_until(lambda s=s: finished(real_state, s.id), within=30)
    for s in sessions:
        done = await real_state.sessions.load(s.id)
        assert done is not None and done.status == SessionStatus.LOCKED
        assert_each_turn_once(done, await recorded(real_state.redis, real_state.keys, s.id))
    await wait_until(lambda: _queue_empty(real_state), within=10)


async def _queue_empty(state: State) -> bool:
    stats = await state.queue.stats()
    return stats.backlog == 0 and stats.pending == 0


async def test_an_interjection_in_the_inbox_is_heard_by_the_next_speaker(
    real_state: State, started: Callable[..., Worker]
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=False)
    await real_state.inbox.push(
        session.id,
        InboxEntry(kind="interjection", author="Ana", text="Make it rain", source_id="171.1"),
    )
    await real_state.queue.enqueue(session.id, 0)
    started()
    await wait_until(lambda: finished(real_state, session.id))
    done = await real_state.sessions.load(session.id)
    assert done is not None
    assert done.turns[0].speaker == Speaker.HUMAN and done.turns[0].text == "Make it rain"
    # The offline Copilot answers the interjection and takes it into its draft.
    draft = done.turns[1].draft
    assert "Ana, taken" in done.turns[1].text and draft is not None and "rain" in draft.prompt_text
    assert await real_state.inbox.size(session.id) == 0
    events = await recorded(real_state.redis, real_state.keys, session.id)
    assert {"kind": "heard", "source_id": "171.1"} in events


async def test_stop_and_lock_from_the_inbox_end_the_session_with_no_more_turns(
    real_state: State, started: Callable[..., Worker]
) -> None:
    stopped, locked = make_session(), make_session()
    await real_state.sessions.create(stopped, enqueue=False)
    # Before any draft, a lock is refused and changes nothing; the stop then ends it.
    await real_state.inbox.push(stopped.id, InboxEntry(kind="lock", author="Bo"))
    await real_state.inbox.push(stopped.id, InboxEntry(kind="stop", author="Ana"))
    await real_state.queue.enqueue(stopped.id, 0)
    started()
    await wait_until(lambda: finished(real_state, stopped.id))
    s = await real_state.sessions.load(stopped.id)
    assert s is not None and s.status == SessionStatus.STOPPED and s.stopped_by == "Ana"
    assert s.turns == [] and s.locked is None

    # With a draft on the table, a human lock takes the latest draft, before anyone speaks.
    await Engine(model=OfflineModel()).take_turn(locked)
    await real_state.sessions.create(locked, enqueue=False)
    await real_state.inbox.push(locked.id, InboxEntry(kind="lock", author="Ana"))
    await real_state.queue.enqueue(locked.id, 1)
    await wait_until(lambda: finished(real_state, locked.id))
    s = await real_state.sessions.load(locked.id)
    assert s is not None and s.locked is not None
    assert s.locked.reason == LockReason.HUMAN and s.locked.locked_by == "Ana"
    assert s.locked.draft == s.latest_draft and len(s.turns) == 1
    assert await real_state.library.get(locked.id, team=locked.origin.team_id) is not None


class FailingSurface(RecordingSurface):
    async def turn_finished(self, session: Session, turn: Any) -> None:
        raise RuntimeError("Slack is down")


class CountingModel(OfflineModel):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def complete(self, request: Any, on_text: Any = None) -> Any:
        self.calls += 1
        return await super().complete(request, on_text)


async def test_a_turn_whose_showing_keeps_failing_is_saved_once_and_its_session_paused(
    real_state: State, started: Callable[..., Worker]
) -> None:
    """Decide, save, then show: a failure after the save never calls the model again."""
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    model = CountingModel()
    started(model=model, surface=FailingSurface(real_state.redis, real_state.keys))
    await wait_until(lambda: finished(real_state, session.id), within=20)
    s = await real_state.sessions.load(session.id)
    assert s is not None and s.status == SessionStatus.PAUSED
    assert "failed 3 times in a row" in (s.error or "")
    assert len(s.turns) == 1 and model.calls == 1
    dead = await real_state.queue.dead_letters()
    assert [d.job.session_id for d in dead] == [session.id]
    snap = await real_state.sessions.snapshot(session.id)
    assert snap is not None and snap.steps == [
        "show_turn:0",
        "update_root",
        "show_paused:1",
        "update_root",
        "refresh_home",
    ]  # shown once Slack is back


class FailingModel(OfflineModel):
    async def complete(self, request: Any, on_text: Any = None) -> Any:
        raise RuntimeError("the model client is broken")


async def test_a_turn_that_keeps_failing_before_its_save_is_dead_lettered_and_paused(
    real_state: State, started: Callable[..., Worker]
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    started(model=FailingModel())
    await wait_until(lambda: _status(real_state, session.id, SessionStatus.PAUSED), within=20)
    s = await real_state.sessions.load(session.id)
    assert s is not None and s.turns == []
    assert "failed 3 times in a row" in (s.error or "")
    await wait_until(lambda: _paused_shown(real_state, session.id), within=20)


async def _paused_shown(state: State, sid: str) -> bool:
    events = await recorded(state.redis, state.keys, sid)
    snap = await state.sessions.snapshot(sid)
    return any(e["kind"] == "paused" for e in events) and snap is not None and snap.steps == []


async def test_retry_resumes_a_paused_session_where_it_stopped(
    real_state: State, started: Callable[..., Worker]
) -> None:
    session = make_session()
    session.status = SessionStatus.PAUSED
    session.error = "The model call failed"
    await real_state.sessions.create(session, enqueue=False)
    await real_state.inbox.push(session.id, InboxEntry(kind="retry", author="Ana"))
    await real_state.queue.enqueue(session.id, 0)
    started()
    await wait_until(lambda: _status(real_state, session.id, SessionStatus.LOCKED))
    s = await real_state.sessions.load(session.id)
    assert s is not None and s.error is None and len(s.agent_turns) >= 4


async def _status(state: State, sid: str, status: SessionStatus) -> bool:
    return await state.sessions.status(sid) == status


async def test_the_worker_logs_one_structured_line_per_turn(
    real_state: State, started: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sora.worker")
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    started()
    await wait_until(lambda: finished(real_state, session.id))
    done = await real_state.sessions.load(session.id)
    assert done is not None

    def turn_lines() -> list[dict[str, Any]]:
        lines = [json.loads(r.message) for r in caplog.records if r.message.startswith("{")]
        return [ln for ln in lines if ln["session"] == session.id]

    # The line follows the save that `finished` reads: wait for the last turn's line.
    await wait_until(lambda: len(turn_lines()) >= len(done.agent_turns), "every turn's line")
    turns = turn_lines()
    assert [ln["turn"] for ln in turns] == list(range(len(done.agent_turns)))
    assert all(ln["latency_ms"] >= 0 and ln["tokens"]["output"] > 0 for ln in turns)


# ---- real processes ------------------------------------------------------------------


def worker_env(prefix: str, url: str = REDIS_TEST_URL, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        REDIS_URL=url,
        REDIS_PREFIX=prefix,
        LEASE_TTL_MS="1500",
        RECLAIM_IDLE_MS="2000",
        RECLAIM_EVERY_SECONDS="0.3",
        DRAIN_SECONDS="0.2",
        **extra,
    )
    return env


def spawn_worker(
    prefix: str, *, latency: float, url: str = REDIS_TEST_URL, **extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "worker",
            "--surface",
            "recording",
            "--offline",
            "--offline-latency",
            str(latency),
        ],
        env=worker_env(prefix, url, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_a_worker_killed_mid_turn_loses_nothing_and_posts_nothing_twice(
    real_state: State, prefix: str, redis_url: str
) -> None:
    sessions = [make_session() for _ in range(3)]
    for s in sessions:
        await real_state.sessions.create(s, enqueue=True)
    first = spawn_worker(prefix, latency=0.25, url=redis_url)
    try:
        # Kill it while turns are in flight: some posted, none of those saved yet.
        await wait_until(lambda: _any_posts(real_state, sessions), within=20)
        await asyncio.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = spawn_worker(prefix, latency=0.01, url=redis_url)
        try:
            for s in sessions:
                await wait_until(lambda s=s: finished(real_state, s.id), within=40)
        finally:
            second.terminate()
            second.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    redone = 0
    for s in sessions:
        done = await real_state.sessions.load(s.id)
        assert done is not None and done.status == SessionStatus.LOCKED, done and done.error
        events = await recorded(real_state.redis, real_state.keys, s.id)
        assert_each_turn_once(done, events)
        redone += sum(1 for e in events if e["kind"] == "update")
    assert redone >= 1  # the kill really caught a turn between its post and its save


async def _any_posts(state: State, sessions: list[Session]) -> bool:
    for s in sessions:
        if await state.redis.llen(state.keys.recorded(s.id)):
            return True
    return False


async def test_sigterm_stops_taking_jobs_and_leaves_the_unfinished_turn_for_another(
    real_state: State, prefix: str
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    proc = spawn_worker(prefix, latency=5.0)
    try:
        await wait_until(lambda: _pending(real_state, 1), within=20)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        assert code == 0
        assert time.monotonic() - t0 < 4  # it did not wait out the 5 s turn
    finally:
        if proc.poll() is None:
            proc.kill()
    s = await real_state.sessions.load(session.id)
    assert s is not None and s.turns == [] and s.status == SessionStatus.RUNNING
    stats = await real_state.queue.stats()
    assert stats.pending == 1  # unacknowledged, for the next worker


async def _pending(state: State, n: int) -> bool:
    return (await state.queue.stats()).pending >= n


def test_the_worker_refuses_to_start_without_redis_url(tmp_path: Path) -> None:
    p = run_cli("worker", cwd=tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 2
    assert "sora-copilot worker needs REDIS_URL" in err
    assert "Traceback" not in err


def test_a_reclaim_idle_time_within_the_lease_is_refused_at_start_in_one_line(
    tmp_path: Path,
) -> None:
    p = run_cli(
        "worker",
        "--surface",
        "recording",
        cwd=tmp_path,
        env={"REDIS_URL": REDIS_TEST_URL, "LEASE_TTL_MS": "4000", "RECLAIM_IDLE_MS": "3000"},
    )
    err = p.stderr.decode()
    assert p.returncode == 2
    assert err.strip().splitlines() == [
        "sora-copilot: RECLAIM_IDLE_MS (3000) must be longer than LEASE_TTL_MS (4000): a dead "
        "worker's job is taken over only once its lease has expired."
    ]


async def test_the_worker_takes_and_renews_leases_for_lease_ttl_ms(
    real_state: State, started: Callable[..., Worker]
) -> None:
    """Every lease the worker takes or renews lasts LEASE_TTL_MS, not the 30 s default."""
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    started(model=OfflineModel(latency=0.8))  # FAST: 1 s leases, renewed every 1/3 s
    ttls: list[int] = []
    for _ in range(40):
        ttl = await real_state.redis.pttl(real_state.keys.lease(session.id))
        if ttl > 0:
            ttls.append(ttl)
        await asyncio.sleep(0.05)
    assert ttls and max(ttls) <= 1000


def test_an_unreachable_redis_is_a_clear_error_not_a_stack_trace(tmp_path: Path) -> None:
    p = run_cli(
        "worker",
        "--surface",
        "recording",
        cwd=tmp_path,
        env={"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"},
    )
    err = p.stderr.decode()
    assert p.returncode == 2
    assert "Redis is not reachable at redis://:***@127.0.0.1:1/0" in err
    assert "hunter2" not in err and "Traceback" not in err


async def test_hundreds_of_turns_in_flight_do_not_exhaust_the_redis_pool(prefix: str) -> None:
    from state import connect

    redis = await connect(REDIS_TEST_URL)
    try:
        # Each BLPOP holds its connection for 0.2 s: 300 at once need 300 connections,
        # where redis-py's default pool raises "Too many connections" past 100.
        results = await asyncio.gather(
            *(redis.blpop([f"{prefix}:nothing:{i}"], timeout=0.2) for i in range(300))
        )
        assert results == [None] * 300
    finally:
        await redis.aclose()


async def test_a_redis_read_timeout_while_taking_jobs_is_one_line_then_a_retry(
    real_state: State,
    started: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under heavy load a blocking read can time out (redis-py raises its TimeoutError):
    the worker says so in one line, backs off and goes on; no traceback in its log."""
    monkeypatch.setattr(worker_module, "RETRY_TAKE_S", 0.05)
    caplog.set_level(logging.WARNING, logger="sora.worker")
    take = real_state.queue.take
    timeouts = 0

    async def flaky_take(*args: Any, **kwargs: Any) -> Any:
        nonlocal timeouts
        if timeouts < 2:
            timeouts += 1
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        return await take(*args, **kwargs)

    monkeypatch.setattr(real_state.queue, "take", flaky_take)
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    started()
    await wait_until(lambda: finished(real_state, session.id))
    assert timeouts == 2
    failed = [r for r in caplog.records if r.message.startswith("taking jobs failed")]
    assert len(failed) == 2, [r.message for r in failed]
    assert "Redis did not answer in time" in failed[0].message
    assert "retrying in 0.1 s" in failed[1].message  # backed off: doubled
    assert [r for r in caplog.records if r.exc_info] == []
