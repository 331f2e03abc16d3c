"""The workspace's chat.update budget: a sliding minute shared by every process."""

from __future__ import annotations

import asyncio

import pytest

from state import State
from state.updates import WINDOW_US, UpdateBudget
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)


async def test_interim_updates_stop_short_of_the_reserve_that_must_land_updates_use(
    state: State,
) -> None:
    budget = UpdateBudget(state.redis, state.keys, per_minute=8, reserve=2)
    taken = [await budget.take("T1") for _ in range(8)]
    assert taken == [True] * 6 + [False] * 2  # interim: at most 8 - 2 a minute
    assert await budget.wait_for("T1") == 0.0  # the reserve is still there for finals
    assert await budget.wait_for("T1") == 0.0
    assert await budget.take("T2")  # another workspace has a budget of its own


async def test_a_must_land_update_waits_for_the_minute_to_have_room(state: State) -> None:
    slept: list[float] = []

    async def time_passes(seconds: float) -> None:
        slept.append(seconds)
        await state.redis.delete(state.keys.update_budget("T1"))  # the minute went by

    budget = UpdateBudget(state.redis, state.keys, per_minute=3, reserve=1, sleep=time_passes)
    for _ in range(3):
        await budget.wait_for("T1")
    assert await budget.wait_for("T1") > 0
    [wait] = slept
    assert 0 < wait <= WINDOW_US / 1_000_000


async def test_concurrent_takers_never_exceed_the_budget(real_state: State) -> None:
    budget = UpdateBudget(real_state.redis, real_state.keys, per_minute=40)
    taken = await asyncio.gather(*(budget.take("T1") for _ in range(60)))
    assert sum(taken) == 40 - budget.reserve


async def test_the_interval_stretches_with_the_turns_streaming_at_once(state: State) -> None:
    budget = UpdateBudget(state.redis, state.keys, per_minute=40, reserve=10)
    assert await budget.streaming("T1", "s1:3", for_s=30) == 1
    assert await budget.streaming("T1", "s2:1", for_s=30) == 2
    assert await budget.streaming("T1", "s1:3", for_s=30) == 2  # a renewal, not a new turn
    assert budget.interval(1) == 2.0 and budget.interval(20) == 40.0  # 30 interim calls a minute
    await budget.done_streaming("T1", "s1:3")
    assert await budget.streaming("T1", "s3:0", for_s=30) == 2


def test_a_budget_with_no_room_for_interim_updates_is_refused(state: State) -> None:
    with pytest.raises(ValueError):
        UpdateBudget(state.redis, state.keys, per_minute=4, reserve=4)


async def test_while_a_must_land_update_waits_no_interim_update_takes_a_call(
    state: State,
) -> None:
    waited: list[float] = []

    async def meanwhile(seconds: float) -> None:
        waited.append(seconds)
        # A minute later the window is empty again, but the must-land call goes first.
        await state.redis.delete(state.keys.update_budget("T1"))
        assert not await budget.take("T1")

    budget = UpdateBudget(state.redis, state.keys, per_minute=4, reserve=1, sleep=meanwhile)
    for _ in range(4):
        await budget.wait_for("T1")
    assert not await budget.take("T1")
    await budget.wait_for("T1")
    assert waited
    assert await budget.take("T1")  # it landed: interim updates go on
