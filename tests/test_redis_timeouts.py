"""Explicit Redis timeouts: a stalled Redis is a clear error soon, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.exceptions import TimeoutError as RedisTimeout

from bot.cli import open_state
from bot.config import Settings
from state import connect
from tests.redis_fixtures import REDIS_TEST_URL


class StallingProxy:
    """A loopback TCP proxy to the test Redis that can stop answering (a stalled Redis:
    connections stay open, commands get no reply)."""

    def __init__(self) -> None:
        target = urlsplit(REDIS_TEST_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.db = target.path or "/0"
        self.flowing = asyncio.Event()  # cleared: Redis stalls
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self.db}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            t = asyncio.create_task(task)
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def __aenter__(self) -> StallingProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def proxy() -> AsyncIterator[StallingProxy]:
    async with StallingProxy() as p:
        yield p


async def test_a_stalled_redis_is_a_timeout_error_after_the_socket_timeout(
    proxy: StallingProxy,
) -> None:
    redis = await connect(proxy.url, socket_timeout=0.3)
    try:
        assert await redis.ping()
        proxy.flowing.clear()
        with pytest.raises(RedisTimeout):
            # Without an explicit timeout redis-py would wait for as long as the stall.
            await asyncio.wait_for(redis.get("sora-timeout-probe"), timeout=10)
    finally:
        proxy.flowing.set()
        await redis.aclose()


async def test_the_web_process_uses_the_short_timeout_and_workers_the_longer_one() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=REDIS_TEST_URL,
        redis_web_socket_timeout_seconds=0.7,
        redis_socket_timeout_seconds=4.0,
    )
    for web, expected in ((True, 0.7), (False, 4.0)):
        state = await open_state(
            settings, prefix=f"sora-timeouts-{uuid.uuid4().hex[:6]}", err=io.StringIO(), web=web
        )
        try:
            kwargs = state.redis.connection_pool.connection_kwargs
            assert kwargs["socket_timeout"] == expected
            assert kwargs["socket_connect_timeout"] == 5.0
        finally:
            keys = [k async for k in state.redis.scan_iter(match=f"{state.keys.pattern}")]
            if keys:
                await state.redis.delete(*keys)
            await state.redis.aclose()


def test_a_worker_socket_timeout_within_its_blocking_read_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(_env_file=None, redis_socket_timeout_seconds=1.0)  # type: ignore[call-arg]
