"""What the fake servers share: an aiohttp app on loopback, started and stopped alike."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopbackServer:
    """Serves `_build_app()` on `host:port` (port 0: a free one, known once started).

    Use `async with` or `start`/`stop`. Subclasses set `host` and `port` and may
    close their own connections in `_before_stop`.
    """

    host: str
    port: int
    _runner: web.AppRunner | None = None

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    async def _before_stop(self) -> None:
        """Close what `AppRunner.cleanup` would otherwise wait on (open WebSockets)."""

    async def start(self) -> None:
        self._runner = web.AppRunner(self._build_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._before_stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_until_signalled(server: LoopbackServer, url: Callable[[], str]) -> None:
    """Start `server`, print `url()` (known once the port is) as the first line of
    stdout, for the test that started this process, and serve until SIGINT or SIGTERM."""
    await server.start()
    print(url(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
