"""A worker process for `bench.workers`: the real Worker, counting its Redis round trips.

It runs exactly the production `Worker` with the offline model (made to take
`--latency` seconds per call) and the recording surface, on the production
Redis client (`state.connect`: a cluster's URL gets the cluster client), whose
every request is counted (bench._roundtrips: a pipeline or a Lua script is one;
on a cluster, one per node it goes to). On SIGTERM it stops and prints one JSON
line with its counts and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys

from bench._roundtrips import COUNTER, install
from bot.dialogue.engine import Engine
from bot.llm.offline import OfflineModel
from bot.surfaces.recording import RecordingSurface
from bot.worker import Worker, WorkerConfig
from state import State, connect


async def main(args: argparse.Namespace) -> None:
    install()
    # The production client: a Redis Cluster's URL gets the cluster client.
    redis = await connect(args.redis_url)
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
                "round_trips": COUNTER.sent,
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
