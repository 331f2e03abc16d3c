"""The session store: create-only, fenced single-writer saves, schema checks, TTLs."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bot.dialogue.models import SessionStatus
from state import InboxEntry, SessionExists, State, UnknownSchema
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, human_turn, locked, make_session

DAY = 24 * 3600


async def test_a_created_session_loads_back_equal(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    assert await state.sessions.load(session.id) == session
    assert await state.sessions.status(session.id) == SessionStatus.RUNNING


async def test_loading_a_missing_session_gives_none(state: State) -> None:
    assert await state.sessions.load("nope") is None
    assert await state.sessions.snapshot("nope", lease_owner="w") is None
    assert await state.leases.holder("nope") is None  # no lease taken on nothing


async def test_create_refuses_an_existing_id(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    with pytest.raises(SessionExists):
        await state.sessions.create(agent_turn(session))
    assert await state.sessions.load(session.id) == session


async def test_create_binds_the_origin_thread_and_can_enqueue_the_first_turn(
    state: State,
) -> None:
    await state.queue.ensure_group()
    session = make_session()
    job_id = await state.sessions.create(session, enqueue=True)
    assert job_id is not None
    assert session.origin.channel_id and session.origin.thread_ts
    assert await state.threads.lookup(
        "T1", session.origin.channel_id, session.origin.thread_ts
    ) == (session.id)
    [job] = await state.queue.take("w1")
    assert (job.id, job.session_id, job.turn) == (job_id, session.id, 0)


async def test_a_save_at_the_expected_turn_is_written(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    advanced = agent_turn(session)
    assert await state.sessions.save(advanced, expected_turn=0)
    assert await state.sessions.load(session.id) == advanced


async def test_a_stale_write_is_refused_and_leaves_the_stored_session_unchanged(
    state: State,
) -> None:
    session = make_session()
    await state.sessions.create(session)
    turn1 = agent_turn(session, "first worker")
    assert await state.sessions.save(turn1, expected_turn=0)
    # A second worker that also started from turn 0 (its lease expired mid-turn).
    stale = agent_turn(session, "zombie worker")
    assert not await state.sessions.save(stale, expected_turn=0)
    assert not await state.sessions.save(agent_turn(stale), expected_turn=2)
    assert await state.sessions.load(session.id) == turn1


async def test_two_concurrent_saves_for_the_same_turn_exactly_one_wins(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    candidates = [agent_turn(session, f"worker {i}") for i in range(10)]
    results = await asyncio.gather(*(state.sessions.save(c, expected_turn=0) for c in candidates))
    assert results.count(True) == 1
    stored = await state.sessions.load(session.id)
    assert stored == candidates[results.index(True)]


async def test_expected_rev_fences_saves_that_do_not_advance_the_turn(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    snap = await state.sessions.snapshot(session.id)
    assert snap is not None
    paused = session.model_copy(update={"status": SessionStatus.PAUSED, "error": "boom"})
    resumed = session.model_copy(update={"error": "never written"})
    assert await state.sessions.save(paused, expected_turn=0, expected_rev=snap.rev)
    # Same turn, but someone wrote since this writer's snapshot.
    assert not await state.sessions.save(resumed, expected_turn=0, expected_rev=snap.rev)
    assert await state.sessions.load(session.id) == paused


async def test_a_save_whose_transcript_is_shorter_is_refused(state: State) -> None:
    session = human_turn(make_session(), "make it rain")
    await state.sessions.create(session)
    truncated = session.model_copy(update={"turns": []})
    assert not await state.sessions.save(truncated, expected_turn=0)
    assert await state.sessions.load(session.id) == session


async def test_a_finished_session_is_never_written_again(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    stopped = session.model_copy(update={"status": SessionStatus.STOPPED, "stopped_by": "ada"})
    assert await state.sessions.save(stopped, expected_turn=0)
    assert not await state.sessions.save(agent_turn(session), expected_turn=0)
    assert await state.sessions.load(session.id) == stopped


async def test_loading_an_unknown_schema_version_raises_a_clear_error(
    state: State, backend: Redis
) -> None:
    session = make_session()
    await state.sessions.create(session)
    newer = session.model_dump_json().replace('"schema_version":1', '"schema_version":99')
    await backend.hset(state.keys.session(session.id), mapping={"json": newer, "schema": "99"})
    with pytest.raises(UnknownSchema, match=rf"session {session.id} .*schema_version '99'"):
        await state.sessions.load(session.id)
    with pytest.raises(UnknownSchema):
        await state.sessions.snapshot(session.id, lease_owner="old-worker")
    assert await state.leases.holder(session.id) is None  # it did not hold on to it
    # An old build must not overwrite what a newer one wrote.
    assert not await state.sessions.save(agent_turn(session), expected_turn=0)


async def test_save_consumes_exactly_the_drained_inbox_entries_and_keeps_later_ones(
    state: State,
) -> None:
    session = make_session()
    await state.sessions.create(session)
    for text in ("one", "two"):
        await state.inbox.push(session.id, InboxEntry(kind="interjection", author="g", text=text))
    drained = await state.inbox.peek(session.id)
    # Arrives while the turn is being written: must survive the save.
    await state.inbox.push(session.id, InboxEntry(kind="interjection", author="g", text="three"))
    applied = session
    for entry in drained:
        applied = human_turn(applied, entry.text)
    assert await state.sessions.save(
        agent_turn(applied), expected_turn=0, consume_inbox=len(drained)
    )
    assert [e.text for e in await state.inbox.peek(session.id)] == ["three"]


async def test_a_refused_save_consumes_nothing(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.inbox.push(session.id, InboxEntry(kind="stop", author="ada"))
    assert not await state.sessions.save(agent_turn(session), expected_turn=5, consume_inbox=1)
    assert len(await state.inbox.peek(session.id)) == 1


async def test_snapshot_reads_session_rev_inbox_ledger_and_takes_the_lease(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.inbox.push(session.id, InboxEntry(kind="interjection", author="g", text="hi"))
    await state.posts.record(session.id, 0, 0, "111.1")
    snap = await state.sessions.snapshot(session.id, lease_owner="w1")
    assert snap is not None
    assert snap.session == session
    assert snap.rev == 1
    assert [e.text for e in snap.inbox] == ["hi"]
    assert snap.posts_for(0) == {0: "111.1"}
    assert snap.leased is True
    other = await state.sessions.snapshot(session.id, lease_owner="w2")
    assert other is not None and other.leased is False
    again = await state.sessions.snapshot(session.id, lease_owner="w1")
    assert again is not None and again.leased is True  # re-entrant for its owner
    plain = await state.sessions.snapshot(session.id)
    assert plain is not None and plain.leased is None


async def test_save_can_ack_the_job_enqueue_the_next_and_release_the_lease_in_one_step(
    state: State,
) -> None:
    await state.queue.ensure_group()
    session = make_session()
    await state.sessions.create(session, enqueue=True)
    [job] = await state.queue.take("w1")
    snap = await state.sessions.snapshot(session.id, lease_owner="w1")
    assert snap is not None and snap.leased
    assert await state.sessions.save(
        agent_turn(snap.session),
        expected_turn=job.turn,
        expected_rev=snap.rev,
        ack=job,
        enqueue_next=True,
        release_lease="w1",
    )
    assert await state.leases.holder(session.id) is None
    stats = await state.queue.stats()
    assert (stats.backlog, stats.pending) == (1, 0)
    [nxt] = await state.queue.take("w2")
    assert (nxt.session_id, nxt.turn) == (session.id, 1)


async def test_a_live_session_keeps_the_live_ttl(state: State, backend: Redis) -> None:
    session = make_session()
    await state.sessions.create(session)
    ttl = await backend.ttl(state.keys.session(session.id))
    assert 89 * DAY < ttl <= 90 * DAY


async def test_finishing_gives_the_session_and_its_keys_the_finished_ttl(
    state: State, backend: Redis
) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.inbox.push(session.id, InboxEntry(kind="lock", author="ada"))
    await state.posts.record(session.id, 0, 0, "1.1")
    assert await state.sessions.save(locked(agent_turn(session)), expected_turn=0)
    o = session.origin
    assert o.channel_id and o.thread_ts
    for key in (
        state.keys.session(session.id),
        state.keys.inbox(session.id),
        state.keys.posts(session.id),
        state.keys.thread("T1", o.channel_id, o.thread_ts),
    ):
        assert 29 * DAY < await backend.ttl(key) <= 30 * DAY, key


async def test_a_finished_session_expires_after_its_ttl(real_redis: Redis, prefix: str) -> None:
    state = State.create(real_redis, prefix=prefix, finished_ttl_s=1)
    session = make_session()
    await state.sessions.create(session)
    assert await state.sessions.save(locked(agent_turn(session)), expected_turn=0)
    assert 0 < await real_redis.pttl(state.keys.session(session.id)) <= 1000
    await asyncio.sleep(1.1)
    assert await state.sessions.load(session.id) is None
    o = session.origin
    assert o.channel_id and o.thread_ts
    assert await state.threads.lookup("T1", o.channel_id, o.thread_ts) is None


async def test_finishing_frees_the_running_slots(state: State) -> None:
    session = make_session()
    o = session.origin
    assert await state.running.try_add(session.id, o.user_id, o.team_id, max_user=1, max_team=1)
    await state.sessions.create(session)
    assert await state.running.count_user("U1", "T1") == 1
    stopped = session.model_copy(update={"status": SessionStatus.STOPPED})
    assert await state.sessions.save(stopped, expected_turn=0)
    assert await state.running.count_user("U1", "T1") == 0
    assert await state.running.count_team("T1") == 0
