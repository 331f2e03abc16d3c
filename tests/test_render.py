"""Renderers against the fake video APIs: each call shape to done, refusals, throttling,
rate limits, resuming a saved job, giving up; the plans each target makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot import metrics
from bot.config import Settings
from bot.dialogue.models import Draft
from bot.dialogue.profiles import resolve_target, targets
from bot.render import RenderError, choose, make
from bot.render.base import RENDER_HOOKS, Cancelled, Done, Failed, Refused, RenderRecord
from bot.render.google import OmniRenderer, VeoRenderer
from bot.render.offline import OfflineRenderer
from bot.render.poll import Progress, RenderResult, drive
from bot.render.prices import price_per_second
from bot.render.runway import RunwayRenderer
from tests.fakes.video_server import VEO_AUDIO_REFUSAL, FakeVideoAPI, JobScript
from tests.support import draft_json


def make_draft(**kw: Any) -> Draft:
    target = kw.pop("target", "sora-2")
    return Draft.model_validate({"version": 1, "target": target, **draft_json(**kw)})


@pytest.fixture
async def fake() -> AsyncIterator[FakeVideoAPI]:
    async with FakeVideoAPI() as server:
        yield server


def renderer_for(name: str, fake: FakeVideoAPI) -> Any:
    if name == "veo":
        return VeoRenderer(api_key=fake.gemini_key, base_url=fake.base_url)
    if name == "omni":
        return OmniRenderer(api_key=fake.gemini_key, base_url=fake.base_url)
    return RunwayRenderer(api_secret=fake.runway_secret, base_url=fake.base_url)


class Run:
    """drive() with a sleep that only records, and what it reported."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.saved: list[tuple[str, int]] = []
        self.progress: list[Progress] = []
        self.now = 1000.0

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    async def on_submitted(self, job_id: str, at: float, attempt: int) -> None:
        self.saved.append((job_id, attempt))

    async def __call__(self, renderer: Any, plan: Any, **kw: Any) -> RenderResult:
        return await drive(
            renderer,
            plan,
            on_submitted=self.on_submitted,
            on_progress=self.progress.append,
            clock=self.clock,
            sleep=self.sleep,
            **kw,
        )


@pytest.mark.parametrize("name", ["veo", "omni", "runway"])
async def test_each_renderer_renders_to_done_through_its_sdk(fake: FakeVideoAPI, name: str) -> None:
    renderer = renderer_for(name, fake)
    counted = metrics.RENDERS.labels(name, "done")._value.get()
    records: list[RenderRecord] = []
    RENDER_HOOKS.append(records.append)
    try:
        plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
        run = Run()
        result = await run(renderer, plan)
    finally:
        RENDER_HOOKS.remove(records.append)
        await renderer.aclose()
    assert isinstance(result.outcome, Done)
    assert result.outcome.video == fake.clip
    assert len(fake.submissions) == 1
    assert run.saved == [(fake.submissions[0].id if name != "veo" else result.job_id, 1)]
    assert result.job_id is not None and fake.submissions[0].id in result.job_id
    assert records == [RenderRecord(name, plan.model, "draft", "done", plan.seconds, plan.cost)]
    assert metrics.RENDERS.labels(name, "done")._value.get() == counted + 1


async def test_veo_sends_the_exact_parameters_of_the_plan(fake: FakeVideoAPI) -> None:
    renderer = renderer_for("veo", fake)
    target = resolve_target("veo-3.1")
    draft = make_draft(size="9:16", duration=6, target="veo-3.1")
    plan = renderer.plan(draft, target, "master")
    await Run()(renderer, plan)
    await renderer.aclose()
    body = fake.submissions[0].body
    assert body["instances"] == [{"prompt": draft.prompt_text}]
    # 1080p needs 8 s on Veo: the 6 s master drops to 720p and says so.
    assert body["parameters"] == {
        "sampleCount": 1,
        "durationSeconds": 6,
        "aspectRatio": "9:16",
        "resolution": "720p",
        "negativePrompt": "on-screen text",
    }
    assert plan.model == "veo-3.1-generate-preview"
    assert any("8 s" in n for n in plan.notes)


