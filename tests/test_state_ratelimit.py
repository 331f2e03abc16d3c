"""The post rate limiter: one token bucket per channel, shared by every process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from state import PostRateLimiter, State
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL

ROOT = Path(__file__).resolve().parent.parent


async def test_a_burst_is_granted_then_the_caller_must_wait(state: State) -> None:
    limiter = state.ratelimit  # defaults: 1 post/s, burst 3
    assert [await limiter.acquire("C1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.acquire("C1")
    assert 0.9 < wait <= 1.0
    assert 0.9 < await limiter.acquire("C1") <= 1.0  # a refusal takes nothing
    assert await limiter.acquire("C2") == 0.0  # per channel


async def test_tokens_come_back_at_the_configured_rate(backend: Redis, state: State) -> None:
    limiter = PostRateLimiter(backend, state.keys, rate_per_s=20, burst=1)
    assert await limiter.acquire("C1") == 0.0
    wait = await limiter.acquire("C1")
    assert 0 < wait <= 0.05
    await asyncio.sleep(wait + 0.01)
    assert await limiter.acquire("C1") == 0.0


async def test_wait_sleeps_with_the_injected_sleep_until_a_token_is_taken(
    backend: Redis, state: State
) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    limiter = PostRateLimiter(backend, state.keys, rate_per_s=50, burst=1, sleep=fake_sleep)
    assert await limiter.wait("C1") == 0.0
    waited = await limiter.wait("C1")
    assert slept and 0 < waited == pytest.approx(sum(slept))
    assert waited <= 0.05


async def test_an_idle_bucket_expires(state: State, backend: Redis) -> None:
    await state.ratelimit.acquire("C1")
    assert 0 < await backend.pttl(state.keys.ratelimit("-", "C1")) <= 4000


_CHILD = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from state import Keys, PostRateLimiter

async def main(url, prefix, seconds, rate, burst):
    redis = Redis.from_url(url, decode_responses=True)
    limiter = PostRateLimiter(redis, Keys(prefix=prefix), rate_per_s=rate, burst=burst)
    await redis.ping()
    print("ready", flush=True)  # imported and connected; the parent says when to start
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began, granted = time.time(), 0
    while time.time() < start_at + seconds:
        wait = await limiter.acquire("C-shared")
        if wait == 0:
            granted += 1
        else:
            await asyncio.sleep(min(wait, max(0.0, start_at + seconds - time.time())))
    print(json.dumps({"granted": granted, "began": began, "ended": time.time()}))
    await redis.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]),
                 int(sys.argv[5])))
"""


async def test_two_processes_share_one_rate(real_redis: Redis, prefix: str) -> None:
    rate, burst, seconds = 10.0, 3, 2.0
    args = [REDIS_TEST_URL, prefix, str(seconds), str(rate), str(burst)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            *args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    # Both start together once both have imported and connected: a fixed head start was
    # too short on a loaded machine, and one child then ran alone for part of the window.
    for p in procs:
        assert p.stdout is not None
        assert (await asyncio.wait_for(p.stdout.readline(), 60)).strip() == b"ready"
    start_at = f"{time.time() + 0.2}\n".encode()
    outputs = await asyncio.gather(*(p.communicate(start_at) for p in procs))
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    results = [json.loads(out) for out, _err in outputs]
    total = sum(r["granted"] for r in results)
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    both = min(r["ended"] for r in results) - max(r["began"] for r in results)
    assert all(r["granted"] > 0 for r in results), results  # both really competed
    # Shared: at most the burst plus the refill. Two private buckets would grant ~2x.
    assert total <= burst + rate * elapsed + 1, (total, elapsed)
    # And the rate is really used, over the time both children were asking.
    assert total >= rate * both * 0.75, (total, both)


async def test_a_retry_after_holds_the_channel_for_every_process_that_long(
    backend: Redis, state: State
) -> None:
    limiter = PostRateLimiter(backend, state.keys, rate_per_s=1.0, burst=3)
    other = PostRateLimiter(backend, state.keys, rate_per_s=1.0, burst=3)  # another worker
    await limiter.hold("C1", 5.0)
    wait = await other.acquire("C1")
    assert 4.5 < wait <= 5.0  # full buckets or not, nobody posts before Retry-After
    assert await other.acquire("C2") == 0.0  # per channel
    await limiter.hold("C1", 1.0)  # a shorter hold never shortens a longer one
    assert await other.acquire("C1") > 4.0
    # The hold outlives the bucket's usual expiry (burst / rate + 1 s = 4 s).
    assert await backend.pttl(state.keys.ratelimit("-", "C1")) > 5000
