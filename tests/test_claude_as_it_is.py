"""Claude as it really answers, through the SDK and HTTP to the fake Messages API.

The fake here keeps its real rules on: each model's minimum cacheable prompt, thinking that
spends output tokens unless it is limited, refusals with empty content, overload storms, and
the schema-only model (a model that fills the reply schema and never reads the prompt).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any, get_args

import pytest
from anthropic.types import ModelParam

from bot.config import Settings
from bot.dialogue.agents import reply_schema
from bot.dialogue.engine import Engine, OutagePolicy, TurnFailed, TurnResult, resume
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import targets
from bot.dialogue.report import metadata
from bot.driver import drive_turn, make_engine
from bot.llm.anthropic_model import (
    AnthropicModel,
    Effort,
    ThinkingMode,
    effort_for,
    thinking_param,
)
from bot.slack.blocks import root_blocks
from bot.surfaces.base import waiting_notice
from bot.surfaces.terminal import PlainSurface
from tests.fakes.anthropic_server import (
    DEFAULT_THINKING_TOKENS,
    FakeAnthropic,
    min_cache_tokens_for,
    validate,
)
from tests.support import copilot, draft_json, make_session

MODEL = "claude-sonnet-5-5"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:  # every real rule on
        yield server
        assert not server.internal_errors, server.internal_errors


def claude(fake: FakeAnthropic, *, model: str = MODEL, **kw: Any) -> AnthropicModel:
    return AnthropicModel(
        api_key=fake.api_key, model=model, base_url=fake.base_url, max_retries=0, **kw
    )


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def repair_calls(fake: FakeAnthropic) -> int:
    return sum(
        "was not accepted" in json.dumps(body.get("messages", []), ensure_ascii=False)
        for body in fake.requests
    )


# ---- the schema-only model --------------------------------------------------------------------


async def schema_only_session(fake: FakeAnthropic, target: str) -> Session:
    """A 6-round session on `target`, each turn answered by the fake's schema-only model."""
    session = make_session(target=target, max_rounds=6)
    engine = make_engine(claude(fake), settings())
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    return session


@pytest.mark.parametrize("target", sorted(targets()))
async def test_a_schema_only_model_locks_a_six_round_session_without_a_repair_call(
    fake: FakeAnthropic, target: str
) -> None:
    session = await schema_only_session(fake, target)
    assert session.status == SessionStatus.LOCKED, session.error
    assert repair_calls(fake) == 0
    assert len(fake.requests) == len(session.turns)  # one call per turn, nothing repeated
    profile = session.target
    for d in session.drafts:
        assert d.size in profile.sizes and d.duration_seconds in profile.durations
        assert profile.prompt_min_chars <= len(d.prompt_text) <= profile.prompt_max_chars
    assert session.locked is not None and session.locked.draft == session.drafts[-1]


@pytest.mark.parametrize("target", sorted(targets()))
async def test_each_agents_request_is_its_previous_one_plus_new_turns_and_reads_it_from_cache(
    fake: FakeAnthropic, target: str
) -> None:
    session = await schema_only_session(fake, target)
    by_agent: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for body, turn in zip(fake.requests, session.turns, strict=True):
        by_agent.setdefault(turn.speaker.value, []).append((body, turn.usage))
    for agent, calls in by_agent.items():
        for (before, _), (after, usage) in itertools.pairwise(calls):
            assert after["system"] == before["system"], agent
            assert after["output_config"] == before["output_config"], agent
            n = len(before["messages"])
            assert after["messages"][: n - 1] == before["messages"][: n - 1], agent
            texts = [b["text"] for b in after["messages"][n - 1]["content"]]
            assert texts == [b["text"] for b in before["messages"][n - 1]["content"]], agent
            # Everything the previous request sent is read from the cache now.
            assert usage.cache_read_tokens >= sum(
                len(b["text"]) // 4 for m in before["messages"] for b in m["content"]
            ), agent


