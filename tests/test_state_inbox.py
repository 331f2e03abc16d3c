"""Inbox and event dedupe: what web processes write for the worker to apply."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bot.dialogue.models import SessionStatus
from state import InboxEntry, PushResult, State, UnknownSchema
from state.inbox import Inbox
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, make_session


def said(text: str, **kw: str) -> InboxEntry:
    return InboxEntry(kind="interjection", author="grace", user_id="U2", text=text, **kw)


async def test_peek_returns_entries_in_arrival_order_without_removing_them(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    stop = InboxEntry(kind="stop", author="ada", user_id="U1")
    warmer = said("warmer light")
    assert await state.inbox.push(session.id, warmer) == PushResult.QUEUED
    assert await state.inbox.push(session.id, stop) == PushResult.QUEUED
    assert await state.inbox.peek(session.id) == [warmer, stop]
    assert await state.inbox.peek(session.id) == [warmer, stop]


async def test_fifty_concurrent_pushes_are_all_kept_in_arrival_order(
    state: State, backend: Redis
) -> None:
    session = make_session()
    await state.sessions.create(session)

    # Five producers push ten replies each, all at once, each push on its own
    # pooled connection. Across producers Redis decides the order; what each producer
    # pushed after another push returned must come after it, and none is lost.
    async def producer(p: int) -> None:
        inbox = Inbox(backend, state.keys)
        for i in range(10):
            assert await inbox.push(session.id, said(f"{p}.{i}")) == PushResult.QUEUED

    await asyncio.gather(*(producer(p) for p in range(5)))
    texts = [e.text for e in await state.inbox.peek(session.id)]
    assert len(texts) == 50
    for p in range(5):
        assert [t for t in texts if t.startswith(f"{p}.")] == [f"{p}.{i}" for i in range(10)]


async def test_push_deduplicates_a_retried_slack_event(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    assert await state.inbox.push(session.id, said("hi"), event_id="Ev1") == PushResult.QUEUED
    assert await state.inbox.push(session.id, said("hi"), event_id="Ev1") == PushResult.DUPLICATE
    assert len(await state.inbox.peek(session.id)) == 1


async def test_push_to_a_missing_or_finished_session_is_refused(state: State) -> None:
    assert await state.inbox.push("ghost", said("hello?")) == PushResult.NO_SESSION
    session = make_session()
    await state.sessions.create(session)
    stopped = agent_turn(session).model_copy(update={"status": SessionStatus.STOPPED})
    assert await state.sessions.save(stopped, expected_turn=0)
    assert await state.inbox.push(session.id, said("too late")) == PushResult.FINISHED


async def test_a_full_inbox_refuses_interjections_but_still_takes_commands(
    backend: Redis, state: State
) -> None:
    session = make_session()
    await state.sessions.create(session)
    small = Inbox(backend, state.keys, max_entries=2)
    assert await small.push(session.id, said("1")) == PushResult.QUEUED
    assert await small.push(session.id, said("2")) == PushResult.QUEUED
    assert await small.push(session.id, said("3")) == PushResult.FULL
    stop = InboxEntry(kind="stop", author="ada")
    assert await small.push(session.id, stop) == PushResult.QUEUED


async def test_the_inbox_expires_with_its_session(state: State, backend: Redis) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.inbox.push(session.id, said("hi"))
    session_ttl = await backend.pttl(state.keys.session(session.id))
    inbox_ttl = await backend.pttl(state.keys.inbox(session.id))
    # The inbox's TTL is set when it is pushed, a moment after the session's: allow that moment
    # (a second, for a loaded machine) rather than a race on milliseconds.
    assert 0 < inbox_ttl <= session_ttl + 1000


async def test_an_entry_this_build_cannot_read_is_reported_not_skipped(
    state: State, backend: Redis
) -> None:
    session = make_session()
    await state.sessions.create(session)
    await backend.rpush(state.keys.inbox(session.id), '{"kind": "teleport", "author": "x"}')
    try:
        await state.inbox.peek(session.id)
    except UnknownSchema as e:
        assert f"inbox entry #0 of session {session.id}" in str(e)
    else:
        raise AssertionError("an unreadable entry was silently accepted")


async def test_dedupe_says_first_time_once_per_event(state: State, backend: Redis) -> None:
    assert await state.dedupe.first_time("Ev123", "T1")
    assert not await state.dedupe.first_time("Ev123", "T1")
    assert await state.dedupe.first_time("Ev124", "T1")
    assert await state.dedupe.first_time("Ev123", "T2")  # another workspace's event
    assert 3590 < await backend.ttl(state.keys.event("T1", "Ev123")) <= 3600
