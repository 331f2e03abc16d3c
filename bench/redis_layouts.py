"""Sessions on one Redis and on a Redis Cluster: `python -m bench.redis_layouts`.

Runs `--sessions` concurrent sessions (6 rounds each) through real worker processes
(`bench._worker`: the production Worker, the offline model taking `--latency` s per
call, the recording surface) on the bench Redis (BENCH_REDIS_URL), then on a real
3-master Redis Cluster that the bench starts on free loopback ports
(tests/redis_cluster.py) and stops after, with one worker and with two.

Prints, for each: Redis round trips per turn (everything the worker processes send,
counted in the client: on a cluster a pipeline that spans nodes counts once per
node), worker CPU per turn, and turns per second; and on the cluster the two-worker
rate over the one-worker rate. A build whose app refuses a cluster (`bot.cli`
`open_state`) says so in one line instead of the cluster figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
from typing import Any

from bench._roundtrips import cluster
from bench.workers import run
from bot.cli import open_state
from bot.config import Settings
from bot.sessions import BadInput


def _line(label: str, row: dict[str, Any]) -> str:
    return (
        f"  {label:<22} {row['round_trips_per_turn']:>5} round trips/turn, "
        f"{row['worker_cpu_ms_per_turn']:>6} ms worker CPU/turn, "
        f"{row['turns_per_s']:>7} turns/s ({row['turns']} turns in {row['wall_s']} s)"
    )


async def refusal(url: str) -> str | None:
    """Why the app would not run on `url`, or None if it would."""
    try:
        state = await open_state(Settings(redis_url=url), prefix="bench-probe", err=io.StringIO())
    except BadInput as e:
        return str(e)
    await state.redis.aclose()
    return None


async def measure(url: str, args: argparse.Namespace, workers: list[int]) -> dict[str, Any]:
    rows = {}
    for n in workers:
        row = await run(
            url,
            sessions=args.sessions,
            workers=n,
            latency=args.latency,
            concurrency=args.concurrency,
            quiet=True,
        )
        rows[n] = row
    return rows


async def main(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {}
    print(
        f"{args.sessions} sessions of 6 rounds, offline model at {args.latency} s per call, "
        "recording surface",
        flush=True,
    )
    single = await measure(args.redis_url, args, [1])
    print("one Redis:", flush=True)
    print(_line("1 worker", single[1]), flush=True)
    result["single"] = single[1]
    if args.no_cluster:
        print(json.dumps(result))
        return
    async with cluster(args.cluster_url) as url:
        why = await refusal(url)
        print("3-master Redis Cluster:", flush=True)
        if why is not None:
            print(f"  cluster not supported by this build: {why}", flush=True)
            result["cluster"] = {"supported": False, "reason": why}
        else:
            rows = await measure(url, args, [1, 2])
            print(_line("1 worker", rows[1]), flush=True)
            print(_line("2 workers", rows[2]), flush=True)
            ratio = rows[2]["turns_per_s"] / rows[1]["turns_per_s"]
            print(f"  2 workers / 1 worker: {ratio:.2f}x the turns per second", flush=True)
            result["cluster"] = {
                "supported": True,
                "1": rows[1],
                "2": rows[2],
                "two_over_one": round(ratio, 3),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--no-cluster", action="store_true", help="one Redis only")
    parser.add_argument("--cluster-url", help="a running Redis Cluster, instead of starting one")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args)))
