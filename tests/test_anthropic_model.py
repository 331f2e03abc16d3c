"""The Claude client against a fake Messages API: streaming, caching, usage, errors, prices.

Nothing here reaches Anthropic: every call goes to tests/fakes/anthropic_server.py on
127.0.0.1, through the real SDK. Retries are kept fast by a short ``retry-after``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from bot.config import Settings
from bot.dialogue.agents import reply_schema
from bot.dialogue.profiles import resolve_target
from bot.llm.anthropic_model import AnthropicModel
from bot.llm.base import Message, ModelError, ModelRequest
from bot.llm.prices import estimate_cost, price_for
from bot.llm.usage import Usage
from tests.fakes.anthropic_server import FakeAnthropic

MODEL = "claude-sonnet-5-5"
SERVED = "claude-sonnet-5-5-20260815"
SYSTEM = "You are the Sora Copilot. You write prompts for text-to-video models. " * 8
SCHEMA = reply_schema("persona", resolve_target("sora-2"))
REPLY = json.dumps(
    {
        "message": "Closer. Keep the lamp's sweep, lose the drone shot; I want it handheld.",
        "verdict": {"decision": "revise", "version": None},
    }
)
FAST = 0.01  # seconds of retry-after: the SDK waits this instead of its 0.5 s+ backoff
ROOT = Path(__file__).resolve().parent.parent


def make_request(messages: list[Message], *, max_tokens: int = 1024) -> ModelRequest:
    return ModelRequest(
        agent="persona",
        system=SYSTEM,
        messages=messages,
        schema=SCHEMA,
        max_tokens=max_tokens,
    )


FIRST = [Message("user", "The idea: a lighthouse keeper finds a message in a bottle. Begin.")]


class Chunks:
    def __init__(self) -> None:
        self.items: list[str] = []

    async def __call__(self, text: str) -> None:
        self.items.append(text)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    # Every prefix caches, so the cache mechanics show on small prompts; the real minimums
    # have their own tests below.
    async with FakeAnthropic(chunk_chars=8, min_cache_tokens=0) as server:
        yield server
        assert not server.internal_errors, server.internal_errors


def client_for(fake: FakeAnthropic, *, max_retries: int = 0, **kw: Any) -> AnthropicModel:
    return AnthropicModel(
        api_key=kw.pop("api_key", fake.api_key),
        model=MODEL,
        base_url=fake.base_url,
        max_retries=max_retries,
        timeout=10.0,
        **kw,
    )


@pytest.fixture
async def model(fake: FakeAnthropic) -> AsyncIterator[AnthropicModel]:
    client = client_for(fake)
    yield client
    await client.aclose()


def cache_controls(body: Any) -> list[Any]:
    """Every cache_control in a request body, anywhere."""
    found: list[Any] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "cache_control":
                found.append(value)
            else:
                found.extend(cache_controls(value))
    elif isinstance(body, list):
        for value in body:
            found.extend(cache_controls(value))
    return found


# ---- streaming and the reply -----------------------------------------------------------------


async def test_streamed_text_reaches_on_text_in_several_chunks_that_join_to_the_reply(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    chunks = Chunks()

    reply = await model.complete(make_request(FIRST), chunks)

    assert len(chunks.items) > 3
    assert "".join(chunks.items) == reply.text == REPLY
    assert reply.stop_reason == "end_turn"


async def test_complete_works_without_a_text_callback(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)

    reply = await model.complete(make_request(FIRST))

    assert reply.text == REPLY


async def test_reply_records_usage_with_cache_fields_and_the_model_the_response_names(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)

    reply = await model.complete(make_request(FIRST))

    prompt_tokens = len(SYSTEM) // 4 + len(FIRST[0].content) // 4
    assert reply.usage == Usage(
        input_tokens=0,  # everything up to the last breakpoint is written to the cache
        output_tokens=len(REPLY) // 4,
        cache_read_tokens=0,
        cache_write_tokens=prompt_tokens,
    )
    assert reply.model == SERVED != MODEL


async def test_the_served_model_is_recorded_even_when_it_is_not_the_requested_family(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY, model="claude-opus-5-5-20260901")

    reply = await model.complete(make_request(FIRST))

    assert reply.model == "claude-opus-5-5-20260901"


# ---- what is sent ----------------------------------------------------------------------------


async def test_request_caches_the_system_prompt_asks_for_the_schema_and_streams(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)

    await model.complete(make_request(FIRST, max_tokens=777))

    sent = fake.requests[0]
    assert sent["model"] == MODEL
    assert sent["max_tokens"] == 777
    assert sent["stream"] is True
    assert sent["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    assert sent["output_config"] == {
        "format": {"type": "json_schema", "schema": SCHEMA},
        "effort": "low",
    }
    # Sonnet 5.5 refuses thinking "disabled"; between_tools is its lowest setting.
    assert sent["thinking"] == {"type": "between_tools"}


async def test_only_the_last_block_of_the_last_user_message_carries_a_message_breakpoint(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    messages = [
        *FIRST,
        Message("assistant", REPLY),
        Message("user", "Copilot: draft v1 follows.\n\nHuman in the thread: make it dusk."),
    ]

    await model.complete(make_request(messages))

    sent = fake.requests[0]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [m["content"][0]["text"] for m in sent["messages"]] == [m.content for m in messages]
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    in_messages = cache_controls(sent["messages"])
    assert len(in_messages) == 1
    assert len(cache_controls(sent)) == 2  # system + last user message: well under the API's 4


async def test_the_same_request_twice_is_sent_identically_and_read_wholly_from_the_cache(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    fake.enqueue_text(REPLY)

    first = await model.complete(make_request(FIRST))
    second = await model.complete(make_request(FIRST))

    # Nothing time-dependent (no timestamps, ids or counters) is added to a request.
    assert fake.requests[0] == fake.requests[1]
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens > 0
    assert second.usage.cache_write_tokens == 0


async def test_a_request_that_extends_the_previous_one_reads_that_prefix_from_the_cache(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    first = await model.complete(make_request(FIRST))
    turn = "Copilot: here is draft v1, a dusk shot from the gallery rail."
    extended = [*FIRST, Message("assistant", first.text), Message("user", turn)]
    fake.enqueue_text(REPLY)

    second = await model.complete(make_request(extended))

    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens > 0
    assert second.usage.cache_write_tokens == len(first.text) // 4 + len(turn) // 4
    assert second.usage.input_tokens == 0


# ---- errors ----------------------------------------------------------------------------------


async def test_a_rate_limit_then_success_is_retried_by_the_sdk_and_succeeds(
    fake: FakeAnthropic,
) -> None:
    client = client_for(fake, max_retries=1)
    fake.fail_next(429, retry_after=FAST)
    fake.enqueue_text(REPLY)

    reply = await client.complete(make_request(FIRST))
    await client.aclose()

    assert reply.text == REPLY
    assert len(fake.requests) == 2
    assert fake.requests[0] == fake.requests[1]
    assert [h["x-stainless-retry-count"] for h in fake.request_headers] == ["0", "1"]


@pytest.mark.parametrize(
    ("status", "words"),
    [(529, "Anthropic API overloaded (529) after 2 retries"), (500, "internal error (500)")],
)
async def test_an_overload_or_server_error_that_outlives_the_retries_becomes_a_model_error(
    fake: FakeAnthropic, status: int, words: str
) -> None:
    client = client_for(fake, max_retries=2)
    fake.fail_next(status, k=3, retry_after=FAST)

    with pytest.raises(ModelError) as caught:
        await client.complete(make_request(FIRST))
    await client.aclose()

    assert caught.value.status == status
    assert caught.value.retryable is True
    assert words in str(caught.value)
    assert len(fake.requests) == 3


async def test_a_wrong_api_key_becomes_a_non_retryable_model_error_without_retries(
    fake: FakeAnthropic,
) -> None:
    client = client_for(fake, max_retries=2, api_key="sk-ant-wrong")

    with pytest.raises(ModelError) as caught:
        await client.complete(make_request(FIRST))
    await client.aclose()

    assert caught.value.status == 401
    assert caught.value.retryable is False
    assert "rejected the API key (401)" in str(caught.value)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_are_not_retried_and_not_retryable(
    fake: FakeAnthropic, status: int
) -> None:
    client = client_for(fake, max_retries=2)
    fake.fail_next(status, k=3)

    with pytest.raises(ModelError) as caught:
        await client.complete(make_request(FIRST))
    await client.aclose()

    assert (caught.value.status, caught.value.retryable) == (status, False)
    assert len(fake.requests) == 1


async def test_an_error_event_mid_stream_becomes_a_model_error_after_some_text(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    fake.error_mid_stream_next()
    chunks = Chunks()

    with pytest.raises(ModelError) as caught:
        await model.complete(make_request(FIRST), chunks)

    assert chunks.items  # the stream had begun: the SDK cannot retry it
    assert caught.value.status == 529
    assert caught.value.retryable is True
    assert "overloaded (529) mid-stream: Overloaded" in str(caught.value)


async def test_an_unreachable_api_becomes_a_retryable_model_error() -> None:
    async with FakeAnthropic() as gone:
        url = gone.base_url
    client = AnthropicModel(api_key="k", model=MODEL, base_url=url, max_retries=0)

    with pytest.raises(ModelError) as caught:
        await client.complete(make_request(FIRST))
    await client.aclose()

    assert caught.value.status is None
    assert caught.value.retryable is True
    assert "Could not reach the Anthropic API" in str(caught.value)


async def test_a_failing_text_callback_propagates_unchanged(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    boom = httpx2.ReadError("the sink's own connection broke")

    async def sink(text: str) -> None:
        raise boom

    with pytest.raises(httpx2.ReadError) as caught:
        await model.complete(make_request(FIRST), sink)

    assert caught.value is boom


async def test_truncation_returns_max_tokens_and_leaves_the_decision_to_the_engine(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)
    fake.truncate_next()

    reply = await model.complete(make_request(FIRST))

    assert reply.stop_reason == "max_tokens"
    assert REPLY.startswith(reply.text)
    assert len(reply.text) < len(REPLY)


async def test_a_reply_longer_than_max_tokens_is_cut_at_max_tokens(
    fake: FakeAnthropic, model: AnthropicModel
) -> None:
    fake.enqueue_text(REPLY)

    reply = await model.complete(make_request(FIRST, max_tokens=5))

    assert reply.stop_reason == "max_tokens"
    assert reply.text == REPLY[:20]
    assert reply.usage.output_tokens == 5


# ---- configuration and prices ----------------------------------------------------------------


async def test_from_settings_uses_the_configured_key_model_and_url(
    fake: FakeAnthropic,
) -> None:
    fake.enqueue_text(REPLY)
    settings = Settings(
        _env_file=None,
        anthropic_api_key=fake.api_key,
        anthropic_model="claude-haiku-4-5",
        anthropic_base_url=fake.base_url,
        anthropic_max_retries=0,
    )

    client = AnthropicModel.from_settings(settings)
    reply = await client.complete(make_request(FIRST))
    await client.aclose()

    assert client.offline is False
    assert fake.requests[0]["model"] == "claude-haiku-4-5"
    assert reply.model == "claude-haiku-4-5-20260815"
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicModel.from_settings(Settings(_env_file=None, anthropic_api_key=None))


def test_the_price_of_a_dated_served_model_is_the_price_of_its_base_id() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )

    assert estimate_cost("claude-sonnet-5-5-20260815", usage) == pytest.approx(2 + 10 + 2.5 + 0.1)
    assert estimate_cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(3 + 15 + 3.75 + 0.3)
    # Longest prefix: Opus 5.5 is not priced as Opus 5.
    assert estimate_cost("claude-opus-5-5-20261001", usage) == pytest.approx(4 + 20 + 5 + 0.2)
    assert estimate_cost("claude-opus-5-20260101", usage) == pytest.approx(5 + 25 + 6.25 + 0.5)
    assert estimate_cost("offline-deterministic", usage) == 0.0


def test_the_default_model_and_every_configurable_sdk_model_have_a_price() -> None:
    from typing import get_args

    from anthropic.types import ModelParam

    from bot.config import DEFAULT_MODEL
    from bot.llm.prices import UNPRICED

    assert price_for(DEFAULT_MODEL) is not None
    assert price_for(Settings().anthropic_model) is not None
    listed = [m for arg in get_args(ModelParam) for m in get_args(arg)]
    assert "claude-haiku-5-5" in listed
    missing = [m for m in listed if m not in UNPRICED and price_for(m) is None]
    assert missing == []


def test_todays_prices_sonnet_5_5_cache_reads_and_haiku_5_5() -> None:
    sonnet, haiku = price_for("claude-sonnet-5-5"), price_for("claude-haiku-5-5")
    assert sonnet is not None and sonnet.cache_read == 0.10
    assert haiku is not None and (haiku.input, haiku.output) == (0.10, 0.50)


def test_an_unknown_model_has_no_price() -> None:
    assert estimate_cost("gpt-9", Usage(input_tokens=10)) is None
    assert price_for("claude-opus-50") is None  # a base id must end where a "-" follows


# ---- the fake's fidelity to the real API -----------------------------------------------------


async def test_fake_stream_has_the_real_event_order_and_the_sdk_accumulates_it(
    fake: FakeAnthropic,
) -> None:
    fake.enqueue_text(REPLY)
    fake.enqueue_text(REPLY)
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "stream": True,
        "thinking": {"type": "between_tools"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.base_url}/v1/messages", json=body, headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = await r.text()
    events = [line[len("event: ") :] for line in raw.splitlines() if line.startswith("event: ")]
    deltas = events.count("content_block_delta")
    assert deltas > 1
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]

    client = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    async with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "between_tools"},
    ) as stream:
        message = await stream.get_final_message()
    await client.close()
    assert message.id.startswith("msg_")
    assert message.model == SERVED
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(REPLY) // 4


async def test_fake_answers_a_non_streaming_request_with_a_message_object(
    fake: FakeAnthropic,
) -> None:
    fake.enqueue_text(REPLY)
    client = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)

    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "between_tools"},
    )
    await client.close()

    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.usage.cache_read_input_tokens == 0


async def test_fake_errors_have_the_real_body_and_headers(fake: FakeAnthropic) -> None:
    fake.fail_next(429, retry_after=7)
    client = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)

    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    await client.close()

    err = caught.value
    assert err.type == "rate_limit_error"
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert err.response.headers["retry-after"] == "7"
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id


async def test_fake_rejects_requests_the_real_api_rejects(fake: FakeAnthropic) -> None:
    client = anthropic.AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    five_breakpoints: list[Any] = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": [
                {"type": "text", "text": f"turn {i}", "cache_control": {"type": "ephemeral"}}
            ],
        }
        for i in range(5)
    ]

    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=five_breakpoints)
    with pytest.raises(anthropic.BadRequestError, match="additionalProperties"):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        )
    await client.close()


async def test_fake_runs_standalone_and_is_scripted_over_http() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.anthropic_server",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        async with aiohttp.ClientSession() as http:
            await http.post(f"{url}/_fake/script", json={"replies": [REPLY]})
            client = AnthropicModel(
                api_key="sk-ant-fake-key", model=MODEL, base_url=url, max_retries=0
            )
            reply = await client.complete(make_request(FIRST))
            await client.aclose()
            async with http.get(f"{url}/_fake/requests") as r:
                recorded = (await r.json())["requests"]
        assert reply.text == REPLY and reply.model == SERVED
        assert recorded[0]["system"][0]["text"] == SYSTEM
    finally:
        proc.terminate()
        await proc.wait()
