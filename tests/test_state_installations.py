"""The Redis installation store: slack_sdk's async interface, encrypted at rest, key rotation."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from slack_sdk.oauth.installation_store.models.installation import Installation

from state import Keys
from state.installations import (
    Cipher,
    OrgWideInstallRefused,
    RedisInstallationStore,
    RedisOAuthStateStore,
    UndecryptableInstallation,
    new_key,
)
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)

TOKEN = "xoxb-T0A-secret-token-value"


def installation(team: str = "T0A", **kw: object) -> Installation:
    values: dict[str, object] = {
        "app_id": "A0FAKE",
        "enterprise_id": "E0ORG",
        "team_id": team,
        "team_name": "Team A",
        "bot_token": TOKEN,
        "bot_id": "B0BOT",
        "bot_user_id": "U0BOT",
        "bot_scopes": "chat:write,commands",
        "bot_refresh_token": "xoxe-1-refresh",
        "bot_token_expires_in": 43_200,
        "user_id": "U0INSTALLER",
    }
    values.update(kw)
    return Installation(**values)  # type: ignore[arg-type]


def store_for(redis: Redis, prefix: str, keys: list[str] | None = None) -> RedisInstallationStore:
    return RedisInstallationStore(redis, Keys(prefix=prefix), Cipher(keys or [KEY]))


KEY = new_key()


async def raw_values(redis: Redis, prefix: str) -> dict[str, str]:
    out = {}
    async for k in redis.scan_iter(match=f"{prefix}:*"):
        if await redis.type(k) == "string":
            out[k] = await redis.get(k)
    return out


async def test_an_installation_is_found_again_and_its_token_is_never_stored_in_clear(
    backend: Redis, prefix: str
) -> None:
    store = store_for(backend, prefix)
    await store.async_save(installation())
    found = await store.async_find_installation(enterprise_id="E0ORG", team_id="T0A")
    assert found is not None and found.bot_token == TOKEN
    assert found.enterprise_id == "E0ORG" and found.bot_user_id == "U0BOT"
    bot = await store.async_find_bot(enterprise_id="E0ORG", team_id="T0A")
    assert bot is not None and bot.bot_token == TOKEN and bot.bot_refresh_token == "xoxe-1-refresh"
    assert await store.teams() == ["T0A"]
    values = await raw_values(backend, prefix)
    assert values, "nothing was stored"
    assert not any(TOKEN in v or "xoxe-1-refresh" in v for v in values.values())
    # Every record of one workspace shares a hash tag (one Redis Cluster slot).
    assert all("{ws:T0A}" in k for k in values)


async def test_two_workspaces_never_see_each_others_installation(
    backend: Redis, prefix: str
) -> None:
    store = store_for(backend, prefix)
    await store.async_save(installation("T0A"))
    await store.async_save(installation("T0B", bot_token="xoxb-T0B-other"))
    a = await store.async_find_bot(enterprise_id=None, team_id="T0A")
    b = await store.async_find_bot(enterprise_id=None, team_id="T0B")
    assert a is not None and b is not None
    assert (a.bot_token, b.bot_token) == (TOKEN, "xoxb-T0B-other")
    assert await store.async_find_bot(enterprise_id=None, team_id="T0C") is None


async def test_a_refreshed_bot_token_is_what_the_installation_answers(
    backend: Redis, prefix: str
) -> None:
    store = store_for(backend, prefix)
    await store.async_save(installation())
    bot = await store.async_find_bot(enterprise_id=None, team_id="T0A")
    assert bot is not None
    bot.bot_token = "xoxb-T0A-refreshed"
    await store.async_save_bot(bot)
    for user in (None, "U0INSTALLER"):
        found = await store.async_find_installation(enterprise_id=None, team_id="T0A", user_id=user)
        assert found is not None and found.bot_token == "xoxb-T0A-refreshed"


async def test_an_org_wide_install_is_refused_and_nothing_is_kept(
    backend: Redis, prefix: str
) -> None:
    store = store_for(backend, prefix)
    with pytest.raises(OrgWideInstallRefused, match="each workspace"):
        await store.async_save(installation(team=None, is_enterprise_install=True))
    assert await raw_values(backend, prefix) == {}
    assert (
        await store.async_find_bot(enterprise_id="E0ORG", team_id=None, is_enterprise_install=True)
        is None
    )


async def test_delete_all_removes_every_key_of_the_workspace_and_no_other(
    real_redis: Redis, prefix: str
) -> None:
    store = store_for(real_redis, prefix)
    await store.async_save(installation("T0A"))
    await store.async_save(installation("T0B"))
    await store.async_delete_all(enterprise_id=None, team_id="T0A")
    left = [k async for k in real_redis.scan_iter(match=f"{prefix}:*")]
    assert left and not any("T0A" in k for k in left)
    assert await store.teams() == ["T0B"]
    assert await store.async_find_installation(enterprise_id=None, team_id="T0A") is None


async def test_a_rotated_key_still_opens_old_records_and_rewrites_them(
    real_redis: Redis, prefix: str
) -> None:
    old, new = new_key(), new_key()
    await store_for(real_redis, prefix, [old]).async_save(installation())
    before = await raw_values(real_redis, prefix)
    rotated = store_for(real_redis, prefix, [new, old])
    bot = await rotated.async_find_bot(enterprise_id=None, team_id="T0A")
    assert bot is not None and bot.bot_token == TOKEN
    assert await rotated.reencrypt_all() == 3  # installation, bot, the installer's record
    # Now the new key alone opens everything; the old one opens nothing.
    only_new = store_for(real_redis, prefix, [new])
    found = await only_new.async_find_installation(
        enterprise_id=None, team_id="T0A", user_id="U0INSTALLER"
    )
    assert found is not None and found.bot_token == TOKEN
    assert (await raw_values(real_redis, prefix)).keys() == before.keys()
    with pytest.raises(UndecryptableInstallation, match="INSTALLATION_ENCRYPTION_KEYS"):
        await store_for(real_redis, prefix, [old]).async_find_bot(enterprise_id=None, team_id="T0A")


@pytest.mark.parametrize("bad", [[], ["not-a-key"], ["short=="]])
def test_a_malformed_encryption_key_is_refused_in_one_line(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="INSTALLATION_ENCRYPTION_KEYS"):
        Cipher(bad)


async def test_an_oauth_state_is_consumed_once(backend: Redis, prefix: str) -> None:
    states = RedisOAuthStateStore(backend, Keys(prefix=prefix))
    issued = await states.async_issue()
    assert await states.async_consume(issued)
    assert not await states.async_consume(issued)
    assert not await states.async_consume("never-issued")


async def test_one_process_at_a_time_holds_the_refresh_lock(real_redis: Redis, prefix: str) -> None:
    store = store_for(real_redis, prefix)
    assert await store.take_refresh_lock("T0A", "one")
    assert not await store.take_refresh_lock("T0A", "two")
    await store.release_refresh_lock("T0A", "two")  # not its lock: nothing happens
    assert not await store.take_refresh_lock("T0A", "two")
    await store.release_refresh_lock("T0A", "one")
    assert await store.take_refresh_lock("T0A", "two")
