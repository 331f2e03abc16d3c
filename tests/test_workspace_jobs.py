"""A job names its workspace; a worker runs no session of a workspace it may not speak for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.cli import _one_workspace
from bot.dialogue.engine import Engine
from bot.dialogue.models import Session
from bot.llm.offline import OfflineModel
from bot.surfaces.recording import RecordingSurface, recorded
from bot.worker import Worker, WorkerConfig
from state import State
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import make_session
from tests.support import wait_until

ON_CLUSTER_TOO = True  # each test on one Redis, then on the Redis Cluster

FAST = WorkerConfig(lease_ttl_ms=1000, reclaim_idle_ms=1500, reclaim_every_s=0.2, block_ms=50)


@pytest.fixture
async def worker(real_state: State) -> AsyncIterator[Callable[..., None]]:
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(admit: Callable[[Session], Awaitable[str | None]] | None = None) -> None:
        w = Worker(
            state=real_state,
            engine=Engine(model=OfflineModel()),
            surface=RecordingSurface(real_state.redis, real_state.keys),
            config=FAST,
            admit=admit,
        )
        stopping = asyncio.Event()
        tasks.append((stopping, asyncio.create_task(w.run(stopping))))

    yield start
    for stopping, _ in tasks:
        stopping.set()
    await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)


async def test_a_job_carries_its_sessions_workspace(real_state: State) -> None:
    session = make_session()
    await real_state.queue.ensure_group()
    await real_state.sessions.create(session, enqueue=True)
    [job] = await real_state.queue.take("w")
    assert (job.session_id, job.turn, job.team) == (session.id, 0, "T1")


async def test_a_job_naming_another_workspace_is_dead_lettered_with_its_reason(
    real_state: State, worker: Callable[..., None]
) -> None:
    session = make_session()  # of workspace T1
    await real_state.queue.ensure_group()
    await real_state.sessions.create(session)
    await real_state.queue.enqueue(session.id, 0, "T2")  # a job that lies about it
    worker()

    async def dead() -> bool:
        return bool(await real_state.queue.dead_letters())

    await wait_until(dead, "the job set aside")
    [letter] = await real_state.queue.dead_letters()
    assert letter.job.session_id == session.id and letter.job.team == "T2"
    assert "workspace T2" in letter.reason and "workspace T1" in letter.reason
    assert await recorded(real_state.redis, real_state.keys, session.id) == []
    stored = await real_state.sessions.load(session.id)
    assert stored is not None and stored.turns == []  # nothing was run for it


async def test_a_single_token_worker_sets_aside_another_workspaces_session(
    real_state: State, worker: Callable[..., None]
) -> None:
    ours, theirs = make_session(), make_session()
    theirs.origin = theirs.origin.model_copy(update={"team_id": "T2"})
    await real_state.queue.ensure_group()
    for s in (ours, theirs):
        await real_state.sessions.create(s, enqueue=True)
    worker(admit=_one_workspace("T1"))

    async def dead() -> bool:
        return bool(await real_state.queue.dead_letters())

    await wait_until(dead, "their job set aside")
    [letter] = await real_state.queue.dead_letters()
    assert letter.job.session_id == theirs.id and letter.job.team == "T2"
    assert "no installation" in letter.reason and "T2" in letter.reason
    assert await recorded(real_state.redis, real_state.keys, theirs.id) == []
    await wait_until(lambda: recorded(real_state.redis, real_state.keys, ours.id), "ours to be run")
