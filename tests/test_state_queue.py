"""The turn queue: at-least-once jobs, takeover of a dead worker's jobs, dead letters."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from state import State, TurnQueue
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)


async def test_a_taken_job_says_which_session_and_turn_and_is_gone_once_acked(
    state: State,
) -> None:
    await state.queue.ensure_group()
    await state.queue.ensure_group()  # idempotent
    job_id = await state.queue.enqueue("s1", 3)
    [job] = await state.queue.take("w1", count=10)
    assert (job.id, job.session_id, job.turn, job.deliveries) == (job_id, "s1", 3, 1)
    assert await state.queue.take("w2") == []  # delivered once
    assert (await state.queue.stats()).pending == 1
    assert await state.queue.ack(job)
    assert not await state.queue.ack(job)
    stats = await state.queue.stats()
    assert (stats.backlog, stats.pending, stats.dead) == (0, 0, 0)


async def test_take_blocks_up_to_block_ms_for_a_job(state: State) -> None:
    await state.queue.ensure_group()
    assert await state.queue.take("w1", block_ms=50) == []

    async def later() -> None:
        await asyncio.sleep(0.05)
        await state.queue.enqueue("s1", 0)

    producer = asyncio.create_task(later())
    jobs = await state.queue.take("w1", block_ms=2000)
    await producer
    assert [(j.session_id, j.turn) for j in jobs] == [("s1", 0)]


async def test_jobs_enqueued_before_the_group_existed_are_not_lost(state: State) -> None:
    await state.queue.enqueue("early", 0)
    await state.queue.ensure_group()
    assert [j.session_id for j in await state.queue.take("w1")] == ["early"]


async def test_take_recreates_a_vanished_group(state: State, backend: Redis) -> None:
    await state.queue.ensure_group()
    await backend.xgroup_destroy(state.keys.jobs, state.queue.group)
    await state.queue.enqueue("s1", 0)
    assert [j.session_id for j in await state.queue.take("w1")] == ["s1"]


async def test_another_consumer_reclaims_the_idle_job_of_a_dead_worker(state: State) -> None:
    await state.queue.ensure_group()
    await state.queue.enqueue("s1", 0)
    [taken] = await state.queue.take("dead-worker")
    # Not idle long enough yet: nothing to take over.
    early = await state.queue.reclaim("w2", min_idle_ms=60_000)
    assert (early.jobs, early.dead) == ([], [])
    await asyncio.sleep(0.03)
    reclaimed = await state.queue.reclaim("w2", min_idle_ms=20)
    assert reclaimed.dead == []
    [job] = reclaimed.jobs
    assert (job.id, job.session_id, job.turn, job.deliveries) == (taken.id, "s1", 0, 2)
    assert await state.queue.ack(job)


async def test_a_job_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    state: State,
) -> None:
    await state.queue.ensure_group()
    job_id = await state.queue.enqueue("s1", 4)
    await state.queue.take("w0")  # delivery 1
    for deliveries in (2, 3):  # each worker dies in turn
        [job] = (await state.queue.reclaim(f"w{deliveries}", min_idle_ms=0)).jobs
        assert job.deliveries == deliveries
    final = await state.queue.reclaim("w4", min_idle_ms=0)
    assert final.jobs == []
    [dead] = final.dead
    assert (dead.id, dead.session_id, dead.turn, dead.deliveries) == (job_id, "s1", 4, 4)
    stats = await state.queue.stats()
    assert (stats.backlog, stats.pending, stats.dead) == (0, 0, 1)
    [letter] = await state.queue.dead_letters()
    assert letter.job == dead
    assert (letter.reason, letter.consumer) == ("max_deliveries", "w4")
    assert (await state.queue.reclaim("w5", min_idle_ms=0)).jobs == []


async def test_max_deliveries_is_configurable(backend: Redis, state: State) -> None:
    queue = TurnQueue(backend, state.keys, max_deliveries=1)
    await queue.ensure_group()
    await queue.enqueue("s1", 0)
    await queue.take("w0")
    reclaimed = await queue.reclaim("w1", min_idle_ms=0)
    assert reclaimed.jobs == [] and len(reclaimed.dead) == 1


async def test_a_heartbeat_keeps_a_long_turn_from_being_reclaimed(state: State) -> None:
    await state.queue.ensure_group()
    await state.queue.enqueue("s1", 0)
    [job] = await state.queue.take("w1")
    assert await state.leases.acquire("s1", "w1:job")
    await asyncio.sleep(0.06)
    assert await state.heartbeat("s1", "w1:job", job=job, consumer="w1")
    reclaimed = await state.queue.reclaim("w2", min_idle_ms=50)
    assert reclaimed.jobs == [] and reclaimed.dead == []
    # The heartbeat is not a delivery: a later takeover still counts 2.
    await asyncio.sleep(0.06)
    [again] = (await state.queue.reclaim("w2", min_idle_ms=50)).jobs
    assert again.deliveries == 2
    assert not await state.heartbeat("s1", "someone-else", job=job, consumer="w3")


async def test_a_malformed_job_is_dead_lettered_instead_of_crashing_workers(
    state: State, backend: Redis
) -> None:
    await state.queue.ensure_group()
    await backend.xadd(state.keys.jobs, {"what": "is this"})
    await state.queue.enqueue("s1", 0)
    assert [j.session_id for j in await state.queue.take("w1", count=5)] == ["s1"]
    [letter] = await state.queue.dead_letters()
    assert letter.reason == "malformed"
    assert (await state.queue.stats()).pending == 1  # only the good job
