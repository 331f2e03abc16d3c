"""The prompt library: locked prompts forever, newest first, per channel and per user."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.dialogue.models import Origin
from state import LibraryEntry, State, UnknownSchema
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, locked, make_session, minutes_ago


def entry(channel: str | None, user: str | None, minutes: int, team: str = "T1") -> LibraryEntry:
    origin = Origin(
        surface="slack", channel_id=channel, thread_ts="1.1", user_id=user, team_id=team
    )
    session = locked(agent_turn(make_session(origin=origin)), at=minutes_ago(minutes))
    return LibraryEntry.from_session(session)


async def test_an_entry_is_kept_without_expiry_and_reads_back_equal(
    state: State, backend: Redis
) -> None:
    e = entry("C1", "U1", 5)
    assert await state.library.add(e)
    assert await state.library.get(e.id, team="T1") == e
    assert await backend.ttl(state.keys.library_prompt("T1", e.id)) == -1
    assert await state.library.get("nope", team="T1") is None


async def test_from_session_takes_the_locked_prompt_byte_for_byte(state: State) -> None:
    session = locked(agent_turn(make_session()))
    e = LibraryEntry.from_session(session)
    assert session.locked is not None and session.latest_draft is not None
    assert e.locked == session.locked
    assert (e.id, e.session_id, e.persona) == (session.id, session.id, "Tomás Ferreira")
    assert e.locked.draft.prompt_text == session.latest_draft.prompt_text


async def test_recent_is_newest_first_per_channel_per_user_and_overall(state: State) -> None:
    a = entry("C1", "U1", 30)
    b = entry("C1", "U2", 20)
    c = entry("C2", "U1", 10)
    d = entry(None, None, 5)  # a terminal session: in the library, in no channel
    for e in (b, d, a, c):
        await state.library.add(e)
    assert [e.id for e in await state.library.recent(team="T1")] == [d.id, c.id, b.id, a.id]
    assert [e.id for e in await state.library.recent(team="T1", channel="C1")] == [b.id, a.id]
    assert [e.id for e in await state.library.recent(team="T1", user="U1")] == [c.id, a.id]
    assert [e.id for e in await state.library.recent(team="T1", channel="C1", user="U1")] == [a.id]
    assert [e.id for e in await state.library.recent(team="T1", limit=2)] == [d.id, c.id]
    assert await state.library.recent(team="T1", channel="C9") == []
    assert await state.library.recent(team="T1", limit=0) == []


async def test_adding_the_same_session_twice_does_not_duplicate_it(state: State) -> None:
    e = entry("C1", "U1", 5)
    assert await state.library.add(e)
    assert not await state.library.add(e)
    assert [x.id for x in await state.library.recent(team="T1", channel="C1")] == [e.id]
    assert [x.id for x in await state.library.recent(team="T1", user="U1")] == [e.id]


async def test_a_filtered_listing_finds_rare_matches_deep_in_the_index(state: State) -> None:
    mine = entry("C1", "U1", 500)
    await state.library.add(mine)
    for i in range(60):
        await state.library.add(entry("C1", "U2", i))
    assert [e.id for e in await state.library.recent(team="T1", channel="C1", user="U1")] == [
        mine.id
    ]


async def test_an_entry_from_a_newer_build_raises_unknown_schema(
    state: State, backend: Redis
) -> None:
    e = entry("C1", "U1", 5)
    await state.library.add(e)
    newer = e.model_dump_json().replace('"schema_version":1', '"schema_version":7')
    await backend.set(state.keys.library_prompt("T1", e.id), newer)
    try:
        await state.library.get(e.id, team="T1")
    except UnknownSchema as err:
        assert "schema_version 7" in str(err)
    else:
        raise AssertionError("a newer entry was read as if it were ours")


async def test_two_workspaces_with_the_same_channel_and_user_ids_have_two_libraries(
    state: State,
) -> None:
    mine, theirs = entry("C1", "U1", 2, team="T1"), entry("C1", "U1", 1, team="T2")
    for e in (mine, theirs):
        await state.library.add(e)
    for team, e in (("T1", mine), ("T2", theirs)):
        for listing in (
            await state.library.recent(team=team),
            await state.library.recent(team=team, channel="C1"),
            await state.library.recent(team=team, user="U1"),
        ):
            assert [x.id for x in listing] == [e.id]
    assert await state.library.get(theirs.id, team="T1") is None
    assert await state.library.delete(theirs.id, channel="C1", user="U1", team="T1") is False
    assert await state.library.get(theirs.id, team="T2") == theirs
