"""Our turn queue against streaQ and taskiq-redis: `python -m bench.queue_compare`.

Each queue runs in real worker processes (`bench._queue_worker`) on the bench Redis
(BENCH_REDIS_URL) and on a real 3-master Redis Cluster that the bench starts on free
loopback ports (tests/redis_cluster.py) and stops after. For each it prints:

- round trips per job, one job at a time (enqueue, then deliver and ack in the
  worker): what a turn would pay, since turns arrive one by one per session;
- jobs/s and round trips per job for `--jobs` no-op jobs with 1 worker, and jobs/s
  with 2 workers (the same jobs, enqueued at once);
- worker CPU per job, and the round trips a worker spends per second with no jobs;
- the crash test: a worker is SIGKILLed while it holds a job; is that job run again
  by another worker, and after how long? Every queue gets the same idle time
  (`--idle-ms`, 2 s: the time after which a job nobody touched is taken over).

Round trips are counted in the clients (bench._roundtrips: redis-py's and coredis's
send paths), in the producer and in the workers. streaQ and taskiq-redis are an
optional extra (`pip install -e '.[compare]'`); without them only ours is measured
and one line says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench import _queues
from bench._roundtrips import COUNTER, cluster, install
from state import connect
from state.connection import is_cluster

ENQUEUE_IN_FLIGHT = 100


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    stderr: list[str] = field(default_factory=list)
    draining: asyncio.Task[None] | None = None

    async def snapshot(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
        return dict(json.loads(line))

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        self.proc.terminate()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
        await self.kill()
        return dict(json.loads(line))

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        if self.draining is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.draining


async def start_worker(kind: str, url: str, cluster: bool, tag: str, idle_ms: int) -> Worker:
    args = ["--kind", kind, "--redis-url", url, "--tag", tag, "--idle-ms", str(idle_ms)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._queue_worker",
        *args,
        *(["--cluster"] if cluster else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = Worker(proc)
    assert proc.stderr is not None
    stderr = proc.stderr

    async def wait_ready() -> None:
        while (line := (await stderr.readline()).decode()) != "ready\n":
            if not line:
                raise RuntimeError(f"{kind} worker failed to start:\n{''.join(worker.stderr)}")
            worker.stderr.append(line)

    try:
        await asyncio.wait_for(wait_ready(), timeout=60)
    except BaseException:
        await worker.kill()
        raise

    async def drain() -> None:
        while line := (await stderr.readline()).decode():
            worker.stderr.append(line)

    worker.draining = asyncio.create_task(drain())
    return worker


async def drained(watch: Redis, stream: str, group: str) -> bool:
    """Every job added to `stream` delivered to `group` and acknowledged."""
    try:
        info = await watch.xinfo_stream(stream)
        groups = await watch.xinfo_groups(stream)
    except RedisError:
        return False
    for g in groups:
        if g["name"] == group:
            done = g["last-delivered-id"] == info["last-generated-id"]
            return bool(done and int(g["pending"]) == 0)
    return False


async def wait_drained(watch: Redis, queue: _queues.Queue, poll_s: float) -> None:
    # Polling is the point: the bench watches from outside, on a client it does not count.
    while not await drained(watch, queue.stream, queue.group):  # noqa: ASYNC110
        await asyncio.sleep(poll_s)


async def enqueue_counted(queue: _queues.Queue, payloads: list[str]) -> int:
    """Enqueue `payloads` at once; the round trips that took."""
    # At most ENQUEUE_IN_FLIGHT at once, as a busy web process would: redis-py's cluster
    # client fails some of 2,000 connections opened at once (taskiq-redis's pool is
    # unbounded there).
    gate = asyncio.Semaphore(ENQUEUE_IN_FLIGHT)

    async def one(payload: str) -> None:
        async with gate:
            await queue.enqueue(payload)

    COUNTER.sent, COUNTER.on = 0, True
    try:
        await asyncio.gather(*(one(p) for p in payloads))
    finally:
        COUNTER.on = False
    return COUNTER.sent


async def cleanup(watch: Redis, tag: str) -> None:
    keys = [k async for k in watch.scan_iter(match=f"*{tag}*", count=1000)]
    for k in keys:  # one by one: on a cluster they live in different slots
        await watch.delete(k)


@contextlib.asynccontextmanager
async def producer(kind: str, config: _queues.Config) -> AsyncIterator[_queues.Queue]:
    queue = _queues.make(kind, config)
    COUNTER.on = False
    try:
        await queue.open_producer()
        yield queue
    finally:
        await queue.aclose()


def new_tag() -> str:
    return f"bqc-{uuid.uuid4().hex[:8]}"


async def one_worker(
    kind: str, url: str, cluster: bool, watch: Redis, args: argparse.Namespace
) -> dict[str, Any]:
    """Idle cost, one job at a time, then `--jobs` at once: one worker."""
    tag = new_tag()
    config = _queues.Config(url=url, cluster=cluster, tag=tag, idle_ms=args.idle_ms)
    worker = await start_worker(kind, url, cluster, tag, args.idle_ms)
    try:
        async with producer(kind, config) as queue:
            before = await worker.snapshot()
            await asyncio.sleep(args.idle_s)
            idle = await worker.snapshot()
            idle_rt_s = (idle["round_trips"] - before["round_trips"]) / args.idle_s
            enq = 0
            t0 = time.monotonic()
            for _ in range(args.one_at_a_time):
                enq += await enqueue_counted(queue, [_queues.NOOP])
                await wait_drained(watch, queue, 0.002)
            seq_wall = time.monotonic() - t0
            seq = await worker.snapshot()
            await bulk(queue, watch, args.jobs)  # warm-up: the pools open their connections
            warm = await worker.snapshot()
            n = args.one_at_a_time
            # The worker's background spends round trips with or without jobs: take
            # its idle rate out, so the figure is what each job itself costs.
            seq_worker = seq["round_trips"] - idle["round_trips"] - idle_rt_s * seq_wall
            bulk_enq, wall = await bulk(queue, watch, args.jobs)
            end = await worker.stop()
    finally:
        await worker.kill()
        await cleanup(watch, tag)
    errors = end["errors"]
    return {
        "idle_rt_per_s": round(idle_rt_s, 2),
        "one_at_a_time": {
            "enqueue_rt": round(enq / n, 2),
            "worker_rt": round(seq_worker / n, 2),
            "rt_per_job": round((enq + seq_worker) / n, 2),
        },
        "bulk_1": {
            "jobs_per_s": round(args.jobs / wall, 1),
            "rt_per_job": round(
                (bulk_enq + end["round_trips"] - warm["round_trips"]) / args.jobs, 2
            ),
            "worker_cpu_ms_per_job": round(1000 * (end["cpu_s"] - warm["cpu_s"]) / args.jobs, 3),
        },
        "errors": errors,
    }


async def bulk(queue: _queues.Queue, watch: Redis, jobs: int) -> tuple[int, float]:
    t0 = time.monotonic()
    enq = await enqueue_counted(queue, [_queues.NOOP] * jobs)
    await wait_drained(watch, queue, 0.02)
    return enq, time.monotonic() - t0


async def two_workers(
    kind: str, url: str, cluster: bool, watch: Redis, args: argparse.Namespace
) -> dict[str, Any]:
    tag = new_tag()
    config = _queues.Config(url=url, cluster=cluster, tag=tag, idle_ms=args.idle_ms)
    workers = [await start_worker(kind, url, cluster, tag, args.idle_ms) for _ in range(2)]
    try:
        async with producer(kind, config) as queue:
            await bulk(queue, watch, args.jobs)  # warm-up
            _, wall = await bulk(queue, watch, args.jobs)
        ends = [await w.stop() for w in workers]
    finally:
        for w in workers:
            await w.kill()
        await cleanup(watch, tag)
    # Each worker's share of both runs.
    return {"jobs_per_s": round(args.jobs / wall, 1), "split": [e["done"] for e in ends]}


async def crash(
    kind: str, url: str, cluster: bool, watch: Redis, args: argparse.Namespace
) -> dict[str, Any]:
    """SIGKILL the worker holding a job; does another worker run it, and when?"""
    tag = new_tag()
    marks = _queues.marks_key(tag)
    idle_s = args.idle_ms / 1000
    config = _queues.Config(url=url, cluster=cluster, tag=tag, idle_ms=args.idle_ms)
    started: list[Worker] = []

    async def runs(at_least: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await watch.llen(marks) >= at_least:
                return True
            await asyncio.sleep(0.05)
        return False

    try:
        started.append(await start_worker(kind, url, cluster, tag, args.idle_ms))
        async with producer(kind, config) as queue:
            await queue.enqueue(_queues.HOLD)
            if not await runs(1, 30):
                return {"redelivered": None, "note": "the job never started"}
            await started[0].kill()
            killed = time.monotonic()
            started.append(await start_worker(kind, url, cluster, tag, args.idle_ms))
            if await runs(2, 3 * idle_s + 10):
                return {"redelivered": round(time.monotonic() - killed, 2), "note": ""}
            waited = time.monotonic() - killed
            # Some reclaim only when new jobs arrive: give it one.
            await queue.enqueue(_queues.NOOP)
            if await runs(2, 2 * idle_s + 5):
                return {
                    "redelivered": round(time.monotonic() - killed, 2),
                    "note": f"only once another job was enqueued (none in {waited:.0f} s)",
                }
            errors = [e for w in started for e in w.stderr if e.startswith("error:")]
            why = f"; {errors[0].strip()}" if errors else ""
            return {
                "redelivered": None,
                "note": f"not in {time.monotonic() - killed:.0f} s, even after another job{why}",
            }
    finally:
        for w in started:
            await w.kill()
        await cleanup(watch, tag)


def describe(kind: str, row: dict[str, Any]) -> str:
    one, b1 = row["one_at_a_time"], row["bulk_1"]
    c = row["crash"]
    redelivered = (
        f"run again after {c['redelivered']} s" if c["redelivered"] is not None else "LOST"
    )
    if c["note"]:
        redelivered += f" ({c['note']})"
    lines = [
        f"  {kind:<7} one at a time: {one['rt_per_job']} round trips/job "
        f"(enqueue {one['enqueue_rt']}, worker {one['worker_rt']})",
        f"          {b1['jobs_per_s']} jobs/s with 1 worker ({b1['rt_per_job']} round trips/job, "
        f"{b1['worker_cpu_ms_per_job']} ms worker CPU/job), "
        f"{row['bulk_2']['jobs_per_s']} jobs/s with 2",
        f"          idle worker: {row['idle_rt_per_s']} round trips/s; "
        f"SIGKILLed holder: {redelivered}",
    ]
    for e in row["errors"]:
        lines.append(f"          error: {e}")
    return "\n".join(lines)


async def measure(
    topology: str, url: str, kinds: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    watch = await connect(url)
    cluster = is_cluster(watch)
    rows: dict[str, Any] = {}
    had_streaq = await _has_streaq_library(watch)
    print(f"{topology} ({'cluster' if cluster else 'one Redis'}):", flush=True)
    try:
        for kind in kinds:
            try:
                row = await one_worker(kind, url, cluster, watch, args)
                row["bulk_2"] = await two_workers(kind, url, cluster, watch, args)
                row["crash"] = await crash(kind, url, cluster, watch, args)
            except Exception as e:  # one library failing must not hide the others' figures
                rows[kind] = {"failed": f"{type(e).__name__}: {e}"}
                print(f"  {kind:<7} failed: {rows[kind]['failed']}", flush=True)
                continue
            rows[kind] = row
            print(describe(kind, row), flush=True)
    finally:
        if "streaq" in kinds and not had_streaq and not cluster:
            # streaQ loads a Redis Functions library into the server; leave none behind.
            with contextlib.suppress(RedisError):
                await watch.function_delete("streaq")
        await watch.aclose()
    return rows


def in_a_turn(rows: dict[str, Any]) -> str:
    """What the queue adds to one turn's round trips.

    Ours: the take only. The ack and the next turn's enqueue ride in the session's save
    script (tests/test_state_roundtrips.py counts 5 round trips per turn, one of them
    the take). Another library's enqueue, delivery and ack cannot join our script: a
    turn pays all of them, as measured one job at a time.
    """
    parts = ["ours 1 (the take; ack and next enqueue ride in the save script)"]
    for kind, row in rows.items():
        if kind != "ours" and "one_at_a_time" in row:
            parts.append(f"{kind} {row['one_at_a_time']['rt_per_job']}")
    return "queue round trips in one turn: " + ", ".join(parts)


async def _has_streaq_library(watch: Redis) -> bool:
    try:
        return bool(await watch.function_list(library="streaq"))
    except RedisError:
        return False


async def main(args: argparse.Namespace) -> int:
    install()
    COUNTER.on = False
    kinds = ["ours"]
    missing = _queues.missing_extras()
    if missing:
        print(
            f"{' and '.join(missing)} not installed (pip install -e '.[compare]'): "
            "measuring our queue only"
        )
    else:
        kinds += ["streaq", "taskiq"]
    if args.kinds:
        kinds = [k for k in kinds if k in args.kinds.split(",")]
    print(
        f"{args.jobs} no-op jobs per bulk run, {args.one_at_a_time} one at a time; "
        f"idle time before a job is taken over: {args.idle_ms} ms for every queue",
        flush=True,
    )
    result: dict[str, Any] = {"single": await measure("single", args.redis_url, kinds, args)}
    print(in_a_turn(result["single"]), flush=True)
    if not args.no_cluster:
        async with cluster(args.cluster_url) as url:
            result["cluster"] = await measure("cluster", url, kinds, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--one-at-a-time", type=int, default=100)
    parser.add_argument("--idle-ms", type=int, default=2000)
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle cost measured this long")
    parser.add_argument("--kinds", default="", help="comma-separated subset of ours,streaq,taskiq")
    parser.add_argument("--no-cluster", action="store_true", help="one Redis only")
    parser.add_argument("--cluster-url", help="a running Redis Cluster, instead of starting one")
    sys.exit(asyncio.run(main(parser.parse_args())))