async def test_omni_and_runway_send_the_vendor_shape(fake: FakeVideoAPI) -> None:
    draft = make_draft(duration=12)  # sora-2: 12 s renders as each vendor's longest
    for name in ("omni", "runway"):
        renderer = renderer_for(name, fake)
        plan = renderer.plan(draft, resolve_target("sora-2"), "draft")
        await Run()(renderer, plan)
        await renderer.aclose()
        assert plan.seconds == 10 and plan.notes
    omni, runway = (j.body for j in fake.submissions)
    assert omni["response_format"] == {
        "type": "video",
        "aspect_ratio": "16:9",
        "resolution": "360p",
        "duration": "10s",
    }
    assert omni["background"] is True and omni["model"] == "gemini-omni-1.1-flash"
    assert runway == {
        "model": "gen4.5",
        "promptText": draft.prompt_text,
        "ratio": "1280:720",
        "duration": 10,
    }


async def test_a_policy_refusal_is_one_line_and_never_retried(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused"))
    renderer = renderer_for("veo", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    result = await Run()(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Refused)
    assert "safety filters" in result.outcome.reason and "\n" not in result.outcome.reason
    assert result.outcome.charged is False
    assert len(fake.submissions) == 1


async def test_veos_audio_filter_refusal_is_retried_once(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused", reason=VEO_AUDIO_REFUSAL), JobScript("done"))
    renderer = renderer_for("veo", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    run = Run()
    result = await run(renderer, plan)
    assert isinstance(result.outcome, Done) and result.attempts == 2
    assert [a for _, a in run.saved] == [1, 2]
    # Twice refused: the second refusal stands, no third submit.
    fake.script(*(JobScript("refused", reason=VEO_AUDIO_REFUSAL) for _ in range(3)))
    result = await Run()(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Refused) and result.outcome.retry_once
    assert len(fake.submissions) == 4


async def test_runway_safety_failure_is_a_charged_refusal(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused"))
    renderer = renderer_for("runway", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    result = await Run()(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Refused)
    assert result.outcome.charged and "SAFETY.INPUT.TEXT" in result.outcome.reason
    assert len(fake.submissions) == 1


async def test_runway_throttled_waits_for_a_slot(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("done", checks=6, throttled=3))
    renderer = renderer_for("runway", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    run = Run()
    result = await run(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Done)
    statuses = [p.status for p in run.progress]
    assert statuses[:3] == ["throttled: waiting for a free Runway slot"] * 3
    assert "rendering" in statuses and len(fake.submissions) == 1
    # Backoff: each wait at least the last, up to the cap.
    assert run.waits == sorted(run.waits)


@pytest.mark.parametrize("name", ["veo", "omni", "runway"])
async def test_a_429_waits_and_submits_once(fake: FakeVideoAPI, name: str) -> None:
    # google-genai's Interactions client retries once by itself (it reads `attempts` as
    # retries: _gaos/google_genai.py `_translate_retry_config`), honouring Retry-After.
    fake.rate_limit(2 if name != "omni" else 3, retry_after_s=3 if name == "runway" else 0)
    renderer = renderer_for(name, fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    run = Run()
    result = await run(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Done)
    assert len(fake.submissions) == 1
    assert any("rate limited" in p.status for p in run.progress)
    if name == "runway":  # Runway's Retry-After is honoured
        assert run.waits[:2] == [3.0, 3.0]
    else:
        assert run.waits


@pytest.mark.parametrize("name", ["veo", "omni", "runway"])
async def test_a_saved_job_resumes_without_a_second_submit(fake: FakeVideoAPI, name: str) -> None:
    fake.script(JobScript("done", checks=4))
    first = renderer_for(name, fake)
    plan = first.plan(make_draft(), resolve_target("sora-2"), "draft")
    job_id = await first.submit(plan)
    assert not isinstance(await first.check(plan, job_id), Done)
    await first.aclose()  # the process that submitted it is gone
    second = renderer_for(name, fake)
    run = Run()
    result = await run(second, plan, job_id=job_id, submitted_at=run.now)
    await second.aclose()
    assert isinstance(result.outcome, Done)
    assert len(fake.submissions) == 1 and run.saved == []


async def test_polling_gives_up_at_the_vendors_longest_wait(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("done", checks=10_000))
    renderer = renderer_for("veo", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    run = Run()
    result = await run(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Failed) and "6 min" in result.outcome.reason
    assert sum(run.waits[:-1]) <= renderer.max_wait_s < sum(run.waits) + 30
    assert len(fake.submissions) == 1


async def test_omni_failure_and_cancel_are_told_apart(fake: FakeVideoAPI) -> None:
    fake.script(JobScript("refused"), JobScript("failed"), JobScript("cancelled"))
    renderer = renderer_for("omni", fake)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    outcomes = [(await Run()(renderer, plan)).outcome for _ in range(3)]
    await renderer.aclose()
    assert isinstance(outcomes[0], Refused)
    assert isinstance(outcomes[1], Failed) and outcomes[1].retryable
    assert isinstance(outcomes[2], Cancelled)


async def test_a_wrong_key_fails_without_retrying(fake: FakeVideoAPI) -> None:
    renderer = RunwayRenderer(api_secret="wrong", base_url=fake.base_url)
    plan = renderer.plan(make_draft(), resolve_target("sora-2"), "draft")
    result = await Run()(renderer, plan)
    await renderer.aclose()
    assert isinstance(result.outcome, Failed) and not result.outcome.retryable
    assert "Invalid API key" in result.outcome.reason and fake.submissions == []


def test_every_target_plans_every_legal_draft_on_each_of_its_renderers() -> None:
    renderers: dict[str, Any] = {
        "veo": VeoRenderer(api_key="k"),
        "omni": OmniRenderer(api_key="k"),
        "runway": RunwayRenderer(api_secret="k"),
        "offline": OfflineRenderer(),
    }
    for target in targets().values():
        for name in [*target.render, "offline"]:
            renderer = renderers[name]
            for size in target.sizes:
                if name != "offline" and size in ("1:1", "4:3", "21:9"):
                    with pytest.raises(RenderError, match="offline"):
                        renderer.plan(make_draft(size=size), target, "draft")
                    continue
                for seconds in target.size_durations.get(size, target.durations):
                    draft = make_draft(size=size, duration=seconds, target=target.name)
                    for tier in ("draft", "master"):
                        plan = renderer.plan(draft, target, tier)
                        assert plan.cost is not None, (target.name, name, tier, plan.model)


def test_the_draft_tier_is_the_cheaper_one() -> None:
    for target in targets().values():
        for table in target.render.values():
            cheap = price_per_second(table.draft.model, table.draft.resolution)
            full = price_per_second(table.master.model, table.master.resolution)
            assert cheap is not None and full is not None and cheap <= full


def test_choosing_a_renderer() -> None:
    sora = resolve_target("sora-2")
    none = Settings(_env_file=None)  # type: ignore[call-arg]
    assert choose(None, sora, none) == "offline"
    gemini = Settings(_env_file=None, gemini_api_key="k")  # type: ignore[call-arg]
    assert choose(None, sora, gemini) == "omni"
    assert choose(None, resolve_target("veo-3.1"), gemini) == "veo"
    assert choose(None, resolve_target("runway-gen-4.5"), gemini) == "offline"
    with pytest.raises(RenderError, match="RUNWAYML_API_SECRET"):
        choose("runway", sora, gemini)
    with pytest.raises(RenderError, match="do not render on veo"):
        choose("veo", resolve_target("kling-3.0"), gemini)
    with pytest.raises(RenderError, match="Unknown renderer"):
        choose("sora", sora, gemini)
    assert isinstance(make("offline", none), OfflineRenderer)
