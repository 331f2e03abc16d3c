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
    await state.ratelimit.wait(snap.session.origin.channel_id, team=snap.session.origin.team_id)
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


async def test_a_one_turn_job_costs_six_round_trips(counted: State) -> None:
    state = counted
    await state.queue.ensure_group()
    session = make_session()
    await state.sessions.create(session, enqueue=True)
    await worker_turn(state, "w1")  # warm-up: loads the Lua scripts into Redis
    CountingConnection.sent = 0
    await worker_turn(state, "w1")
    # take, snapshot+lease, rate limit, post ledger, save+release (the session's slot),
    # enqueue+ack (one MULTI in the queue's slot: a Redis Cluster keeps them apart).
    assert CountingConnection.sent == 6
    assert (await state.queue.stats()).backlog == 1  # turn 2 is queued


async def test_each_further_turn_of_a_job_costs_one_round_trip_to_save(counted: State) -> None:
    """The worker carries a session on under one job: each turn after the first saves and
    reads back its inbox in one script, in the session's slot."""
    state = counted
    session = make_session()
    await state.sessions.create(session)
    snap = await state.sessions.snapshot(session.id, lease_owner="w1")
    assert snap is not None
    rev, current = snap.rev, snap.session
    for _ in range(2):  # the first loads the script
        CountingConnection.sent = 0
        turn, current = current.next_turn, agent_turn(current)
        saved = await state.sessions.save_and_read(
            current, expected_turn=turn, expected_rev=rev, consume_inbox=0, steps=[]
        )
        assert saved is not None
        rev = saved.rev
    assert CountingConnection.sent == 1
