"""Leases: one worker per session at a time, changed only by their owner."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from state import State
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)


async def test_only_one_owner_can_hold_a_lease(state: State) -> None:
    assert await state.leases.acquire("s1", "w1")
    assert not await state.leases.acquire("s1", "w2")
    assert await state.leases.acquire("s1", "w1")  # re-entrant for its owner
    assert await state.leases.holder("s1") == "w1"
    assert await state.leases.acquire("s2", "w2")  # per session


async def test_only_the_owner_can_renew_or_release(state: State, backend: Redis) -> None:
    assert await state.leases.acquire("s1", "w1", ttl_ms=1000)
    assert not await state.leases.renew("s1", "w2", ttl_ms=60_000)
    assert not await state.leases.release("s1", "w2")
    assert await state.leases.holder("s1") == "w1"
    assert await state.leases.renew("s1", "w1", ttl_ms=60_000)
    assert 59_000 < await backend.pttl(state.keys.lease("s1")) <= 60_000
    assert await state.leases.release("s1", "w1")
    assert await state.leases.holder("s1") is None
    assert not await state.leases.release("s1", "w1")
    assert not await state.leases.renew("s1", "w1")


async def test_a_lease_expires_and_another_worker_can_take_it(state: State) -> None:
    assert await state.leases.acquire("s1", "w1", ttl_ms=100)
    await asyncio.sleep(0.15)
    assert not await state.leases.renew("s1", "w1")  # too late: it is gone
    assert await state.leases.acquire("s1", "w2")
    assert not await state.leases.release("s1", "w1")
    assert await state.leases.holder("s1") == "w2"


async def test_concurrent_acquires_give_the_lease_to_exactly_one(state: State) -> None:
    results = await asyncio.gather(*(state.leases.acquire("s1", f"w{i}") for i in range(20)))
    assert results.count(True) == 1
