"""Counting Redis round trips in a bench process, whatever client library sends them;
and the Redis Cluster the benches run on.

`install()` patches the send path of redis-py's asyncio connections (one call per
command or per pipeline, on a single Redis and on every node of a cluster) and, when
it is installed, coredis's (streaQ's client: one request per command or per
pipeline batch). Only what is sent while `COUNTER.on` is true is counted, so a bench
can leave its own watching out of the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Counter:
    sent: int = 0
    on: bool = True


COUNTER = Counter()
_installed = False


def install() -> None:
    """Patch the clients' send paths once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection.send_packed_command

    async def counted_send(self: Any, *args: Any, **kwargs: Any) -> None:
        if COUNTER.on:
            COUNTER.sent += 1
        await send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    try:
        from coredis.connection._base import BaseConnection
    except ImportError:
        return
    # coredis queues each request (a command, or a pipeline's batch) on the connection
    # and a writer task sends what is queued: a request is one round trip as the
    # caller sees it (concurrent ones may share a write).
    for name in ("create_request", "create_request_batch"):
        original = getattr(BaseConnection, name)

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if COUNTER.on:
                COUNTER.sent += 1
            return _original(self, *args, **kwargs)

        setattr(BaseConnection, name, counted)


@contextlib.asynccontextmanager
async def cluster(url: str | None) -> AsyncIterator[str]:
    """`url` if given; else a 3-master Redis Cluster of our own on free loopback ports
    (tests/redis_cluster.py), stopped on the way out."""
    if url:
        yield url
        return
    from tests import redis_cluster

    with tempfile.TemporaryDirectory(prefix="sora-bench-cluster-") as d:
        try:
            yield await asyncio.to_thread(redis_cluster.start, Path(d))
        finally:
            await asyncio.to_thread(redis_cluster.stop, Path(d))
