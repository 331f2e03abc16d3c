"""A worker process for `bench.workers`: the real Worker, counting its Redis round trips.

It runs exactly the production `Worker` with the offline model (made to take
`--latency` seconds per call) and the recording surface, on a Redis client
whose connection class counts every request it sends (a pipeline or a Lua
script is one). On SIGTERM it stops and prints one JSON line with its counts
and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from bot.dialogue.engine import Engine
from bot.llm.offline import OfflineModel
from bot.surfaces.recording import RecordingSurface
from bot.worker import Worker, WorkerConfig
from state import State
from state.connection import DRIVER_INFO, MAX_CONNECTIONS

ROUND_TRIPS = 0


class CountingConnection(Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        global ROUND_TRIPS
        ROUND_TRIPS += 1
        await super().send_packed_command(command, check_health)


async def main(args: argparse.Namespace) -> None:
    redis = Redis.from_url(
        args.redis_url,
        decode_responses=True,
        connection_class=CountingConnection,
        max_connections=MAX_CONNECTIONS,
        driver_info=DRIVER_INFO,  # as `state.connect` builds production clients
    )
    state = State.create(redis, prefix=args.prefix)
    worker = Worker(
        state=state,
        engine=Engine(model=OfflineModel(latency=args.latency, revisions_before_approval=99)),
        surface=RecordingSurface(redis, state.keys),
        config=WorkerConfig(concurrency=args.concurrency, block_ms=200),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await state.queue.ensure_group()
    ready = resource.getrusage(resource.RUSAGE_SELF)
    print("ready", file=sys.stderr, flush=True)
    await worker.run(stopping)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU spent working, without the imports and start-up before "ready".
    cpu = usage.ru_utime + usage.ru_stime - ready.ru_utime - ready.ru_stime
    print(
        json.dumps(
            {
                "round_trips": ROUND_TRIPS,
                "rss_mb": round(usage.ru_maxrss / 1024, 1),
                "cpu_s": round(cpu, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--latency", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=500)
    asyncio.run(main(p.parse_args()))
