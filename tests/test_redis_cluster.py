"""A real 3-master Redis Cluster: found by asking the server, and what already runs on it.

The cluster comes from SORA_TEST_REDIS_CLUSTER_URL (scripts/test starts one)
or, without it, is started for this test run (tests.redis_fixtures.cluster_url). The state
tests run on it too (`backend`), and the modules that say ON_CLUSTER_TOO.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from state import Keys, connect
from state.connection import is_cluster
from state.installations import Cipher, RedisInstallationStore, RedisOAuthStateStore, new_key
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL
from tests.support import run_cli
from tests.test_state_installations import installation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[Redis]:
    client = await connect(cluster_url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    client.prefix_for_test = prefix  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        # SCAN on a cluster client walks every primary.
        names = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        for name in names:
            await client.delete(name)
        await client.aclose()


async def test_a_node_of_a_cluster_gets_the_cluster_client_with_no_setting(
    cluster: Redis,
) -> None:
    assert is_cluster(cluster)
    prefix = cluster.prefix_for_test  # type: ignore[attr-defined]
    # Keys of many slots, on three primaries: the client follows each to its node.
    names = [f"{prefix}:k{i}" for i in range(30)]
    for name in names:
        await cluster.set(name, name)
    assert [await cluster.get(n) for n in names] == names
    slots = {int(await cluster.cluster_keyslot(n)) for n in names}
    assert len(slots) > 3


async def test_a_single_redis_is_not_taken_for_a_cluster() -> None:
    client = await connect(REDIS_TEST_URL)
    try:
        assert not is_cluster(client)
    finally:
        await client.aclose()


async def test_installations_live_on_a_cluster_one_workspace_per_slot(cluster: Redis) -> None:
    prefix = cluster.prefix_for_test  # type: ignore[attr-defined]
    keys = Keys(prefix=prefix)
    store = RedisInstallationStore(cluster, keys, Cipher([new_key()]))
    for team in ("T0A", "T0B"):
        await store.async_save(installation(team))  # a MULTI: one slot per workspace
    a = await store.async_find_installation(
        enterprise_id=None, team_id="T0A", user_id="U0INSTALLER"
    )
    assert a is not None and a.team_id == "T0A"
    slots = {
        int(await cluster.cluster_keyslot(k))
        for k in (
            keys.installation("T0A"),
            keys.installation_bot("T0A"),
            keys.token_refresh_lock("T0A"),
        )
    }
    assert len(slots) == 1
    await store.async_delete_all(enterprise_id=None, team_id="T0A")
    assert await store.teams() == ["T0B"]
    states = RedisOAuthStateStore(cluster, keys)
    issued = await states.async_issue()
    assert await states.async_consume(issued) and not await states.async_consume(issued)


def test_a_session_runs_on_a_cluster_with_no_setting_but_its_url(
    cluster_url: str, tmp_path: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    result = run_cli(
        "run",
        "A fox crosses a frozen river at dawn",
        "--rounds",
        "1",
        "--offline",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
        env={"REDIS_URL": cluster_url, "REDIS_PREFIX": prefix},
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "Traceback" not in err and "Cluster" not in err
    assert list(tmp_path.glob("session-*.md"))
