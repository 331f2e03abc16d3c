"""No session stays Running with nothing behind it; deleting a session leaves no key of it;
library entries keep as long as the operator chooses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.dialogue.engine import Engine
from bot.dialogue.models import SessionStatus
from bot.llm.offline import OfflineModel
from bot.surfaces.recording import RecordingSurface
from bot.worker import Worker, WorkerConfig
from state import InboxEntry, LibraryEntry, State
from state.sweep import Lost
from tests.redis_fixtures import *  # noqa: F403
from tests.redis_fixtures import agent_turn, locked, make_session
from tests.support import wait_until

ON_CLUSTER_TOO = True  # each test on one Redis, then on the Redis Cluster


async def test_a_running_session_whose_job_is_gone_is_queued_again(real_state: State) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    await real_state.redis.delete(real_state.keys.jobs)  # the job stream, deleted by hand
    result = await real_state.sweeper.run("w1", lease_ms=5000)
    assert result is not None and result.requeued == [session.id]
    assert (await real_state.queue.stats()).backlog == 1
    again = await real_state.sweeper.run("w1", lease_ms=5000)
    assert again is not None and again.requeued == []  # its job is queued now


async def test_a_session_a_worker_holds_or_that_has_its_job_is_left_alone(
    real_state: State,
) -> None:
    held, queued = make_session(), make_session()
    await real_state.sessions.create(held)
    await real_state.sessions.create(queued, enqueue=True)
    assert await real_state.leases.acquire(held.id, "worker-a")
    result = await real_state.sweeper.run("w1", lease_ms=5000)
    assert result is not None and result.requeued == [] and result.lost == []


async def test_a_session_whose_state_is_gone_is_reported_with_its_thread_once(
    real_state: State,
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    await real_state.redis.delete(real_state.keys.session(session.id))  # evicted
    young = await real_state.sweeper.run("w1", lease_ms=5000)
    assert young is not None and young.lost == []  # it may be a session being created
    real_state.sweeper.grace_ms = 0
    result = await real_state.sweeper.run("w1", lease_ms=5000)
    o = session.origin
    assert result is not None
    assert result.lost == [Lost(session.id, o.channel_id or "", o.thread_ts or "", o.team_id)]
    again = await real_state.sweeper.run("w1", lease_ms=5000)
    assert again is not None and again.lost == []


async def test_a_finished_session_leaves_the_live_index(real_state: State) -> None:
    session = make_session()
    await real_state.sessions.create(session)
    assert await real_state.redis.hexists(real_state.keys.live, session.id)
    done = locked(agent_turn(session))
    assert await real_state.sessions.save(done, expected_turn=0)
    assert not await real_state.redis.hexists(real_state.keys.live, session.id)


async def test_one_worker_sweeps_at_a_time(real_state: State) -> None:
    await real_state.redis.set(real_state.keys.sweep_lease, "other", px=5000)
    assert await real_state.sweeper.run("w1", lease_ms=5000) is None


@pytest.fixture
async def worker(real_state: State) -> AsyncIterator[Callable[..., Worker]]:
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(**kw: Any) -> Worker:
        w = Worker(
            state=real_state,
            engine=Engine(model=OfflineModel()),
            surface=RecordingSurface(real_state.redis, real_state.keys),
            config=WorkerConfig(
                lease_ttl_ms=1000, reclaim_idle_ms=1500, block_ms=50, sweep_every_s=0.2
            ),
            **kw,
        )
        stop = asyncio.Event()
        tasks.append((stop, asyncio.create_task(w.run(stop))))
        return w

    yield start
    for stop, _ in tasks:
        stop.set()
    await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)


async def test_a_worker_finishes_a_session_whose_job_stream_was_deleted(
    real_state: State, worker: Callable[..., Worker]
) -> None:
    session = make_session()
    await real_state.sessions.create(session, enqueue=True)
    await real_state.redis.delete(real_state.keys.jobs)
    worker()

    async def done() -> bool:
        s = await real_state.sessions.load(session.id)
        return s is not None and s.status == SessionStatus.LOCKED

    await wait_until(done, "the swept session to lock")


async def test_a_worker_tells_the_thread_of_a_session_whose_state_is_gone(
    real_state: State, worker: Callable[..., Worker]
) -> None:
    session = make_session()
    await real_state.sessions.create(session)
    await real_state.redis.delete(real_state.keys.session(session.id))
    real_state.sweeper.grace_ms = 0
    told: list[Lost] = []

    async def on_lost(lost: Lost) -> None:
        told.append(lost)

    worker(on_lost=on_lost)
    await wait_until(lambda: told, "the lost session to be told")
    assert [t.session_id for t in told] == [session.id]


# ---- deletion and retention --------------------------------------------------------------


async def _keys_naming(state: State, sid: str) -> list[str]:
    found = []
    async for key in state.redis.scan_iter(match=f"{state.keys.prefix}:*"):
        if sid in key:
            found.append(key)
        elif state.redis and await state.redis.type(key) == "zset":
            if await state.redis.zscore(key, sid) is not None:
                found.append(key)
        elif await state.redis.type(key) == "hash" and await state.redis.hexists(key, sid):
            found.append(key)
    return found


async def test_erasing_a_locked_session_removes_every_key_of_it(real_state: State) -> None:
    session = make_session()
    o = session.origin
    await real_state.running.add(session.id, o.user_id, o.team_id)
    await real_state.sessions.create(session)
    await real_state.inbox.push(session.id, InboxEntry(kind="stop", author="a"))
    await real_state.posts.record(session.id, 0, 0, "1.0001")
    done = locked(agent_turn(session))
    assert await real_state.sessions.save(done, expected_turn=0)
    await real_state.library.add(LibraryEntry.from_session(done))
    assert await _keys_naming(real_state, session.id)
    assert await real_state.eraser.erase(done) >= 3
    assert await _keys_naming(real_state, session.id) == []
    assert await real_state.library.recent(team=o.team_id, channel=o.channel_id) == []


async def test_library_entries_expire_when_the_operator_says_so(
    real_redis: Any, prefix: str
) -> None:
    state = State.create(real_redis, prefix=prefix, library_ttl_s=3600)
    done = locked(agent_turn(make_session()))
    await state.library.add(LibraryEntry.from_session(done))
    ttl = await real_redis.ttl(state.keys.library_prompt("T1", done.id))
    assert 3500 < ttl <= 3600
    forever = State.create(real_redis, prefix=prefix)
    await forever.library.add(LibraryEntry.from_session(done))
    assert await real_redis.ttl(forever.keys.library_prompt("T1", done.id)) == -1


async def test_an_expired_library_entry_leaves_the_listing_and_its_index(real_state: State) -> None:
    done = locked(agent_turn(make_session()))
    await real_state.library.add(LibraryEntry.from_session(done))
    await real_state.redis.delete(real_state.keys.library_prompt("T1", done.id))  # expired
    assert await real_state.library.recent(team="T1", channel=done.origin.channel_id) == []
    key = real_state.keys.library_channel("T1", done.origin.channel_id or "-")
    assert await real_state.redis.zscore(key, done.id) is None
