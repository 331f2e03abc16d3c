"""Turns everyone watches being written, within Slack's chat.update tier.

Twenty sessions stream at once in one workspace, each in its own channel, with
real workers on the real Redis against the fake Slack, which enforces Tier 3
for chat.update (429 + Retry-After beyond it). The app's budget is the only
thing that keeps them inside it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Origin, Session, SessionStatus
from bot.llm.base import ModelReply, ModelRequest, TextCallback
from bot.llm.offline import CHUNK_CHARS, OfflineModel
from bot.slack.blocks import root_blocks, root_text, turn_parts
from bot.slack.client import close_client, make_client
from bot.slack.surface import SlackSurface
from bot.worker import Worker, WorkerConfig
from state import State
from tests.fakes.slack_server import TEAM_ID, FakeSlack
from tests.support import make_session, wait_until

SESSIONS = 20
BUDGET = 170  # chat.update calls a minute for the workspace (the app's setting)
STARTER = "U0ANA"
TURN_S = 3.0


class SlowModel(OfflineModel):
    """The offline model, writing each reply's message over about `TURN_S` seconds, a
    chunk at a time, as Claude does (the rest of the structured reply follows at once)."""

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        reply = self.write(request)
        message = len(json.dumps(json.loads(reply)["message"], ensure_ascii=False))
        chunks = max(1, message // CHUNK_CHARS)
        sent = 0

        async def slowly(text: str) -> None:
            nonlocal sent
            if sent < message:
                await asyncio.sleep(TURN_S / chunks)
            sent += len(text)
            assert on_text is not None
            await on_text(text)

        return await super().complete(request, slowly if on_text is not None else None)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        for i in range(SESSIONS):
            fake.seed_channel(f"video-{i}", f"C0S{i:02d}")
        fake.seed_user(STARTER, "ana", display_name="Ana")
        # Slack's Tier 3 for chat.update is "50+" a minute; the fake allows the app's
        # budget and a little more, and answers 429 beyond it.
        fake.set_method_limit("chat.update", BUDGET + 10)
        yield fake


def app_settings(slack: FakeSlack) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token=slack.token,
        slack_api_url=slack.api_url,
        slack_updates_per_minute=BUDGET,
    )


async def start_sessions(client: AsyncWebClient, state: State, n: int) -> list[Session]:
    """`n` sessions, each with its thread root posted in a channel of its own, queued."""
    sessions: list[Session] = []
    for i in range(n):
        session = make_session(max_rounds=1)
        channel = f"C0S{i:02d}"
        root = await client.chat_postMessage(
            channel=channel, text=root_text(session), blocks=root_blocks(session)
        )
        session.origin = Origin(
            surface="slack",
            channel_id=channel,
            thread_ts=str(root["ts"]),
            user_id=STARTER,
            user_name="ana",
            team_id=TEAM_ID,
        )
        await state.sessions.create(session, enqueue=True)
        sessions.append(session)
    return sessions


async def run_until_locked(
    slack: FakeSlack,
    state: State,
    client: AsyncWebClient,
    settings: Settings,
    sessions: list[Session],
    *,
    workers: int,
) -> list[Session]:
    """Run workers (as `sora-copilot worker` does) until every session is locked and pinned."""
    running = [
        Worker(
            state=state,
            engine=Engine(model=SlowModel()),
            surface=SlackSurface(client=client, state=state, settings=settings),
            config=WorkerConfig(concurrency=SESSIONS, block_ms=50, drain_s=1, reclaim_every_s=0.5),
            name=f"w{n}",
        )
        for n in range(workers)
    ]
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stopping)) for w in running]

    async def all_locked() -> list[Session] | None:
        loaded = [await state.sessions.load(s.id) for s in sessions]
        done = [s for s in loaded if s is not None and s.status == SessionStatus.LOCKED]
        return done if len(done) == len(sessions) else None

    try:
        done = await wait_until(all_locked, "every session to lock", within=180)
        await wait_until(
            lambda: all(slack.pins(str(s.origin.channel_id)) for s in sessions),
            "every locked prompt pinned",
            within=60,
        )
    finally:
        stopping.set()
        await asyncio.gather(*tasks)
    return done


async def test_twenty_sessions_stream_at_once_within_the_workspaces_update_budget(
    slack: FakeSlack, real_state: State, caplog: pytest.LogCaptureFixture
) -> None:
    settings = app_settings(slack)
    client = make_client(settings, rate_limit_retries=0)
    caplog.set_level(logging.ERROR)
    try:
        sessions = await start_sessions(client, real_state, SESSIONS)
        # A few 429s on the way: an interim update skips, a final one waits and lands.
        slack.fail_next("chat.update", k=3, status=429, retry_after=1)
        # Two workers: the budget is shared through Redis, not memory.
        done = await run_until_locked(slack, real_state, client, settings, sessions, workers=2)
    finally:
        await close_client(client)

    # Within the budget: no 60 s of the run held more chat.update calls than it allows,
    # and Slack's tier never had to refuse one beyond the 429s injected above.
    assert slack.most_in_a_minute("chat.update") <= BUDGET
    refused = [c for c in slack.calls_to("chat.update") if c.status == 429]
    assert len(refused) == 3
    assert not slack.calls_to("chat.startStream")  # one message everyone sees grow
    # The app logged no error (other tests' leftovers, garbage-collected now, are not its own).
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("sora")]
    assert not errors, caplog.text

    # Every final message is complete: each agent turn shows its whole text.
    final_text: dict[str, str] = {}  # message ts -> the text its turn ends with
    for session in done:
        for number, turn in enumerate(session.agent_turns):
            posted = await real_state.posts.get(session.id, number)
            for k, part in enumerate(turn_parts(session, turn)):
                msg = slack.message(str(session.origin.channel_id), posted[k])
                assert msg is not None and msg["text"] == part.text
                final_text[posted[k]] = part.text

    # Members saw turns grow: interim updates of turn messages showed partial text first.
    partial = [
        c
        for c in slack.calls_to("chat.update")
        if c.status == 200
        and c.params.get("ts") in final_text
        and c.params.get("text") != final_text[c.params["ts"]]
    ]
    assert partial, "no interim update reached Slack"


async def test_an_interim_update_slack_fails_is_skipped_not_retried_inside_the_stream(
    slack: FakeSlack, real_state: State
) -> None:
    settings = app_settings(slack)
    client = make_client(settings, rate_limit_retries=0)
    try:
        sessions = await start_sessions(client, real_state, 1)
        # The first chat.update is the opening's first interim update: Slack fails it.
        slack.fail_next("chat.update", k=1, status=503)
        [done] = await run_until_locked(slack, real_state, client, settings, sessions, workers=1)
    finally:
        await close_client(client)
    failed, after = slack.calls_to("chat.update")[:2]
    assert failed.status == 503
    assert after.params != failed.params  # not sent again: the next update moved on
    first = await real_state.posts.get(done.id, 0)
    shown = slack.message(str(done.origin.channel_id), first[0])
    assert shown is not None
    assert shown["text"] == turn_parts(done, done.agent_turns[0])[0].text
