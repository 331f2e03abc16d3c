"""Redis fixtures and builders for the state tests.

Tests run against the real Redis on database 13 (override with
SORA_TEST_REDIS_URL) and, where parametrized, the embedded fakeredis. Every
test gets its own random key prefix and deletes only its own keys afterwards:
nothing is ever flushed, and parallel runs cannot collide. If the real Redis
is unreachable the tests fail, loudly; they never skip.

A test module takes the fixtures with `from tests.redis_fixtures import *`
(`__all__` lists only fixtures) and imports the builders by name. (There is
no conftest to register them; `pytest_plugins` in a module that also imports
the builders makes pytest warn that it cannot rewrite this module.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.dialogue.models import (
    Draft,
    LockedPrompt,
    LockReason,
    Origin,
    PromptParts,
    Session,
    SessionStatus,
    Speaker,
    Turn,
    Verdict,
)
from bot.dialogue.profiles import resolve_persona, resolve_target
from state import LibraryEntry, State, connect, embedded
from tests import redis_cluster

__all__ = [
    "backend",
    "cluster_url",
    "prefix",
    "real_redis",
    "real_state",
    "redis_url",
    "state",
]

REDIS_TEST_URL = os.environ.get("SORA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# The state tests run on each; a module whose tests take `real_redis` or `real_state` runs
# them on the cluster too with ON_CLUSTER_TOO (tests/conftest.py).
BACKENDS = ("redis", "fakeredis", "cluster")


async def real_client() -> Redis:
    client = Redis.from_url(REDIS_TEST_URL, decode_responses=True, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as e:
        await client.aclose()
        pytest.fail(
            f"the state tests need a Redis at {REDIS_TEST_URL} (set SORA_TEST_REDIS_URL): {e}",
            pytrace=False,
        )
    return client


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Delete the test's keys (on a cluster SCAN walks every primary, and DEL of keys in
    many slots is split by redis-py into one DEL per slot)."""
    batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
    if batch:
        await client.delete(*batch)


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A real 3-master Redis Cluster: SORA_TEST_REDIS_CLUSTER_URL (scripts/test starts one),
    or one started here for this test run (tests.redis_cluster)."""
    url = os.environ.get("SORA_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="sora-cluster-") as where:
        try:
            yield redis_cluster.start(Path(where))
        finally:
            redis_cluster.stop(Path(where))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The real Redis's URL, or with the "cluster" parameter the test cluster's (a node of
    it: the app finds the rest)."""
    if getattr(request, "param", "redis") == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return REDIS_TEST_URL


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def _real_under(prefix: str, url: str = REDIS_TEST_URL) -> AsyncIterator[Redis]:
    """A client of the real test database, or of the cluster; the test's keys are deleted
    afterwards."""
    client = await real_client() if url == REDIS_TEST_URL else await connect(url)
    try:
        yield client
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


@pytest.fixture
async def real_redis(prefix: str, redis_url: str) -> AsyncIterator[Redis]:
    async with _real_under(prefix, redis_url) as client:
        yield client


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Redis]:
    """The real Redis, the embedded fakeredis, then the Redis Cluster."""
    if request.param == "fakeredis":
        client = embedded()
        yield client
        await client.aclose()
        return
    url = request.getfixturevalue("cluster_url") if request.param == "cluster" else REDIS_TEST_URL
    async with _real_under(prefix, url) as client:
        yield client


@pytest.fixture
def state(backend: Redis, prefix: str) -> State:
    return State.create(backend, prefix=prefix)


@pytest.fixture
def real_state(real_redis: Redis, prefix: str) -> State:
    return State.create(real_redis, prefix=prefix)


# ---- builders ------------------------------------------------------------------------


