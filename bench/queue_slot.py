"""The one hot slot's ceiling: `python -m bench.queue_slot`.

Every session's queue traffic goes through the keys tagged `{q}` (state.keys): the jobs
stream, the live index. They share one Redis Cluster slot, so one node serves all of it,
however many nodes the cluster has. This bench drives exactly that traffic, as fast as
`--clients` concurrent clients can, against the Redis at BENCH_REDIS_URL (database 14 by
default; any node of a cluster works, under a prefix of its own deleted afterwards): per
job, what a session costs the slot when its worker carries it from start to lock in one
job (state.store, bot.worker): HSETNX on the live index and XADD (the create), XREADGROUP
(the take), and one MULTI of HDEL, XACK and XDEL (the finish). A session that waits for a
person costs one more job per wait.

Prints jobs a second through the slot, the commands a second that is, the Redis server's
CPU per job (INFO cpu, of the node holding the slot: on a Redis shared with other work the
figure counts that work too), and the ceiling that CPU gives, one core's worth of jobs a
second (Redis runs commands on one thread); then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from state import Keys, connect
from state.connection import is_cluster

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
GROUP = "workers"
COMMANDS_PER_JOB = 7  # HSETNX, XADD, XREADGROUP, MULTI, HDEL, XACK, XDEL (EXEC is the 8th)


async def _cpu(redis: Redis, keys: Keys) -> float:
    """used_cpu_sys + used_cpu_user of the node serving the `{q}` slot, in seconds."""
    if is_cluster(redis):
        node = redis.get_node_from_key(keys.jobs)  # type: ignore[attr-defined]
        info: Any = await redis.info("cpu", target_nodes=node)  # type: ignore[call-arg]
    else:
        info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _client(redis: Redis, keys: Keys, name: str, jobs: int) -> None:
    for i in range(jobs):
        sid = f"{name}-{i}"
        await redis.hsetnx(keys.live, sid, "C1 1.1 T1 0")
        await redis.xadd(keys.jobs, {"sid": sid, "turn": "0", "team": "T1"})
        reply: Any = await redis.xreadgroup(GROUP, name, {keys.jobs: ">"}, count=1)
        for _stream, entries in reply or []:
            for entry_id, _fields in entries:
                async with redis.pipeline(transaction=True) as tx:
                    tx.hdel(keys.live, sid)
                    tx.xack(keys.jobs, GROUP, entry_id)
                    tx.xdel(keys.jobs, entry_id)
                    await tx.execute()


async def run(url: str, clients: int, jobs: int) -> dict[str, Any]:
    redis = await connect(url)
    keys = Keys(prefix=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        await redis.xgroup_create(keys.jobs, GROUP, id="0", mkstream=True)
        per = max(1, jobs // clients)
        await _client(redis, keys, "warm", 50)
        cpu0, t0 = await _cpu(redis, keys), time.perf_counter()
        await asyncio.gather(*(_client(redis, keys, f"c{c}", per) for c in range(clients)))
        seconds, cpu = time.perf_counter() - t0, await _cpu(redis, keys) - cpu0
        done = per * clients
        return {
            "cluster": is_cluster(redis),
            "clients": clients,
            "jobs": done,
            "jobs_per_s": round(done / seconds),
            "commands_per_s": round(done * COMMANDS_PER_JOB / seconds),
            "redis_cpu_us_per_job": round(cpu / done * 1e6, 1),
            # Redis runs commands on one thread: at a core's full time, the slot's node
            # passes this many jobs a second, whatever the clients can send.
            "ceiling_jobs_per_s": round(done / cpu) if cpu > 0 else None,
        }
    finally:
        names = [k async for k in redis.scan_iter(match=f"{keys.prefix}:*")]
        for name in names:
            await redis.delete(name)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_slot", description=__doc__)
    parser.add_argument("--url", default=BENCH_REDIS_URL, help="a Redis, or a cluster node")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    r = asyncio.run(run(args.url, args.clients, args.jobs))
    where = "a Redis Cluster's {q} slot" if r["cluster"] else "one Redis"
    print(
        f"{where}: {r['jobs_per_s']:,} jobs/s ({r['commands_per_s']:,} commands/s) from "
        f"{r['clients']} clients; the server's CPU {r['redis_cpu_us_per_job']} µs a job, "
        f"so at most about {r['ceiling_jobs_per_s']:,} jobs/s with its one thread busy"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
