"""`sora-copilot migrate-keys`: data in the layout before workspaces moves, once."""

from __future__ import annotations

import json
from pathlib import Path

from redis.asyncio import Redis

from bot.dialogue.models import SessionStatus
from state import InboxEntry, LibraryEntry, State
from state.migrate import migrate_keys
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL, agent_turn, locked, make_session
from tests.support import run_cli

ROOT = Path(__file__).resolve().parent.parent


async def write_old_layout(redis: Redis, p: str) -> dict[str, str]:
    """What the previous build kept for one running session, one locked one with a
    library entry, and a render: written as it wrote them (keys without workspaces)."""
    running = agent_turn(make_session())
    done = locked(agent_turn(make_session()))
    o = running.origin
    for s in (running, done):
        await redis.hset(
            f"{p}:session:{s.id}",
            mapping={
                "json": s.model_dump_json(),
                "turn": s.next_turn,
                "rev": 3,
                "messages": len(s.turns),
                "schema": s.schema_version,
                "status": s.status.value,
            },
        )
        await redis.expire(f"{p}:session:{s.id}", 3600)
        await redis.set(f"{p}:thread:{s.origin.channel_id}:{s.origin.thread_ts}", s.id)
    entry = InboxEntry(kind="interjection", author="grace", text="more fog")
    await redis.rpush(f"{p}:inbox:{running.id}", entry.model_dump_json())
    await redis.hset(f"{p}:posts:{running.id}", "0:0", "1700000000.000200")
    await redis.set(f"{p}:lease:{running.id}", "old-worker")
    await redis.hset(f"{p}:live", running.id, f"{o.channel_id} {o.thread_ts} {o.team_id}")
    for key in (f"running:user:{o.user_id}", f"running:team:{o.team_id}"):
        await redis.zadd(f"{p}:{key}", {running.id: 1})
    await redis.xadd(f"{p}:jobs", {"sid": running.id, "turn": str(running.next_turn)})
    await redis.xadd(f"{p}:jobs:dead", {"sid": "gone", "turn": "3", "reason": "max_deliveries"})
    lib = LibraryEntry.from_session(done)
    await redis.set(f"{p}:library:prompt:{done.id}", lib.model_dump_json())
    for key in ("library:all", f"library:channel:{o.channel_id}", f"library:user:{o.user_id}"):
        await redis.zadd(f"{p}:{key}", {done.id: 1})
    team_budget, user_budget = (
        f"{p}:render:budget:team:T1:20260101",
        f"{p}:render:budget:user:T1:U1:20260101",
    )
    await redis.set(team_budget, 8)
    await redis.set(user_budget, 8)
    record = {"id": "r1", "session_id": done.id, "team_id": "T1"}
    await redis.hset(
        f"{p}:render:r1",
        mapping={
            "json": json.dumps(record),
            "rev": 2,
            "sid": done.id,
            "team_key": team_budget,
            "user_key": user_budget,
            "seconds": 8,
        },
    )
    await redis.zadd(f"{p}:render:due", {"r1": 123})
    await redis.set(f"{p}:render:clip:r1", "Y2xpcA==")
    await redis.set(f"{p}:event:Ev1", "1", ex=3600)
    return {"running": running.id, "done": done.id}


async def old_keys(redis: Redis, p: str) -> list[str]:
    return [k async for k in redis.scan_iter(match=f"{p}:*") if ":{" not in k]


async def test_the_old_layout_moves_to_its_workspaces_once(
    real_state: State, real_redis: Redis, prefix: str
) -> None:
    ids = await write_old_layout(real_redis, prefix)
    moved = await migrate_keys(real_state)
    assert (moved.sessions, moved.jobs, moved.library_entries, moved.renders) == (2, 1, 1, 1)
    assert await old_keys(real_redis, prefix) == []

    s = real_state
    snap = await s.sessions.snapshot(ids["running"], lease_owner="new-worker")
    assert snap is not None and snap.leased and snap.rev == 3
    assert [e.text for e in snap.inbox] == ["more fog"] and snap.posts == {
        0: {0: "1700000000.000200"}
    }
    running = snap.session
    o = running.origin
    assert await s.threads.lookup("T1", o.channel_id or "", o.thread_ts or "") == running.id
    assert 0 < await real_redis.ttl(s.keys.session(running.id)) <= 3600
    assert await s.running.count_user("U1", "T1") == 1 and await s.running.count_team("T1") == 1
    assert await real_redis.hexists(s.keys.live, running.id)
    [job] = await s.queue.take("w")
    assert (job.session_id, job.turn, job.team) == (running.id, running.next_turn, "T1")
    [dead] = await s.queue.dead_letters()
    assert dead.reason == "max_deliveries"
    entry = await s.library.get(ids["done"], team="T1")
    assert entry is not None and [e.id for e in await s.library.recent(team="T1")] == [entry.id]
    loaded = await s.renders.load("r1", team="T1")
    assert loaded is not None and loaded[1] == 2
    assert await s.renders.due() == 1
    assert await s.renders.budget_left(
        team="T1", user="U1", day="20260101", team_limit=20, user_limit=20
    ) == (12, 12)
    assert await s.renders.save(
        "r1", loaded[0], team="T1", session_id=ids["done"], expected_rev=2, refund=True
    )
    assert await s.renders.budget_left(  # the refund found the budgets' new names
        team="T1", user="U1", day="20260101", team_limit=20, user_limit=20
    ) == (20, 20)
    done = await s.sessions.load(ids["done"])
    assert done is not None and done.status == SessionStatus.LOCKED

    before = sorted([k async for k in real_redis.scan_iter(match=f"{prefix}:*")])
    again = await migrate_keys(real_state)
    assert (again.sessions, again.jobs, again.library_entries, again.renders) == (0, 0, 0, 0)
    assert sorted([k async for k in real_redis.scan_iter(match=f"{prefix}:*")]) == before


async def test_migrate_keys_is_one_command(real_redis: Redis, prefix: str) -> None:
    await write_old_layout(real_redis, prefix)
    env = {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": prefix}
    first = run_cli("migrate-keys", cwd=ROOT, env=env)
    assert first.returncode == 0, first.stderr.decode()
    assert "Moved 2 sessions, 1 jobs, 1 library entries and 1 renders" in first.stdout.decode()
    second = run_cli("migrate-keys", cwd=ROOT, env=env)
    assert "Moved 0 sessions, 0 jobs" in second.stdout.decode()
