"""The team library's search index: words, target, persona and person, per workspace,
newest first, hiding what a viewer may not see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from state import LibraryEntry, State
from state.search import SearchPage, query_terms, terms_of
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import library_entry
from tests.support import run_cli


def entry(*, title: str, prompt: str, minutes: int, **kw: Any) -> LibraryEntry:
    return library_entry(title=title, prompt=prompt, minutes=minutes, **kw)


async def test_a_query_finds_entries_by_words_target_and_person_newest_first(
    state: State,
) -> None:
    rain = entry(title="Night rain", prompt="A neon street in the rain at night.", minutes=30)
    dawn = entry(
        title="Dawn",
        prompt="A fishing boat at dawn, calm sea.",
        minutes=20,
        user="U2",
        name="grace",
        target="sora-2-pro",
    )
    storm = entry(title="Storm", prompt="Rain lashes a lighthouse at night.", minutes=10)
    for e in (rain, dawn, storm):
        await state.library.add(e)

    def ids(page: SearchPage) -> list[str]:
        return [e.id for e in page.entries]

    assert ids(await state.index.search("T1", query_terms("rain night"))) == [storm.id, rain.id]
    assert ids(await state.index.search("T1", query_terms("NEON"))) == [rain.id]
    assert ids(await state.index.search("T1", query_terms("target:sora-2-pro"))) == [dawn.id]
    assert ids(await state.index.search("T1", query_terms("by:<@U2>"))) == [dawn.id]
    assert ids(await state.index.search("T1", query_terms("by:grace sea"))) == [dawn.id]
    assert ids(await state.index.search("T1", query_terms("persona:director dawn"))) == [dawn.id]
    assert ids(await state.index.search("T1", query_terms("rain sea"))) == []
    assert ids(await state.index.search("T1")) == [storm.id, dawn.id, rain.id]


async def test_pages_skip_hidden_channels_and_say_whether_more_follow(state: State) -> None:
    made = [
        entry(
            title=f"Shot {i}", prompt="rain", minutes=100 - i, channel="G9" if i % 3 == 0 else "C1"
        )
        for i in range(10)
    ]
    for e in made:
        await state.library.add(e)
    visible = [e.id for e in reversed(made) if e.channel_id == "C1"]
    first = await state.index.search("T1", ["rain"], hidden=["G9"], limit=4)
    second = await state.index.search("T1", ["rain"], hidden=["G9"], offset=4, limit=4)
    assert [e.id for e in first.entries] == visible[:4] and first.more
    assert [e.id for e in second.entries] == visible[4:] and not second.more
    assert await state.index.channels("T1") == {"C1", "G9"}


async def test_another_workspace_never_sees_an_entry_and_delete_removes_every_term(
    state: State,
) -> None:
    mine = entry(title="Rain", prompt="rain on glass", minutes=5)
    theirs = entry(title="Rain", prompt="rain on tin", minutes=4, team="T2")
    await state.library.add(mine)
    await state.library.add(theirs)
    assert [e.id for e in (await state.index.search("T2", ["rain"])).entries] == [theirs.id]
    assert await state.library.delete(mine.id, channel="C1", user="U1", team="T1")
    assert (await state.index.search("T1", ["rain"])).entries == []
    assert (await state.index.search("T1")).entries == []
    for term in terms_of(mine):
        assert await state.redis.exists(state.keys.library_term("T1", term)) == 0


def test_a_query_reads_fields_and_ignores_stop_words() -> None:
    assert query_terms("The rain, target:Sora-2 persona:Director by:<@U123|ada>") == [
        "rain",
        "t:sora-2",
        "p:director",
        "u:U123",
    ]
    assert query_terms("") == []


async def test_a_delete_is_of_one_workspaces_entry(state: State) -> None:
    mine = entry(title="Rain", prompt="rain on glass", minutes=5)
    await state.library.add(mine)
    assert not await state.library.delete(mine.id, channel="C1", user="U1", team="T2")
    assert len((await state.index.search("T1", ["rain"])).entries) == 1
    assert await state.library.delete(mine.id, channel="C1", user="U1", team="T1")
    assert (await state.index.search("T1", ["rain"])).entries == []


async def test_a_backfill_indexes_the_entries_locked_before_the_index(state: State) -> None:
    index, state.library.index = state.library.index, None  # as a build before the index
    old = [
        entry(title="Rain", prompt="rain on glass", minutes=9),
        entry(title="Rain", prompt="rain on tin", minutes=8, team=None),
    ]
    for e in old:
        await state.library.add(e)
    state.library.index = index
    assert (await state.index.search("T1", ["rain"])).entries == []
    assert await state.index.backfill(state.library, team_for_unknown="T1", page=1) == 2
    assert [e.id for e in (await state.index.search("T1", ["rain"])).entries] == [
        old[1].id,
        old[0].id,
    ]


def test_the_backfill_command_refuses_a_team_that_is_no_workspace_id(tmp_path: Path) -> None:
    done = run_cli(
        "library-index",
        "--team",
        "nope",
        cwd=tmp_path,
        env={"REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert done.returncode != 0
    assert b"--team takes a workspace id" in done.stderr and b"Traceback" not in done.stderr
