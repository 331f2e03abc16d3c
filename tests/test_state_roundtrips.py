"""Round trips: what one worker turn costs against a real Redis (budget: 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from state import State
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL, agent_turn, delete_prefix, make_session


class CountingConnection(Connection):
    """Counts writes to the socket: one per command, or per pipeline."""

    sent: ClassVar[int] = 0

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(*args, **kwargs)


@pytest.fixture
async def counted(prefix: str) -> AsyncIterator[State]:
    pool = ConnectionPool.from_url(
        REDIS_TEST_URL, connection_class=CountingConnection, decode_responses=True
    )
    redis = Redis(connection_pool=pool)
    try:
        yield State.create(redis, prefix=prefix)
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await pool.aclose()


async def worker_turn(state: State, consumer: str) -> None:
    """What the worker does for one turn that posts one message."""
    [job] = await state.queue.take(consumer)
    owner = f"{consumer}:{job.id}"
    snap = await state.sessions.snapshot(job.session_id, lease_owner=owner)
    assert snap is not None and snap.leased and snap.session.next_turn == job.turn
    assert snap.session.origin.channel_id
    await state.ratelimit.wait(snap.session.origin.channel_id)
    # ... the model call and the Slack post happen here ...
    await state.posts.record(job.session_id, job.turn, 0, f"{job.turn}.0001")
    # (The engine would also append the inbox entries as human turns.)
    assert await state.sessions.save(
        agent_turn(snap.session),
        expected_turn=job.turn,
        expected_rev=snap.rev,
        consume_inbox=len(snap.inbox),
        ack=job,
        enqueue_next=True,
        release_lease=owner,
    )


async def test_a_worker_turn_costs_five_round_trips(counted: State) -> None:
    state = counted
    await state.queue.ensure_group()
    session = make_session()
    await state.sessions.create(session, enqueue=True)
    await worker_turn(state, "w1")  # warm-up: loads the Lua scripts into Redis
    CountingConnection.sent = 0
    await worker_turn(state, "w1")
    # take, snapshot+lease, rate limit, post ledger, save+ack+enqueue+release.
    assert CountingConnection.sent == 5
    assert (await state.queue.stats()).backlog == 1  # turn 2 is queued
