"""Key namespacing, connecting (real or embedded), the post ledger, the State container."""

from __future__ import annotations

import inspect
import re

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from bot.config import Settings
from state import (
    EMBEDDED_NOTICE,
    Keys,
    State,
    StateUnavailable,
    connect,
    is_embedded,
    redact,
)
from state.connection import DRIVER_INFO
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL, agent_turn, locked, make_session


def test_every_key_lives_under_the_prefix() -> None:
    keys = Keys(prefix="acme")
    names = [
        keys.session("s"),
        keys.inbox("s"),
        keys.lease("s"),
        keys.posts("s"),
        keys.thread("T1", "C1", "1.2"),
        keys.event("T1", "Ev1"),
        keys.jobs,
        keys.dead_letter,
        keys.ratelimit("T1", "C1"),
        keys.library_prompt("T1", "p"),
        keys.library_all("T1"),
        keys.library_channel("T1", "C1"),
        keys.library_user("T1", "U1"),
        keys.running_user("T1", "U1"),
        keys.running_team("T1"),
    ]
    assert all(n.startswith("acme:") for n in names)
    assert len(set(names)) == len(names)
    assert Keys().session("s") == "sora:{s:s}:session"


def test_a_session_keys_share_one_slot_and_a_workspace_keys_another() -> None:
    keys = Keys(prefix="acme")
    session = {
        key_slot(k.encode())
        for k in (
            keys.session("s1"),
            keys.inbox("s1"),
            keys.lease("s1"),
            keys.posts("s1"),
            keys.recorded("s1"),
            keys.session_event("s1", "Ev1"),
            keys.root_shown("s1"),
        )
    }
    workspace = {
        key_slot(k.encode())
        for k in (
            keys.thread("T1", "C1", "1.2"),
            keys.event("T1", "Ev1"),
            keys.ratelimit("T1", "C1"),
            keys.library_prompt("T1", "p"),
            keys.library_all("T1"),
            keys.running_user("T1", "U1"),
            keys.running_team("T1"),
            keys.running_channel("T1", "C1"),
            keys.update_budget("T1"),
            keys.render("T1", "r1"),
            keys.render_budget_team("T1", "20260101"),
            keys.render_slot("T1", "s1", "draft"),
            keys.workspace_sessions("T1"),
            keys.installation("T1"),
        )
    }
    shared = (keys.jobs, keys.dead_letter, keys.live, keys.render_due)
    queue = {key_slot(k.encode()) for k in shared}
    assert len(session) == len(workspace) == len(queue) == 1
    assert session != workspace


def test_every_key_has_a_hash_tag() -> None:
    # A key added without one would land in a slot of its own, and the first script or
    # MULTI that names it beside another key would fail on a Redis Cluster.
    keys = Keys(prefix="acme")
    made: dict[str, str] = {}
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name.endswith("pattern") or name.endswith("patterns"):
            continue
        if isinstance(member, property):
            made[name] = getattr(keys, name)
        elif inspect.isfunction(member):
            arity = len(inspect.signature(member).parameters) - 1
            made[name] = getattr(keys, name)(*[f"x{i}" for i in range(arity)])
    assert len(made) > 30  # the walk really found the keys
    untagged = {name for name, key in made.items() if not re.search(r"\{[^{}]+\}", key)}
    # Keys only ever named alone in a command (state.installations) may do without one.
    assert untagged == {"installed_teams", "oauth_state"}


def test_two_workspaces_same_channel_and_user_ids_never_share_a_key() -> None:
    keys = Keys()
    for name in ("thread", "ratelimit", "library_channel", "running_channel"):
        make = getattr(keys, name)
        args = ("C1", "1.2") if name == "thread" else ("C1",)
        assert make("T1", *args) != make("T2", *args)
    for name in ("library_user", "running_user"):
        assert getattr(keys, name)("T1", "U1") != getattr(keys, name)("T2", "U1")
    assert keys.event("T1", "Ev1") != keys.event("T2", "Ev1")


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "has space", "x" * 65])
def test_a_prefix_that_could_match_other_namespaces_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Keys(prefix=bad)