def make_session(**kw: Any) -> Session:
    origin = kw.pop(
        "origin",
        Origin(
            surface="slack",
            channel_id="C1",
            thread_ts=f"{uuid.uuid4().int % 10**10}.000100",
            user_id="U1",
            user_name="ada",
            team_id="T1",
        ),
    )
    return Session(
        idea=kw.pop("idea", "A lighthouse keeper finds a message in a bottle"),
        persona=resolve_persona(kw.pop("persona", "director")),
        target=resolve_target(kw.pop("target", "sora-2")),
        max_rounds=kw.pop("max_rounds", 6),
        origin=origin,
        **kw,
    )


def make_draft(version: int = 1) -> Draft:
    return Draft(
        version=version,
        title="Threshold.",
        prompt_text=f"Version {version}: a lighthouse keeper on a wet stone stair, slow push-in.",
        duration_seconds=8,
        size="1280x720",
        target="sora-2",
        parts=PromptParts(
            subject="an old lighthouse keeper",
            setting="a lighthouse stair during a storm",
            action_beats=["he climbs", "he reads"],
            camera="35mm, slow push-in",
            lighting_palette="slate blue and amber",
            sound="wind",
            style="cinematic realism",
            avoid=["on-screen text"],
        ),
    )


def agent_turn(session: Session, text: str = "...") -> Session:
    """`session` with the next agent turn appended (a copy; the argument is untouched)."""
    n = session.next_turn
    speaker = session.next_speaker
    turn = Turn(
        index=len(session.turns),
        speaker=speaker,
        author=session.persona.display_name if speaker == Speaker.PERSONA else "Sora Copilot",
        text=text,
        round=session.next_round,
        draft=make_draft(n // 2 + 1) if speaker == Speaker.COPILOT else None,
        verdict=Verdict(decision="revise") if speaker == Speaker.PERSONA else None,
    )
    return session.model_copy(update={"turns": [*session.turns, turn]})


def human_turn(session: Session, text: str, author: str = "grace") -> Session:
    turn = Turn(
        index=len(session.turns),
        speaker=Speaker.HUMAN,
        author=author,
        text=text,
        round=session.next_round,
    )
    return session.model_copy(update={"turns": [*session.turns, turn]})


def locked(session: Session, *, at: datetime | None = None) -> Session:
    draft = session.latest_draft or make_draft()
    return session.model_copy(
        update={
            "status": SessionStatus.LOCKED,
            "locked": LockedPrompt(
                draft=draft,
                locked_by="Mara",
                locked_at=at or datetime.now(UTC),
                reason=LockReason.APPROVED,
            ),
        }
    )


def minutes_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=n)


# ---- a Redis server of the test's own ----------------------------------------------------


class OwnRedis:
    """A `redis-server` this test starts on a free loopback port, in a directory of its own.

    For what must never be done to the shared server: CONFIG SET, filling its memory,
    restarting it. `restart()` stops it and starts it again on the same port and
    directory (with AOF on, the data survives, as in production).
    """

    def __init__(self, directory: str, *args: str) -> None:
        self.directory = directory
        self.args = args
        self.port = _free_port()
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("the test's own redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def own_redis(directory: str, *args: str) -> Any:
    """Start an `OwnRedis` (extra `redis-server` arguments in `args`); stopped afterwards."""
    server = OwnRedis(directory, *args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def library_entry(
    *,
    title: str,
    prompt: str,
    minutes: int = 5,
    channel: str = "C1",
    user: str = "U1",
    name: str | None = None,
    team: str | None = "T1",
    target: str = "sora-2",
    persona: str = "director",
) -> LibraryEntry:
    """A locked session's library entry with this caption and prompt, locked `minutes` ago."""
    origin = Origin(
        surface="slack",
        channel_id=channel,
        thread_ts="1700000000.000100",
        user_id=user,
        user_name=name or user.lower(),
        team_id=team,
    )
    session = locked(
        agent_turn(make_session(origin=origin, target=target, persona=persona)),
        at=minutes_ago(minutes),
    )
    assert session.locked is not None
    draft = make_draft().model_copy(update={"title": title, "prompt_text": prompt})
    session = session.model_copy(
        update={"locked": session.locked.model_copy(update={"draft": draft})}
    )
    return LibraryEntry.from_session(session)
