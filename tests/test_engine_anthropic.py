"""The engine's Anthropic path end to end: engine → SDK → HTTP → fake Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.dialogue.engine import Engine, OutagePolicy, TurnFailed, add_interjection, resume
from bot.dialogue.models import LockReason, Session, SessionStatus
from bot.dialogue.report import metadata
from bot.llm.anthropic_model import AnthropicModel
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support import RecordingSink, copilot, draft_json, make_session, persona


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    # Every prefix caches here, so small scripted prompts show the cache mechanics; the real
    # per-model minimums are measured by bench/cache.py and tested in test_claude_as_it_is.py.
    async with FakeAnthropic(min_cache_tokens=0) as server:
        yield server


def engine_for(
    fake: FakeAnthropic,
    *,
    max_retries: int = 2,
    max_tokens: int = 16_000,
    outage: OutagePolicy | None = None,
) -> Engine:
    model = AnthropicModel(
        api_key=fake.api_key,
        model="claude-sonnet-5-5",
        base_url=fake.base_url,
        max_retries=max_retries,
    )
    return Engine(model=model, max_tokens=max_tokens, outage=outage)


SCRIPT = [
    copilot("Hi 👋. Caption idea: Threshold.", draft_json(1)),
    persona("Wetter. More storm."),
    copilot("Storm added 🌧️.", draft_json(2)),
    persona("Yes. Approved.", "approve", 2),
]


async def run_to_end(engine: Engine, session: Session) -> None:
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session, RecordingSink())


def by_agent(fake: FakeAnthropic, session: Session) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"copilot": [], "persona": []}
    for body in fake.requests:
        drafts = "draft" in body["output_config"]["format"]["schema"]["properties"]
        out["copilot" if drafts else "persona"].append(body)
    return out


async def test_a_whole_session_through_the_api_locks_the_approved_draft(
    fake: FakeAnthropic,
) -> None:
    for reply in SCRIPT:
        fake.enqueue_text(reply)
    session = make_session()
    await run_to_end(engine_for(fake), session)
    assert session.status == SessionStatus.LOCKED
    assert session.locked is not None and session.locked.reason == LockReason.APPROVED
    assert session.locked.draft == session.drafts[-1]
    assert session.turns[0].text == "Hi 👋. Caption idea: Threshold."
    # The model the response named, not the configured alias, is recorded and priced.
    assert session.models == [fake.served_model("claude-sonnet-5-5")]
    assert metadata(session)["estimated_cost_usd"] > 0
    for body in fake.requests:
        assert body["stream"] is True
        assert body["model"] == "claude-sonnet-5-5"
        assert body["output_config"]["format"]["type"] == "json_schema"


async def test_each_request_extends_the_agents_previous_one_and_reads_the_cache(
    fake: FakeAnthropic,
) -> None:
    for reply in SCRIPT:
        fake.enqueue_text(reply)
    session = make_session()
    engine = engine_for(fake)
    await engine.take_turn(session)
    await engine.take_turn(session)
    add_interjection(session, author="Ana", text="Could the bottle be green glass?")
    await run_to_end(engine, session)
    for agent, bodies in by_agent(fake, session).items():
        assert len(bodies) == 2, agent
        first, second = bodies
        assert second["system"] == first["system"]
        assert second["messages"][: len(first["messages"]) - 1] == first["messages"][:-1]
        # The previous newest message is unchanged apart from its moving cache breakpoint.
        prev_last = {**first["messages"][-1]}
        prev_last["content"] = [
            {k: v for k, v in b.items() if k != "cache_control"} for b in prev_last["content"]
        ]
        assert second["messages"][len(first["messages"]) - 1] == prev_last
    agent_turns = session.agent_turns
    assert agent_turns[2].usage.cache_read_tokens > 0  # the Copilot's second request
    assert agent_turns[3].usage.cache_read_tokens > 0  # the persona's second request
    heard = by_agent(fake, session)["copilot"][1]["messages"][-1]["content"][0]["text"]
    assert '<interjection from="Ana" role="teammate">' in heard and "green glass" in heard


async def test_an_overload_that_outlives_the_retries_pauses_and_retry_resumes(
    fake: FakeAnthropic,
) -> None:
    fake.fail_next(529, k=2, retry_after=0.01)
    fake.enqueue_text(SCRIPT[0])
    session = make_session()
    engine = engine_for(fake, max_retries=1, outage=OutagePolicy(window_seconds=0))
    with pytest.raises(TurnFailed) as failed:
        await engine.take_turn(session)
    assert failed.value.kind == "api"
    assert session.status == SessionStatus.PAUSED and session.turns == []
    assert "529" in (session.error or "")
    assert len(fake.requests) == 2  # the first call and the SDK's one retry
    resume(session)
    await engine.take_turn(session)
    assert session.turns[0].draft is not None


async def test_a_rate_limit_within_the_retries_is_invisible(fake: FakeAnthropic) -> None:
    fake.fail_next(429, k=1, retry_after=0.01)
    fake.enqueue_text(SCRIPT[0])
    session = make_session()
    await engine_for(fake).take_turn(session)
    assert len(session.turns) == 1 and session.status == SessionStatus.RUNNING


async def test_a_truncated_reply_is_retried_once_with_twice_the_budget(fake: FakeAnthropic) -> None:
    fake.enqueue_text(SCRIPT[0])
    fake.enqueue_text(SCRIPT[0])
    fake.truncate_next()
    session = make_session()
    sink = RecordingSink()
    await engine_for(fake, max_tokens=3000).take_turn(session, sink)
    assert [body["max_tokens"] for body in fake.requests] == [3000, 6000]
    assert session.turns[0].text == "Hi 👋. Caption idea: Threshold."
    assert sink.text == session.turns[0].text and sink.resets == 1


async def test_a_reply_truncated_twice_pauses_the_session(fake: FakeAnthropic) -> None:
    fake.enqueue_text(SCRIPT[0])
    fake.enqueue_text(SCRIPT[0])
    fake.truncate_next(2)
    session = make_session()
    with pytest.raises(TurnFailed) as failed:
        await engine_for(fake).take_turn(session)
    assert failed.value.kind == "truncated"
    assert len(fake.requests) == 2
    assert session.status == SessionStatus.PAUSED and session.turns == []


async def test_an_invalid_reply_is_repaired_through_the_api(fake: FakeAnthropic) -> None:
    fake.enqueue_text(copilot("Hi", draft_json(1, duration=7)))
    fake.enqueue_text(SCRIPT[0])
    session = make_session()
    await engine_for(fake).take_turn(session)
    assert len(fake.requests) == 2
    repair = fake.requests[1]["messages"][-1]["content"][0]["text"]
    assert "duration_seconds` 7 is not legal for sora-2" in repair
    assert session.turns[0].draft is not None and session.turns[0].draft.duration_seconds == 8