async def test_two_prefixes_never_see_each_other(real_redis: Redis, prefix: str) -> None:
    a = State.create(real_redis, prefix=prefix)
    b = State.create(real_redis, prefix=f"{prefix}-other")
    session = make_session()
    try:
        await a.sessions.create(session)
        assert await b.sessions.load(session.id) is None
        await b.sessions.create(session)  # no collision either
    finally:
        async for key in real_redis.scan_iter(match=b.keys.pattern):
            await real_redis.delete(key)


async def test_connect_without_a_url_gives_the_embedded_store_with_lua() -> None:
    redis = await connect(None)
    try:
        assert is_embedded(redis)
        assert "embedded" in EMBEDDED_NOTICE
        assert await redis.eval("return 41 + 1", 0) == 42
    finally:
        await redis.aclose()


async def test_connect_with_a_url_checks_the_server_is_there() -> None:
    redis = await connect(REDIS_TEST_URL)
    try:
        assert not is_embedded(redis)
        assert await redis.ping()
    finally:
        await redis.aclose()


async def test_new_connections_share_one_driver_info_and_still_name_the_library() -> None:
    """A burst that grows the pool must not re-read package metadata per connection."""
    redis = await connect(REDIS_TEST_URL)
    try:
        pool = redis.connection_pool
        conns = [await pool.get_connection() for _ in range(3)]
        try:
            assert all(c.driver_info is DRIVER_INFO for c in conns)
        finally:
            for c in conns:
                await pool.release(c)
        assert DRIVER_INFO.formatted_name == "redis-py"  # what CLIENT SETINFO still sends
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_fails_clearly_without_leaking_the_password() -> None:
    url = "redis://worker:s3cret@127.0.0.1:1/0"
    with pytest.raises(StateUnavailable, match="not reachable") as err:
        await connect(url)
    assert "s3cret" not in str(err.value)
    assert "redis://worker:***@127.0.0.1:1/0" in str(err.value)


def test_redact_hides_only_the_password() -> None:
    assert redact("redis://:pw@h:6380/2") == "redis://:***@h:6380/2"
    assert redact("rediss://u:pw@h/0") == "rediss://u:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


async def test_the_post_ledger_remembers_every_part_of_every_turn(state: State) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.posts.record(session.id, 0, 0, "100.1")
    await state.posts.record(session.id, 0, 1, "100.2")
    await state.posts.record(session.id, 1, 0, "101.1")
    await state.posts.record(session.id, 0, 1, "100.3")  # a redo updated part 1
    assert await state.posts.get(session.id, 0) == {0: "100.1", 1: "100.3"}
    assert await state.posts.get(session.id, 2) == {}
    assert await state.posts.all(session.id) == {0: {0: "100.1", 1: "100.3"}, 1: {0: "101.1"}}


async def test_the_post_ledger_follows_its_session_ttl(state: State, backend: Redis) -> None:
    session = make_session()
    await state.sessions.create(session)
    await state.posts.record(session.id, 0, 0, "100.1")
    assert await backend.ttl(state.keys.posts(session.id)) > 89 * 24 * 3600
    assert await state.sessions.save(locked(agent_turn(session)), expected_turn=0)
    await state.posts.record(session.id, 1, 0, "101.1")  # e.g. the locked-prompt post
    assert await backend.ttl(state.keys.posts(session.id)) <= 30 * 24 * 3600


def test_state_takes_ttls_from_settings(real_redis: Redis) -> None:
    settings = Settings(session_ttl_seconds=123, event_dedupe_ttl_seconds=45)
    state = State.create(real_redis, prefix="unused", settings=settings)
    assert state.sessions.finished_ttl == 123
    assert state.dedupe.ttl_s == 45
    assert State.create(real_redis, settings=settings, finished_ttl_s=9).sessions.finished_ttl == 9
