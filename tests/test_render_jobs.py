"""Renders as jobs on the workers' queue, against the fake video APIs and a real Redis:
budgets reserved and refunded atomically, waits that hold no worker, a dead worker's
render resumed without a second submit, provenance in the library."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.render import make
from bot.render.jobs import BudgetExceeded, RenderRecord, RenderRunner, request, today
from bot.surfaces.recording import RecordingRenderShow
from state import LibraryEntry, State
from tests.fakes.video_server import VEO_AUDIO_REFUSAL, FakeVideoAPI, JobScript
from tests.redis_fixtures import locked, make_session
from tests.support import wait_until
from tests.test_worker import spawn_worker

# On the Redis Cluster too: a render's record and budgets are its workspace's slot, its
# schedule and jobs the queue's.
ON_CLUSTER_TOO = {"test_a_render_job_runs_to_a_delivered_clip"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVideoAPI]:
    async with FakeVideoAPI() as server:
        yield server


def settings_for(fake: FakeVideoAPI, **kw: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        gemini_api_key=fake.gemini_key,
        gemini_base_url=fake.base_url,
        runwayml_api_secret=fake.runway_secret,
        runwayml_base_url=fake.base_url,
        **kw,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def pump(
    state: State,
    runner: RenderRunner,
    clock: Clock,
    rid: str,
    *,
    worker: str = "w1",
    limit: int = 100,
    team: str = "T1",
) -> RenderRecord:
    """Take and run jobs, moving the clock to each due check, until the render ends."""
    for _ in range(limit):
        jobs = await state.queue.take(worker, count=10)
        for job in jobs:
            await runner.handle(job, f"{worker}:{job.id}")
        rec = await load_record(state, rid, team)
        if rec.finished and not rec.steps:
            return rec
        if not jobs:
            clock.now += 60
            await runner.promote()
    raise AssertionError("the render never ended")


async def load_record(state: State, rid: str, team: str = "T1") -> RenderRecord:
    loaded = await state.renders.load(rid, team=team)
    assert loaded is not None
    return RenderRecord.model_validate_json(loaded[0])


class Rig:
    def __init__(self, state: State, fake: FakeVideoAPI, **settings: Any) -> None:
        self.state = state
        self.settings = settings_for(fake, **settings)
        self.clock = Clock()
        self.clips = Path(tempfile.mkdtemp(prefix="sora-clips-"))
        self.runner = self.new_runner()

    def new_runner(self) -> RenderRunner:
        return RenderRunner(
            state=self.state,
            show=RecordingRenderShow(self.state.redis, self.state.keys),
            renderers=lambda name: make(name, self.settings),
            clock=self.clock,
            clips=self.clips,
        )

    async def ask(self, renderer: str = "veo", **kw: Any) -> RenderRecord:
        session = locked(make_session())
        await self.state.library.add(LibraryEntry.from_session(session))
        return await request(
            self.state,
            session,
            renderer=self.runner.renderer(renderer),
            tier="draft",
            user_id=kw.pop("user_id", "U1"),
            user_name="ada",
            settings=self.settings,
            now=self.clock.now,
        )

    async def pump(self, rid: str, *, worker: str = "w1", limit: int = 100) -> RenderRecord:
        return await pump(self.state, self.runner, self.clock, rid, worker=worker, limit=limit)

    async def record(self, rid: str) -> RenderRecord:
        return await load_record(self.state, rid)

    async def shown(self, rid: str) -> list[dict[str, Any]]:
        raw = await self.state.redis.lrange(self.state.keys.recorded(f"render-{rid}"), 0, -1)
        return [json.loads(r) for r in raw]

    async def used(self, user: str = "U1") -> tuple[int, int]:
        t, u = await self.state.renders.budget_left(
            team="T1", user=user, day=today(self.clock.now), team_limit=0, user_limit=0
        )
        return -t, -u

    async def close(self) -> None:
        await self.runner.aclose()
        shutil.rmtree(self.clips, ignore_errors=True)


@pytest.fixture
async def rig(real_state: State, fake: FakeVideoAPI) -> AsyncIterator[Rig]:
    r = Rig(real_state, fake)
    yield r
    await r.close()


@pytest.mark.parametrize("renderer", ["veo", "omni", "runway", "offline"])
async def test_a_render_job_runs_to_a_delivered_clip(
    rig: Rig, fake: FakeVideoAPI, renderer: str
) -> None:
    rec = await rig.ask(renderer)
    assert await rig.used() == (8, 8)
    done = await rig.pump(rec.id)
    assert done.status == "done" and done.charged
    assert len(fake.submissions) == (0 if renderer == "offline" else 1)
    shown = await rig.shown(rec.id)
    clips = [e for e in shown if e["kind"] == "clip"]
    assert len(clips) == 1 and clips[0]["bytes"] > 0
    assert shown[0] == {"kind": "progress", "status": "queued", "vendor": "queued"}
    assert shown[-1]["status"] == "done"
    entry = await rig.state.library.get(rec.session_id, team=rec.team_id)
    assert entry is not None and len(entry.renders) == 1
    prov = entry.renders[0]
    assert (prov.renderer, prov.tier, prov.seconds) == (renderer, "draft", 8)
    assert prov.vendor_job_id == done.vendor_job_id and prov.file_id == clips[0]["file_id"]
    # Nothing left behind: no job in the stream, no check scheduled, no clip kept.
    assert (await rig.state.queue.stats()).backlog == 0
    assert await rig.state.renders.due() == 0
    assert not list(rig.clips.iterdir())
    assert not [k async for k in rig.state.redis.scan_iter(match="*clip*")]
    assert await rig.used() == (8, 8)


async def test_a_worker_that_dies_after_the_download_downloads_again_and_posts_once(
    rig: Rig, fake: FakeVideoAPI
) -> None:
    fake.script(JobScript("done", checks=1))
    rec = await rig.ask("runway")
    shows: list[str] = []
    real = RecordingRenderShow(rig.state.redis, rig.state.keys)

    class DiesAtDelivery:
        async def show(self, step: str, record: RenderRecord, clip: Path | None) -> dict[str, str]:
            shows.append(step)
            if step == "deliver":
                raise RuntimeError("the worker dies here")
            return await real.show(step, record, clip)

    rig.runner.surface = DiesAtDelivery()
    with pytest.raises(RuntimeError):
        await rig.pump(rec.id)
    assert shows[-1] == "deliver" and (await rig.record(rec.id)).steps == ["deliver", "progress"]
    # Its disk goes with it (another machine takes over): the clip comes from the vendor again.
    for leftover in rig.clips.iterdir():
        leftover.unlink()
    downloads = len([r for r in fake.requests if "output" in r[1]])
    rig.runner = rig.new_runner()
    reclaimed = await rig.state.queue.reclaim("w2", min_idle_ms=0)
    await rig.runner.handle(reclaimed.jobs[0], "w2:b")
    done = await rig.record(rec.id)
    assert done.status == "done" and not done.steps and "clip_error" not in done.shown
    assert len([r for r in fake.requests if "output" in r[1]]) == downloads + 1
    assert len(fake.submissions) == 1
    clips = [e for e in await rig.shown(rec.id) if e["kind"] == "clip"]
    assert len(clips) == 1 and clips[0]["bytes"] > 0


async def test_over_budget_nothing_is_queued(real_state: State, fake: FakeVideoAPI) -> None:
    rig = Rig(real_state, fake, render_budget_seconds_per_team=20)
    await rig.ask("veo", user_id="U1")
    await rig.ask("veo", user_id="U2")
    with pytest.raises(BudgetExceeded, match="The workspace can render 4 s more"):
        await rig.ask("veo", user_id="U3")
    rig2 = Rig(real_state, fake, render_budget_seconds_per_user=10)
    with pytest.raises(BudgetExceeded, match="You can render 2 s more"):
        await rig2.ask("veo", user_id="U1")
    assert (await real_state.queue.stats()).backlog == 2
    assert await rig.used("U3") == (16, 0)
    await rig.close()
    await rig2.close()


async def test_an_uncharged_refusal_gives_the_seconds_back(rig: Rig, fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused"))
    rec = await rig.pump((await rig.ask("veo")).id)
    assert rec.status == "refused" and not rec.charged and "safety" in rec.reason
    assert len(fake.submissions) == 1 and await rig.used() == (0, 0)
    assert (await rig.shown(rec.id))[-1]["status"] == "refused"


async def test_a_charged_refusal_keeps_them(rig: Rig, fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused"))
    rec = await rig.pump((await rig.ask("runway")).id)
    assert rec.status == "refused" and rec.charged and await rig.used() == (8, 8)


async def test_veos_audio_refusal_is_resubmitted_once(rig: Rig, fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused", reason=VEO_AUDIO_REFUSAL), JobScript("done"))
    rec = await rig.pump((await rig.ask("veo")).id)
    assert rec.status == "done" and rec.attempt == 2 and len(fake.submissions) == 2


async def test_throttled_and_rate_limited_renders_wait_without_a_worker(
    rig: Rig, fake: FakeVideoAPI
) -> None:
    fake.rate_limit(2)
    fake.script(JobScript("done", checks=5, throttled=3))
    rec = await rig.ask("runway")
    # Rate limited: the render waits in the schedule, not in a task.
    jobs = await rig.state.queue.take("w1", count=1)
    await rig.runner.handle(jobs[0], "w1:a")
    assert (await rig.record(rec.id)).status == "queued"
    assert await rig.state.renders.due() == 1 and (await rig.state.queue.stats()).backlog == 0
    done = await rig.pump(rec.id)
    assert done.status == "done" and len(fake.submissions) == 1
    assert done.checks >= 5


async def test_a_dead_workers_render_is_checked_not_submitted_again(
    rig: Rig, fake: FakeVideoAPI
) -> None:
    fake.script(JobScript("done", checks=3))
    rec = await rig.ask("veo")
    first = await rig.state.queue.take("w1", count=1)
    await rig.runner.handle(first[0], "w1:a")  # submitted, id saved, check scheduled
    assert (await rig.record(rec.id)).vendor_job_id
    rig.clock.now += 60
    await rig.runner.promote()
    taken = await rig.state.queue.take("w1", count=1)
    assert taken and taken[0].render == rec.id  # w1 dies holding this job
    rig.runner = rig.new_runner()
    reclaimed = await rig.state.queue.reclaim("w2", min_idle_ms=0)
    assert [j.render for j in reclaimed.jobs] == [rec.id]
    await rig.runner.handle(reclaimed.jobs[0], "w2:b")
    done = await rig.pump(rec.id, worker="w2")
    assert done.status == "done" and len(fake.submissions) == 1
    assert len([e for e in await rig.shown(rec.id) if e["kind"] == "clip"]) == 1


async def test_a_render_that_outlasts_the_vendors_wait_fails_and_refunds(
    rig: Rig, fake: FakeVideoAPI
) -> None:
    fake.script(JobScript("done", checks=100_000))
    rec = await rig.pump((await rig.ask("veo")).id, limit=1000)
    assert rec.status == "failed" and "6 min" in rec.reason
    assert await rig.used() == (0, 0)


async def test_a_worker_sigkilled_mid_poll_submits_once_and_posts_once(
    real_state: State, fake: FakeVideoAPI, prefix: str
) -> None:
    rig = Rig(real_state, fake)
    fake.script(JobScript("done", checks=6))
    rec = await rig.ask("veo")
    await rig.close()
    env = {
        "GEMINI_API_KEY": fake.gemini_key,
        "GEMINI_BASE_URL": fake.base_url,
        "RENDER_POLL_SECONDS": "0.1",
    }
    first = spawn_worker(prefix, latency=0, **env)
    try:
        await wait_until(lambda: fake.submissions and fake.submissions[0].checks >= 2, "polls")
        fake.delay_s = 0.5  # the next check is in flight when the worker dies
        checks = fake.submissions[0].checks
        await wait_until(lambda: fake.requests[-1][0] == "GET", "a check in flight")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    fake.delay_s = 0.0
    second = spawn_worker(prefix, latency=0, **env)
    try:
        for _ in range(300):
            done = await rig.record(rec.id)
            if done.finished and not done.steps:
                break
            await asyncio.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait()
    assert done.status == "done" and fake.submissions[0].checks > checks
    assert len(fake.submissions) == 1
    assert len([e for e in await rig.shown(rec.id) if e["kind"] == "clip"]) == 1