def test_every_shipped_target_gets_a_schema_the_api_accepts_with_its_legal_values() -> None:
    for profile in targets().values():
        schema = reply_schema("copilot", profile)
        draft = schema["$defs"]["DraftOut"]["properties"]
        assert draft["size"]["enum"] == profile.sizes
        assert draft["duration_seconds"]["enum"] == profile.durations
        for size in profile.sizes:
            assert size in draft["size"]["description"]
        body = {
            "model": MODEL,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
        assert validate(body) is None
        # Built once per target: the same object, so every request's prefix is identical.
        assert reply_schema("copilot", profile) is schema


def test_the_fake_rejects_schema_keywords_structured_outputs_do_not_support() -> None:
    for keyword, value in (("minLength", 10), ("maximum", 3), ("minItems", 2)):
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"x": {"type": "string", keyword: value}},
            "required": ["x"],
        }
        body = {
            "model": MODEL,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
        assert keyword in (validate(body) or "")


# ---- thinking and effort ------------------------------------------------------------------------


def sdk_models() -> list[str]:
    return [m for arg in get_args(ModelParam) for m in get_args(arg)]


def test_the_thinking_and_effort_sent_are_accepted_by_every_model_at_every_setting() -> None:
    efforts: list[Effort | None] = [None, *get_args(Effort)]
    modes: list[ThinkingMode] = list(get_args(ThinkingMode))
    for model in sdk_models():
        for mode in modes:
            for effort in efforts:
                thinking, sent_effort = (
                    thinking_param(model, mode, effort),
                    effort_for(model, effort),
                )
                body: dict[str, Any] = {
                    "model": model,
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                if thinking is not None:
                    body["thinking"] = thinking
                if sent_effort is not None:
                    body["output_config"] = {"effort": sent_effort}
                assert validate(body) is None, (model, mode, effort, body)


def test_the_effort_and_thinking_settings_reach_the_client() -> None:
    model = AnthropicModel.from_settings(
        settings(anthropic_api_key="k", anthropic_effort="default", anthropic_thinking="adaptive")
    )
    assert model.effort is None and model.thinking == {"type": "adaptive"}
    model = AnthropicModel.from_settings(settings(anthropic_api_key="k"))
    assert model.effort == "low" and model.thinking == {"type": "between_tools"}


def test_the_fake_refuses_thinking_disabled_where_the_model_does() -> None:
    for model in ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1"):
        body = {
            "model": model,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "disabled"},
        }
        assert "not supported" in (validate(body) or "")


async def test_by_default_a_turn_does_not_think_and_asks_for_low_effort(
    fake: FakeAnthropic,
) -> None:
    session = make_session()
    await make_engine(claude(fake), settings()).take_turn(session)
    body = fake.requests[0]
    assert body["thinking"] == {"type": "between_tools"}
    assert body["output_config"]["effort"] == "low"
    assert session.turns[0].usage.thinking_tokens == 0


async def test_unlimited_thinking_eats_the_budget_and_one_retry_with_twice_it_completes(
    fake: FakeAnthropic,
) -> None:
    # What issue 8 saw: Sonnet 5.5 thinks at high effort by default, thinking counts toward
    # max_tokens, and 4,096 tokens no longer hold thinking plus a Copilot reply.
    fake.enqueue_text(copilot("Hi", draft_json(1)))
    fake.enqueue_text(copilot("Hi", draft_json(1)))
    model = claude(fake, effort=None, thinking="adaptive")
    session = make_session()
    await Engine(model=model, max_tokens=4096).take_turn(session)
    assert [body["max_tokens"] for body in fake.requests] == [4096, 8192]
    high = DEFAULT_THINKING_TOKENS["high"]
    usage = session.turns[0].usage
    assert usage.thinking_tokens == 2 * high  # recorded from usage.output_tokens_details
    assert metadata(session)["tokens"]["thinking"] == 2 * high  # and shown in the report
    assert usage.output_tokens > usage.thinking_tokens
    assert session.turns[0].draft is not None


async def test_a_model_whose_thinking_is_always_on_thinks_briefly_at_low_effort(
    fake: FakeAnthropic,
) -> None:
    session = make_session()
    await make_engine(claude(fake, model="claude-opus-5-5"), settings()).take_turn(session)
    assert "thinking" not in fake.requests[0]  # disabled would be a 400
    assert session.turns[0].usage.thinking_tokens == DEFAULT_THINKING_TOKENS["low"]


# ---- refusals -----------------------------------------------------------------------------------


async def test_a_refusal_pauses_with_a_plain_message_and_no_repair_call(
    fake: FakeAnthropic,
) -> None:
    fake.refuse_next(category="general_harms", explanation="The request asks for graphic harm.")
    out = io.StringIO()
    session = make_session()
    result = await drive_turn(make_engine(claude(fake), settings()), session, PlainSurface(out))
    assert result is None
    assert len(fake.requests) == 1
    assert session.status == SessionStatus.PAUSED and session.turns == []
    assert session.error == "Claude declined this turn: The request asks for graphic harm."
    assert "paused: Claude declined this turn" in out.getvalue()


async def test_a_refusal_without_an_explanation_names_its_category(fake: FakeAnthropic) -> None:
    fake.refuse_next(category="cyber")
    session = make_session()
    with pytest.raises(TurnFailed) as failed:
        await make_engine(claude(fake), settings()).take_turn(session)
    assert failed.value.kind == "refused"
    assert session.error == "Claude declined this turn: cyber"


async def test_an_empty_reply_is_repaired_without_an_empty_block_the_api_would_reject(
    fake: FakeAnthropic,
) -> None:
    fake.enqueue_text("   ")
    fake.enqueue_text(copilot("Hi", draft_json(1)))
    session = make_session()
    await make_engine(claude(fake), settings()).take_turn(session)
    assert len(fake.requests) == 2 and session.turns[0].draft is not None
    repair = fake.requests[1]["messages"]
    assert repair[-1]["role"] == "user" and "was not accepted" in json.dumps(repair[-1])
    assert len(repair) == len(fake.requests[0]["messages"])  # no blank assistant message


# ---- outages -------------------------------------------------------------------------------------


class VirtualTime:
    """One clock for the fake's storm and the engine's sleeps, so a minute passes at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def outage_engine(fake: FakeAnthropic, time: VirtualTime, window: float) -> Engine:
    return Engine(
        model=claude(fake),
        outage=OutagePolicy(window_seconds=window, base_seconds=2, cap_seconds=30),
        sleep=time.sleep,
        jitter=lambda: 1.0,
        monotonic=time,
    )


async def turn_in_a_storm(
    fake: FakeAnthropic, storm_seconds: float
) -> tuple[TurnResult | None, Session, Engine, VirtualTime, io.StringIO]:
    """One turn taken while the API answers 529 for `storm_seconds` (virtual time), with a
    120 s retry window; the terminal's output shows what a person sees."""
    time = VirtualTime()
    fake.clock = time
    fake.storm(storm_seconds)
    out = io.StringIO()
    session = make_session()
    engine = outage_engine(fake, time, window=120)
    result = await drive_turn(engine, session, PlainSurface(out))
    return result, session, engine, time, out


async def test_a_60_second_overload_storm_is_waited_out_without_a_pause(
    fake: FakeAnthropic,
) -> None:
    result, session, _, time, out = await turn_in_a_storm(fake, 60)
    assert result is not None and session.status == SessionStatus.RUNNING
    shown = out.getvalue()
    assert "paused" not in shown
    assert shown.count("Claude is overloaded; retrying in") == 5  # 2, 4, 8, 16, 30 s
    assert shown.count("── Sora Copilot") == 1  # the turn was started once, shown once
    assert time.now >= 60
    assert len(fake.requests) == 6


async def test_a_storm_longer_than_the_window_pauses_once_and_retry_completes(
    fake: FakeAnthropic,
) -> None:
    result, session, engine, time, out = await turn_in_a_storm(fake, 600)
    assert result is None
    assert session.status == SessionStatus.PAUSED and session.turns == []
    assert "529" in (session.error or "") and "still failing after" in (session.error or "")
    assert out.getvalue().count("paused") == 1
    time.now = 601  # the storm is over; a person presses Retry
    resume(session)
    assert await drive_turn(engine, session, PlainSurface(out)) is not None
    assert len(session.turns) == 1


def test_the_waiting_notice_reads_as_the_issue_asks_and_shows_on_the_slack_root() -> None:
    assert waiting_notice(7.2) == "Claude is overloaded; retrying in 8 s"
    # The notice says what is happening: a dropped connection is not an overload.
    assert waiting_notice(3, None) == "Claude cannot be reached; retrying in 3 s"
    assert waiting_notice(3, 429) == "Claude's rate limit is reached; retrying in 3 s"
    assert waiting_notice(3, 503) == "Claude's API is failing (HTTP 503); retrying in 3 s"
    session = make_session()
    text = json.dumps(root_blocks(session, notice=waiting_notice(4)))
    assert "Claude is overloaded; retrying in 4 s" in text


# ---- the minimum cacheable prompt ----------------------------------------------------------------


async def test_a_prefix_below_the_models_minimum_is_neither_written_nor_read(
    fake: FakeAnthropic,
) -> None:
    from bot.llm.base import Message, ModelRequest

    # About 700 tokens: above Sonnet 5.5's 512, below Sonnet 5's 1,024.
    system = "Stable, useful material for the agent. " * 72
    assert min_cache_tokens_for("claude-sonnet-5-5") == 512
    assert min_cache_tokens_for("claude-sonnet-5") == 1024
    request = ModelRequest(
        agent="persona",
        system=system,
        messages=[Message("user", "Round 1 of 6.")],
        schema=reply_schema("persona", make_session().target),
        max_tokens=2000,
    )
    for model, cached in (("claude-sonnet-5-5", True), ("claude-sonnet-5", False)):
        client = claude(fake, model=model)
        first = await client.complete(request)
        second = await client.complete(request)
        await client.aclose()
        assert (first.usage.cache_write_tokens > 0) is cached, model
        assert (second.usage.cache_read_tokens > 0) is cached, model
        if not cached:
            assert first.usage.input_tokens == second.usage.input_tokens > 0
