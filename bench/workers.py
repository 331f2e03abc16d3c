"""Workers under load: `python -m bench.workers`.

500 concurrent sessions of 6 rounds (12 turns each: the offline persona only
approves in the final round), the offline model taking 1 s per turn, the
recording surface, one worker process on the real Redis; then 1,000 sessions
on one worker and on two. Each worker works on at most `--concurrency` (500)
sessions at once, so 1,000 sessions need two workers to run all at once.

Prints wall time against the ideal (12 turns x 1 s: every session's turns are
sequential), Redis round trips per turn (everything the worker process sends:
taking jobs, snapshots, saves, heartbeats, idle polls and the recording
surface's own writes), and each worker's peak RSS. Targets: <= 1.2x the
ideal, <= 8 round trips per turn, <= 300 MB per worker, and two workers
finishing 1,000 sessions in <= 0.6x the time one worker takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target
from state import State, connect

TURNS_PER_SESSION = 12


def _session() -> Session:
    return Session(
        idea="A lighthouse keeper finds a message in a bottle, written in his own hand",
        persona=resolve_persona("director"),
        target=resolve_target("sora-2"),
        max_rounds=6,
    )


async def _unfinished(redis: Redis, state: State, ids: list[str]) -> list[str]:
    """The sessions of `ids` still running. Only those are asked again, so the
    watcher costs the two shared cores little."""
    async with redis.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.hget(state.keys.session(sid), "status")
        statuses = await pipe.execute()
    return [sid for sid, s in zip(ids, statuses, strict=True) if s in (None, "running")]


async def _cleanup(redis: Redis, prefix: str) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])


async def run(
    redis_url: str,
    *,
    sessions: int,
    workers: int,
    latency: float,
    concurrency: int,
    quiet: bool = False,
) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    redis = await connect(redis_url)
    state = State.create(redis, prefix=prefix)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._worker",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--latency",
            str(latency),
            "--concurrency",
            str(concurrency),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stderr is not None
            line = (await p.stderr.readline()).decode()
            if line.strip() != "ready":
                raise RuntimeError(f"worker failed to start: {line}{await p.stderr.read()!r}")
        made = [_session() for _ in range(sessions)]
        t0 = time.monotonic()
        await asyncio.gather(*(state.sessions.create(s, enqueue=True) for s in made))
        ids = [s.id for s in made]
        waiting = ids
        # Polling is the point here: the bench watches from outside, as an operator would.
        while waiting := await _unfinished(redis, state, waiting):  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        wall = time.monotonic() - t0
        stats = []
        for p in procs:
            p.terminate()
            out, _ = await asyncio.wait_for(p.communicate(), timeout=60)
            stats.append(json.loads(out.decode().strip().splitlines()[-1]))
        turns = 0
        for sid in ids:
            s = await state.sessions.load(sid)
            assert s is not None and s.status == SessionStatus.LOCKED, sid
            turns += len(s.agent_turns)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await _cleanup(redis, prefix)
        await redis.aclose()
    ideal = TURNS_PER_SESSION * latency
    row = {
        "sessions": sessions,
        "workers": workers,
        "turns": turns,
        "wall_s": round(wall, 2),
        "ideal_s": ideal,
        "x_ideal": round(wall / ideal, 3) if ideal else None,
        "turns_per_s": round(turns / wall, 1),
        "round_trips_per_turn": round(sum(s["round_trips"] for s in stats) / turns, 2),
        "rss_mb_per_worker": [s["rss_mb"] for s in stats],
        "worker_cpu_ms_per_turn": round(1000 * sum(s["cpu_s"] for s in stats) / turns, 2),
    }
    if quiet:
        return row
    print(
        f"{sessions:>5} sessions, {workers} worker(s): {wall:6.2f} s wall = "
        f"{row['x_ideal']:.3f}x ideal ({ideal:.0f} s); {row['round_trips_per_turn']} Redis "
        f"round trips/turn; worker CPU {row['worker_cpu_ms_per_turn']} ms/turn; "
        f"peak RSS {row['rss_mb_per_worker']} MB",
        flush=True,
    )
    return row


async def main(args: argparse.Namespace) -> None:
    common = {"latency": args.latency, "concurrency": args.concurrency}
    rows = [await run(args.redis_url, sessions=args.sessions, workers=1, **common)]
    one = await run(args.redis_url, sessions=2 * args.sessions, workers=1, **common)
    two = await run(args.redis_url, sessions=2 * args.sessions, workers=2, **common)
    rows += [one, two]
    ratio = two["wall_s"] / one["wall_s"]
    print(f"two workers / one worker on {2 * args.sessions} sessions: {ratio:.3f} (target <= 0.6)")
    print(json.dumps({"rows": rows, "two_over_one": round(ratio, 3)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
