"""Renders polling beside turns on one worker: `python -m bench.render_jobs`.

One worker (the production `Worker`, the offline model, the recording surfaces, the real
Redis) runs 6-round sessions one after another, first alone, then while `--renders` (100)
Veo renders poll the fake video API (in its own process) every `--poll` (1) second, each
check a job on the same queue. The poll interval is kept fixed (no backoff) so the renders
keep the worker busy for the whole run, and the offline model takes `--latency` (0.1)
seconds a turn, so the sessions overlap them. Prints each phase's turn latency (the
worker's own `latency_ms`: from taking the job or the last save to this save), the checks
made, and a JSON line. Target: the renders delay no turn by more than 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
import uuid
from typing import Any

from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target
from bot.llm.offline import OfflineModel
from bot.render import jobs as render_jobs
from bot.render import make
from bot.render.jobs import RenderRunner, request
from bot.surfaces.recording import RecordingRenderShow, RecordingSurface
from bot.worker import Worker, WorkerConfig
from state import State, connect
from tests.redis_fixtures import locked, make_session


class Turns(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.loads(record.getMessage())
        except ValueError:
            return
        if isinstance(line, dict) and line.get("event") == "turn":
            self.latencies.append(float(line["latency_ms"]))


def _session() -> Session:
    return Session(
        idea="A lighthouse keeper finds a message in a bottle, written in his own hand",
        persona=resolve_persona("director"),
        target=resolve_target("sora-2"),
        max_rounds=6,
    )


async def _sessions(state: State, n: int) -> None:
    for _ in range(n):
        s = _session()
        await state.sessions.create(s, enqueue=True)
        while True:
            raw = await state.redis.hget(state.keys.session(s.id), "status")
            if raw != SessionStatus.RUNNING.value:
                break
            await asyncio.sleep(0.01)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "turns": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def main(redis_url: str, renders: int, sessions: int, poll: float, latency: float) -> None:
    render_jobs.next_delay = lambda delay, first: first  # fixed polling: the worst case
    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.video_server",
        "--checks",
        "1000000",
        stdout=asyncio.subprocess.PIPE,
    )
    assert fake.stdout is not None
    base_url = (await fake.stdout.readline()).decode().strip()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    redis = await connect(redis_url)
    state = State.create(redis, prefix=prefix)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        gemini_api_key="fake-gemini-key",
        gemini_base_url=base_url,
        render_poll_seconds=poll,
        render_budget_seconds_per_team=10**9,
        render_budget_seconds_per_user=10**9,
    )
    runner = RenderRunner(
        state=state,
        show=RecordingRenderShow(redis, state.keys),
        renderers=lambda name: make(name, settings),
    )
    worker = Worker(
        state=state,
        engine=Engine(model=OfflineModel(latency=latency)),
        surface=RecordingSurface(redis, state.keys),
        renders=runner,
        config=WorkerConfig(concurrency=50, block_ms=100),
    )
    turns = Turns()
    logging.getLogger("sora.worker").addHandler(turns)
    logging.getLogger("sora.worker").setLevel(logging.INFO)
    stopping = asyncio.Event()
    work = asyncio.create_task(worker.run(stopping))
    rows: dict[str, Any] = {}
    try:
        await _sessions(state, sessions)
        rows["alone"] = _summary(turns.latencies)
        turns.latencies.clear()
        veo = runner.renderer("veo")
        for i in range(renders):
            session = locked(make_session())
            await request(
                state,
                session,
                renderer=veo,
                tier="draft",
                user_id=f"U{i}",
                user_name="b",
                settings=settings,
            )
        while True:  # every render submitted and polling
            backlog = (await state.queue.stats()).backlog
            if await state.renders.due() >= renders * 0.8 and backlog == 0:
                break
            await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        checks_before = await _checks(state, renders)
        await _sessions(state, sessions)
        seconds = time.perf_counter() - t0
        checks = await _checks(state, renders) - checks_before
        rows["with_renders"] = _summary(turns.latencies)
        rows["with_renders"]["render_checks_per_s"] = round(checks / seconds, 1)
    finally:
        stopping.set()
        await work
        fake.terminate()
        await fake.wait()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        await redis.aclose()
    delay_p95 = rows["with_renders"]["p95_ms"] - rows["alone"]["p95_ms"]
    delay_max = rows["with_renders"]["max_ms"] - rows["alone"]["max_ms"]
    for name, row in rows.items():
        print(
            f"{name:13}: turn latency p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, "
            f"max {row['max_ms']} ms over {row['turns']} turns"
        )
    print(
        f"{renders} renders polling ({rows['with_renders']['render_checks_per_s']} checks/s): "
        f"turns delayed by {delay_p95:+.1f} ms at p95, {delay_max:+.1f} ms at worst "
        "(target: <= 100 ms)"
    )
    print(
        json.dumps(
            {
                "render_jobs": rows,
                "renders": renders,
                "delay_p95_ms": round(delay_p95, 1),
                "delay_max_ms": round(delay_max, 1),
            }
        )
    )


async def _checks(state: State, renders: int) -> int:
    total = 0
    pattern = state.keys.render("*", "?" * 16)  # every workspace's render records
    async for key in state.redis.scan_iter(match=pattern, count=1000):
        raw = await state.redis.hget(key, "json")
        if raw:
            total += int(json.loads(raw).get("checks", 0))
    return total


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    )
    a = parser.parse_args()
    asyncio.run(main(a.redis_url, a.renders, a.sessions, a.poll, a.latency))
