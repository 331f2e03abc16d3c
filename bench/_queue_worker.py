"""A worker process for `bench.queue_compare`: one queue library's worker, counted.

Prints "ready" on stderr once it consumes. On SIGUSR1 prints one JSON line on stdout
with what it has spent since "ready" (round trips, CPU seconds, jobs done); on SIGTERM
the same, then exits. Errors the queue met (a reclaim refused by a cluster) are in
the line too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys

from bench import _queues
from bench._roundtrips import COUNTER, install
from state import connect


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def main(args: argparse.Namespace) -> None:
    install()
    config = _queues.Config(
        url=args.redis_url, cluster=args.cluster, tag=args.tag, idle_ms=args.idle_ms
    )
    queue = _queues.make(args.kind, config)
    marks = await connect(args.redis_url)
    handler = _queues.Handler(marks=marks, tag=args.tag)
    stopping = asyncio.Event()
    start = {"cpu": 0.0}

    def report() -> None:
        line = {
            "round_trips": COUNTER.sent,
            "cpu_s": round(_cpu() - start["cpu"], 4),
            "done": handler.done,
            "errors": handler.errors,
        }
        print(json.dumps(line), flush=True)

    def ready() -> None:
        COUNTER.sent = 0
        start["cpu"] = _cpu()
        print("ready", file=sys.stderr, flush=True)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, report)
    await queue.serve(handler, ready, stopping)
    report()
    await queue.aclose()
    await marks.aclose()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=_queues.KINDS, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--cluster", action="store_true")
    p.add_argument("--tag", required=True)
    p.add_argument("--idle-ms", type=int, default=2000)
    asyncio.run(main(p.parse_args()))
