"""The three queues `bench.queue_compare` runs, behind one small interface.

- `ours`: `state.queue.TurnQueue` as `bot.worker` drives it: XREADGROUP for new jobs,
  the reclaim script (XAUTOCLAIM + dead-lettering) every `idle / 4`, XCLAIM JUSTID on
  jobs in flight every `idle / 3` (the heartbeat), XACK + XDEL when done.
- `streaq`: streaQ's `Worker` (coredis). Its queue name carries a hash tag, `{tag}`,
  so all of its keys share one slot on a cluster (its docs' advice for Redis Cluster).
  Results are not kept (`ttl=0`): the app needs none, and keeping them costs writes.
- `taskiq`: taskiq-redis's `RedisStreamBroker`, or `RedisStreamClusterBroker` on a
  cluster, with taskiq's own receiver and no result backend.

Every job carries a payload: `noop` returns at once; `hold` appends the worker's pid to
a list (so the bench sees who runs it) and then sleeps for an hour, for the crash test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from state import connect
from state.keys import CONSUMER_GROUP, Keys
from state.queue import Job, TurnQueue

KINDS = ("ours", "streaq", "taskiq")
HOLD = "hold"
NOOP = "noop"


def marks_key(tag: str) -> str:
    return "{" + tag + "}:marks"


@dataclass
class Handler:
    """What a job does in a worker process; counts the jobs done."""

    marks: Redis
    tag: str
    done: int = 0
    errors: list[str] = field(default_factory=list)

    async def __call__(self, payload: str) -> None:
        if payload.startswith(HOLD):
            await self.marks.rpush(marks_key(self.tag), str(os.getpid()))
            await asyncio.sleep(3600)
        self.done += 1

    def error(self, what: str) -> None:
        if what not in self.errors:
            self.errors.append(what)
            print(f"error: {what}", file=sys.stderr, flush=True)


@dataclass(kw_only=True)
class Config:
    url: str
    cluster: bool
    tag: str
    idle_ms: int
    concurrency: int = 100


class Queue:
    """One queue library: a producer side and a worker side."""

    stream: str
    group: str

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stack = AsyncExitStack()

    async def open_producer(self) -> None:
        raise NotImplementedError

    async def enqueue(self, payload: str) -> None:
        raise NotImplementedError

    async def serve(
        self, handler: Handler, ready: Callable[[], None], stopping: asyncio.Event
    ) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.stack.aclose()


class Ours(Queue):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.keys = Keys(prefix=config.tag)
        self.stream = self.keys.jobs
        self.group = CONSUMER_GROUP
        self.queue: TurnQueue | None = None

    async def _queue(self) -> TurnQueue:
        redis = await connect(self.config.url)
        self.stack.push_async_callback(redis.aclose)
        self.queue = TurnQueue(redis, self.keys)
        return self.queue

    async def open_producer(self) -> None:
        await self._queue()

    async def enqueue(self, payload: str) -> None:
        assert self.queue is not None
        await self.queue.enqueue(payload, 0)

    async def serve(
        self, handler: Handler, ready: Callable[[], None], stopping: asyncio.Event
    ) -> None:
        queue = await self._queue()
        name = f"w{os.getpid()}"
        idle = self.config.idle_ms
        await queue.ensure_group()
        working: dict[str, Job] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def handle(job: Job) -> None:
            working[job.id] = job
            await handler(job.session_id)
            await queue.ack(job)
            del working[job.id]

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(idle / 3000)
                for job in list(working.values()):
                    await queue.touch(job, name)

        beating = asyncio.create_task(heartbeat())
        ready()
        loop = asyncio.get_running_loop()
        last_reclaim = 0.0
        while not stopping.is_set():
            free = self.config.concurrency - len(tasks)
            if free <= 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            jobs: list[Job] = []
            if loop.time() - last_reclaim >= idle / 4000:
                last_reclaim = loop.time()
                try:
                    jobs += (await queue.reclaim(name, min_idle_ms=idle, count=free)).jobs
                except (RedisError, RedisClusterException) as e:
                    # Until the key layout is one slot (issue 19), a cluster refuses it.
                    handler.error(f"reclaim failed: {e}")
            if free - len(jobs) > 0:
                jobs += await queue.take(name, count=free - len(jobs), block_ms=200)
            for job in jobs:
                task = asyncio.create_task(handle(job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        beating.cancel()


def _cluster_nodes(url: str) -> list[tuple[str, int]]:
    parts = urlsplit(url)
    return [(parts.hostname or "127.0.0.1", parts.port or 6379)]


class Streaq(Queue):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        from streaq import Worker
        from streaq.constants import REDIS_GROUP, REDIS_PREFIX, REDIS_STREAM

        name = "{" + config.tag + "}"
        where: dict[str, Any] = (
            {"cluster_nodes": _cluster_nodes(config.url)}
            if config.cluster
            else {"redis_url": config.url}
        )
        self.worker: Any = Worker(
            queue_name=name,
            concurrency=config.concurrency,
            idle_timeout=config.idle_ms / 1000,
            handle_signals=False,
            **where,
        )
        self.stream = REDIS_PREFIX + name + REDIS_STREAM + "normal"
        self.group = REDIS_GROUP
        self.handler: Handler | None = None

        async def job(payload: str) -> None:
            assert self.handler is not None
            await self.handler(payload)

        self.job = self.worker.task(job, name="bench_job", ttl=0, silent=True)

    async def open_producer(self) -> None:
        await self.stack.enter_async_context(self.worker)

    async def enqueue(self, payload: str) -> None:
        await self.job.enqueue(payload)

    async def serve(
        self, handler: Handler, ready: Callable[[], None], stopping: asyncio.Event
    ) -> None:
        import anyio

        self.handler = handler
        async with anyio.create_task_group() as tg:

            async def run(*, task_status: Any) -> None:
                # streaQ 7.2.0 takes SIGTERM itself (`signal_handler`, whatever
                # `handle_signals` says) and returns: then we are done too.
                await self.worker.run_async(task_status=task_status)
                stopping.set()

            await tg.start(run)
            ready()
            await stopping.wait()
            tg.cancel_scope.cancel()


class Taskiq(Queue):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        from taskiq_redis import RedisStreamBroker, RedisStreamClusterBroker

        self.stream = "{" + config.tag + "}:taskiq"
        self.group = "taskiq"
        if config.cluster:
            # The cluster broker has no idle timeout and no XAUTOCLAIM (taskiq-redis
            # 1.2.4, redis_cluster_broker.py): nothing to set.
            self.broker: Any = RedisStreamClusterBroker(config.url, queue_name=self.stream)
        else:
            self.broker = RedisStreamBroker(
                config.url, queue_name=self.stream, idle_timeout=config.idle_ms
            )
        self.handler: Handler | None = None

        async def job(payload: str) -> None:
            assert self.handler is not None
            await self.handler(payload)

        self.job = self.broker.task(task_name="bench_job")(job)

    async def open_producer(self) -> None:
        await self.broker.startup()
        self.stack.push_async_callback(self.broker.shutdown)

    async def enqueue(self, payload: str) -> None:
        await self.job.kiq(payload)

    async def serve(
        self, handler: Handler, ready: Callable[[], None], stopping: asyncio.Event
    ) -> None:
        from taskiq.api import run_receiver_task

        self.handler = handler
        await self.broker.startup()
        receiving = asyncio.create_task(
            run_receiver_task(self.broker, max_async_tasks=self.config.concurrency)
        )
        ready()
        await stopping.wait()
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        await self.broker.shutdown()


def make(kind: str, config: Config) -> Queue:
    classes: dict[str, Callable[[Config], Queue]] = {
        "ours": Ours,
        "streaq": Streaq,
        "taskiq": Taskiq,
    }
    return classes[kind](config)


def missing_extras() -> list[str]:
    """The comparison's optional packages that are not installed."""
    missing = []
    for module, package in (("streaq", "streaq"), ("taskiq_redis", "taskiq-redis")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing
