"""Redis as operators run it: the eviction policy checked at start, a full Redis named as
such, a restart that costs no failed command, a URL's password never printed.

Everything that changes a server's configuration, fills its memory or restarts it runs on
a `redis-server` the test starts itself (`own_redis`), never on the shared one.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from bot.cli import open_state
from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Session, SessionStatus
from bot.llm.offline import OfflineModel
from bot.sessions import Invoker, Refused, Sessions
from bot.slack.roots import Roots
from bot.surfaces.recording import RecordingSurface
from bot.worker import Worker, WorkerConfig
from state import State, StateMisconfigured, StateUnavailable, connect, describe, is_full, redact
from state.health import check_eviction
from tests.redis_fixtures import own_redis
from tests.support import make_session, run_cli, wait_until

SECRET_URLS = [
    "redis://:PW#k2@127.0.0.1:1/0",
    "redis://:PW/k2@127.0.0.1:1/0",
    "redis://:PW?k2@127.0.0.1:1/0",
    "redis://user:PW@k2@127.0.0.1:1/0",
    "rediss://default:PW%2Fk2@127.0.0.1:1/0",
    "redis://127.0.0.1:1/0?password=PW",
    "redis//:PW@not a url",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_redacted_url_never_shows_the_password(url: str) -> None:
    shown = redact(url)
    assert "PW" not in shown and "k2" not in shown
    assert "***" in shown


def test_redact_keeps_what_helps_find_the_server() -> None:
    assert redact("redis://:PW#k2@cache.example:6380/2") == "redis://:***@cache.example:6380/2"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize("url", SECRET_URLS)
async def test_a_bad_or_unreachable_url_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(StateUnavailable) as err:
        await connect(url, connect_timeout=1)
    message = str(err.value)
    assert "PW" not in message and "k2" not in message
    assert "\n" not in message


def test_serve_worker_and_run_never_print_the_password(tmp_path: Path) -> None:
    for args in (["worker", "--surface", "recording"], ["serve"], ["run", "x", "--offline"]):
        p = run_cli(
            *args,
            cwd=tmp_path,
            env={
                "REDIS_URL": "redis://:PW#k2@127.0.0.1:1/0",
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": "s",
            },
        )
        err = p.stderr.decode()
        assert p.returncode == 2, err
        assert "PW" not in err and "k2" not in err and "Traceback" not in err
        assert err.count("\n") == 1, err


# ---- the eviction policy --------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
async def test_an_evicting_policy_is_refused_with_the_fix_in_one_line(
    tmp_path: Path, policy: str
) -> None:
    with own_redis(str(tmp_path)) as server:
        redis = await connect(server.url)
        try:
            assert await check_eviction(redis) is None  # redis-server's default: noeviction
            await redis.config_set("maxmemory-policy", policy)
            with pytest.raises(StateMisconfigured) as err:
                await check_eviction(redis)
            line = str(err.value)
            assert policy in line and "maxmemory-policy noeviction" in line
            assert "REDIS_EVICTION_CHECK=warn" in line and "\n" not in line
            warning = await check_eviction(redis, mode="warn")
            assert warning is not None and policy in warning
        finally:
            await redis.aclose()


async def test_a_policy_that_cannot_be_read_is_refused_unless_downgraded_to_a_warning(
    tmp_path: Path,
) -> None:
    # A managed Redis that hides CONFIG, as many plans do.
    with own_redis(str(tmp_path), "--rename-command", "CONFIG", "") as server:
        settings = Settings(redis_url=server.url, _env_file=None)  # type: ignore[call-arg]
        with pytest.raises(StateMisconfigured, match="REDIS_EVICTION_CHECK=warn"):
            await open_state(settings, prefix="p", err=io.StringIO(), app=True)
        err = io.StringIO()
        settings = Settings(
            redis_url=server.url,
            redis_eviction_check="warn",
            _env_file=None,  # type: ignore[call-arg]
        )
        state = await open_state(settings, prefix="p", err=err, app=True)
        await state.redis.aclose()
        assert err.getvalue().startswith("Warning: ") and err.getvalue().count("\n") == 1


def test_the_worker_refuses_an_evicting_redis_at_start(tmp_path: Path) -> None:
    with own_redis(str(tmp_path), "--maxmemory-policy", "allkeys-lru") as server:
        p = run_cli("worker", "--surface", "recording", cwd=tmp_path, env={"REDIS_URL": server.url})
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "allkeys-lru" in err and "noeviction" in err and err.count("\n") == 1


# ---- a full Redis -----------------------------------------------------------------------


async def _fill(redis: Redis) -> None:
    """Write until Redis refuses even a small write for want of memory.

    Large chunks first, then small ones: a refused large write can leave Redis just
    under its limit (how far under depends on its buffers), where a small write fits.
    """
    for size in (100_000, 1_000, 10):
        for i in range(2000):
            try:
                await redis.set(f"filler:{size}:{i}", "x" * size)
            except Exception as e:
                assert is_full(e), e
                break
        else:
            raise AssertionError("Redis never filled up")


async def test_a_full_redis_is_reported_as_full_to_the_user(tmp_path: Path) -> None:
    with own_redis(str(tmp_path), "--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as s:
        redis = await connect(s.url)
        try:
            await _fill(redis)
            state = State.create(redis, prefix="full")
            sessions = Sessions(state=state, settings=Settings(), slack=Roots(AsyncWebClient()))
            with pytest.raises(Refused) as err:
                await sessions.reserve(
                    make_session(), invoker=Invoker(channel_id="C1", user_id="U1")
                )
            assert str(err.value).startswith("Redis is full: ")
            assert "did not answer" not in str(err.value)
        finally:
            await redis.aclose()


def test_describe_never_repeats_redis_py_text() -> None:
    from redis.exceptions import ConnectionError, ResponseError

    e = ConnectionError("Error 111 connecting to redis://:PW@h:1. Connection refused.")
    assert "PW" not in describe(e)
    oom = ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    assert is_full(oom) and describe(oom).startswith("Redis is full: ")


# ---- a restart ----------------------------------------------------------------------------


async def test_a_restart_costs_no_failed_command(tmp_path: Path) -> None:
    """With AOF the data survives a restart; the pool's connections do not. Each stale
    connection is retried at once on a fresh one, so no command fails."""
    with own_redis(str(tmp_path), "--appendonly", "yes", "--appendfsync", "always") as server:
        redis = await connect(server.url)
        try:
            state = State.create(redis, prefix="restart")
            session = make_session()
            await state.sessions.create(session, enqueue=True)
            # Several pooled connections, all of which the restart makes stale.
            await asyncio.gather(*(redis.blpop(["nothing"], 0.05) for _ in range(4)))
            server.restart()
            for _ in range(6):  # every pooled connection, and a Lua script (reloaded)
                snap = await state.sessions.snapshot(session.id)
                assert snap is not None and snap.session.id == session.id
            assert await state.queue.stats()
        finally:
            await redis.aclose()


async def test_a_worker_carries_its_sessions_through_a_restart_without_reclaim(
    tmp_path: Path,
) -> None:
    """Redis restarts (AOF on) while a worker is mid-session, and stays down a moment, so
    that commands fail outright, not only on stale connections. The sessions still lock:
    with RECLAIM_IDLE_MS at ten minutes, nothing but the worker's own retries could have
    moved them within the wait."""
    with own_redis(str(tmp_path), "--appendonly", "yes", "--appendfsync", "always") as server:
        redis = await connect(server.url)
        state = State.create(redis, prefix="restart")
        worker = Worker(
            state=state,
            engine=Engine(model=OfflineModel(latency=0.05)),
            surface=RecordingSurface(redis, state.keys),
            config=WorkerConfig(
                concurrency=4,
                lease_ttl_ms=300_000,
                reclaim_idle_ms=600_000,
                block_ms=50,
                sweep_every_s=600,
            ),
        )
        sessions = [make_session() for _ in range(3)]
        for s in sessions:
            await state.sessions.create(s, enqueue=True)
        stopping = asyncio.Event()
        running = asyncio.create_task(worker.run(stopping))
        try:

            async def under_way() -> bool:
                stored = [await state.sessions.load(s.id) for s in sessions]
                return all(s is not None and len(s.turns) >= 2 for s in stored)

            await wait_until(under_way, "the sessions to get going")
            server.stop()
            await asyncio.sleep(0.5)  # down: every command now fails, and is retried later
            server.start()

            async def all_locked() -> bool:
                stored = [await state.sessions.load(s.id) for s in sessions]
                return all(s is not None and s.status == SessionStatus.LOCKED for s in stored)

            await wait_until(all_locked, "every session to lock after the restart", within=30)
        finally:
            stopping.set()
            await asyncio.gather(running, return_exceptions=True)
            await redis.aclose()


async def test_a_running_session_whose_turn_cannot_be_saved_says_redis_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis fills up while the model writes a turn: the save is refused for want of
    memory; the log and the session's thread say "Redis is full", and nothing is
    half-written."""
    with own_redis(str(tmp_path), "--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as s:
        redis = await connect(s.url)
        state = State.create(redis, prefix="full")
        told: list[str] = []

        async def on_full(session: Session, why: str) -> None:
            told.append(why)

        worker = Worker(
            state=state,
            engine=Engine(model=OfflineModel(latency=0.5)),
            surface=RecordingSurface(redis, state.keys),
            config=WorkerConfig(block_ms=50, sweep_every_s=600),
            on_store_full=on_full,
        )
        session = make_session()
        await state.sessions.create(session, enqueue=True)
        stopping = asyncio.Event()
        running = asyncio.create_task(worker.run(stopping))
        try:
            await wait_until(
                lambda: redis.exists(state.keys.lease(session.id)), "the turn to begin"
            )
            # While the model writes, Redis's limit drops well below what it holds (filling
            # it would leave it hovering at the limit, as buffers come and go).
            used = int((await redis.info("memory"))["used_memory"])
            await redis.config_set("maxmemory", used // 2)
            await wait_until(lambda: told, "the thread to be told")
            assert told[0].startswith("Redis is full: ")
            assert any("Redis is full: " in r.getMessage() for r in caplog.records)
            stored = await state.sessions.load(session.id)
            assert stored is not None and stored.turns == []  # nothing half-written
        finally:
            stopping.set()
            await asyncio.gather(running, return_exceptions=True)
            await redis.aclose()
