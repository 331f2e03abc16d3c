"""Running-session caps per user and per team, safe under concurrent /sora commands."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.dialogue.models import SessionStatus
from state import State
from state.running import Cap, RunningSessions
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import make_session


async def test_counts_follow_add_and_remove(state: State) -> None:
    await state.running.add("s1", "U1", "T1")
    await state.running.add("s2", "U2", "T1")
    await state.running.add("s2", "U2", "T1")  # idempotent
    assert (await state.running.count_user("U1", "T1"), await state.running.count_team("T1")) == (
        1,
        2,
    )
    await state.running.remove("s2", "U2", "T1")
    assert (await state.running.count_user("U2", "T1"), await state.running.count_team("T1")) == (
        0,
        1,
    )


async def test_try_add_refuses_past_either_cap(state: State) -> None:
    r = state.running
    assert await r.try_add("s1", "U1", "T1", max_user=1, max_team=2)
    assert not await r.try_add("s2", "U1", "T1", max_user=1, max_team=2)  # user cap
    assert await r.try_add("s2", "U2", "T1", max_user=1, max_team=2)
    assert not await r.try_add("s3", "U3", "T1", max_user=1, max_team=2)  # team cap
    assert await r.try_add("s1", "U1", "T1", max_user=1, max_team=2)  # already counted
    assert await r.try_add("s4", None, None, max_user=1, max_team=1)  # terminal: uncounted
    assert (await r.count_user("U3", "T1"), await r.count_team("T1")) == (0, 2)


async def test_concurrent_commands_never_exceed_the_caps(state: State) -> None:
    r = state.running
    results = await asyncio.gather(
        *(r.try_add(f"s{i}", f"U{i % 4}", "T1", max_user=2, max_team=5) for i in range(40))
    )
    assert results.count(True) == 5
    assert await r.count_team("T1") == 5
    assert all([await r.count_user(f"U{u}", "T1") <= 2 for u in range(4)])


async def test_a_slot_whose_session_never_appeared_is_freed_after_the_grace_period(
    backend: Redis, state: State
) -> None:
    r = RunningSessions(backend, state.keys, grace_s=0)
    created = make_session()
    await state.sessions.create(created)
    assert await r.try_add(created.id, "U1", "T1", max_user=2, max_team=9)
    assert await r.try_add("never-created", "U1", "T1", max_user=2, max_team=9)
    await asyncio.sleep(0.01)
    # The web process died between try_add and create: that slot is reclaimed,
    # the live session's is not.
    later = make_session()
    await state.sessions.create(later)
    assert await r.try_add(later.id, "U1", "T1", max_user=2, max_team=9)
    assert await r.count_user("U1", "T1") == 2
    assert not await r.try_add("s4", "U1", "T1", max_user=2, max_team=9)


async def test_within_the_grace_period_a_reserved_slot_counts(state: State) -> None:
    # The default grace covers the gap between try_add and create.
    assert await state.running.try_add("not-yet-created", "U1", None, max_user=1, max_team=None)
    assert not await state.running.try_add("s2", "U1", None, max_user=1, max_team=None)


async def test_the_channel_cap_says_which_cap_refused_and_finished_sessions_leave_it(
    state: State,
) -> None:
    r = state.running
    for sid in ("a", "b"):
        session = make_session()
        session.id = sid
        await state.sessions.create(session)
        assert (
            await r.reserve(
                sid, f"U{sid}", "T1", max_user=3, max_team=9, channel="C1", max_channel=2
            )
            is None
        )
    assert (
        await r.reserve("c", "Uc", "T1", max_user=3, max_team=9, channel="C1", max_channel=2)
        == Cap.CHANNEL
    )
    assert await r.count_user("Uc", "T1") == 0  # refused: nothing reserved anywhere
    assert (
        await r.reserve("c", "Ua", "T1", max_user=1, max_team=9, channel="C2", max_channel=2)
        == Cap.USER
    )
    done = await state.sessions.load("a")
    assert done is not None
    done.status = SessionStatus.STOPPED
    assert await state.sessions.save(done, expected_turn=0)
    assert await r.count_channel("C1", "T1") == 1
    assert (
        await r.reserve("c", "Uc", "T1", max_user=3, max_team=9, channel="C1", max_channel=2)
        is None
    )


async def test_a_paused_session_takes_no_slot_until_it_is_retried(state: State) -> None:
    r = state.running
    sessions = []
    for sid in ("p1", "p2"):
        session = make_session()
        session.id = sid
        await state.sessions.create(session)
        sessions.append(session)
        assert (
            await r.reserve(sid, "U1", "T1", max_user=2, max_team=2, channel="C1", max_channel=2)
            is None
        )
    assert await r.reserve("p3", "U1", "T1", max_user=2, max_team=9) == Cap.USER
    # U1 of another workspace is another person, with caps of their own.
    assert await r.reserve("x1", "U1", "T2", max_user=2, max_team=9, channel="C1") is None
    assert (await r.count_user("U1", "T2"), await r.count_channel("C1", "T2")) == (1, 1)

    # A set-aside job pauses its session: its slot is free for a new /sora everywhere.
    paused = await state.sessions.load("p1")
    assert paused is not None
    paused.status = SessionStatus.PAUSED
    assert await state.sessions.save(paused, expected_turn=0)
    counts = (
        await r.count_user("U1", "T1"),
        await r.count_team("T1"),
        await r.count_channel("C1", "T1"),
    )
    assert counts == (1, 1, 1)
    assert (
        await r.reserve("p3", "U1", "T1", max_user=2, max_team=2, channel="C1", max_channel=2)
        is None
    )

    # Retried, it runs and counts again (a retry is never refused for a cap).
    paused.status = SessionStatus.RUNNING
    assert await state.sessions.save(paused, expected_turn=0)
    assert await r.count_user("U1", "T1") == 3
    assert await r.reserve("p4", "U1", "T1", max_user=3, max_team=9) == Cap.USER
