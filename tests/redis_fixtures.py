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
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
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
from state import LibraryEntry, State, embedded

__all__ = ["backend", "prefix", "real_redis", "real_state", "state"]

REDIS_TEST_URL = os.environ.get("SORA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
BACKENDS = ("redis", "fakeredis")


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
    batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
    if batch:
        await client.delete(*batch)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def _real_under(prefix: str) -> AsyncIterator[Redis]:
    """A client of the real test database; the test's keys are deleted afterwards."""
    client = await real_client()
    try:
        yield client
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


@pytest.fixture
async def real_redis(prefix: str) -> AsyncIterator[Redis]:
    async with _real_under(prefix) as client:
        yield client


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Redis]:
    """The real Redis, then the embedded fakeredis."""
    if request.param == "fakeredis":
        client = embedded()
        yield client
        await client.aclose()
        return
    async with _real_under(prefix) as client:
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
