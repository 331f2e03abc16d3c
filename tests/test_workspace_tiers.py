"""A whole workspace at once, within Slack's tiers as Slack enforces them.

Forty sessions start together in ten channels, run by two workers on the real
Redis, against the fake Slack enforcing the tiers: chat.update and chat.delete
answer 429 beyond 50 a minute for the workspace, chat.postMessage beyond one a
second per channel after a burst of three. The app's chat.update budget is what
keeps it inside them, and a turn's final text never waits for that budget: a
turn that cannot stream is posted when it is saved.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Origin, Session, SessionStatus
from bot.llm.offline import OfflineModel
from bot.slack.blocks import METADATA_EVENT, TURN_LOCKED, WRITING, escape, root_blocks, root_text
from bot.slack.client import close_client, make_client
from bot.slack.poster import WORKSPACE
from bot.slack.surface import SlackSurface
from bot.worker import Worker, WorkerConfig
from state import State
from state.keys import POST_BURST, POST_RATE_PER_S
from tests.fakes.slack_server import TEAM_ID, FakeSlack
from tests.support import make_session, message_body, wait_until

SESSIONS = 40
CHANNELS = 10
STARTER = "U0ANA"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        for i in range(CHANNELS):
            fake.seed_channel(f"video-{i}", f"C0W{i:02d}")
        fake.seed_user(STARTER, "ana", display_name="Ana")
        fake.set_post_bucket(POST_RATE_PER_S, POST_BURST)  # Tier 3 is on by default
        yield fake


def tag(message: dict[str, Any]) -> tuple[str, int, int] | None:
    meta = message.get("metadata") or {}
    if meta.get("event_type") != METADATA_EVENT:
        return None
    p = meta["event_payload"]
    return p["session"], p["turn"], p["part"]


async def start(client: AsyncWebClient, state: State) -> list[Session]:
    """Forty sessions, their roots posted at the channels' post rate, all queued at once."""

    async def one(i: int) -> Session:
        session = make_session(f"Idea {i}: a lighthouse keeper finds a bottle", max_rounds=1)
        channel = f"C0W{i % CHANNELS:02d}"
        await state.ratelimit.wait(channel, team=WORKSPACE)  # the workers' posters' bucket
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
        return session

    return list(await asyncio.gather(*(one(i) for i in range(SESSIONS))))


async def test_forty_sessions_in_ten_channels_all_lock_within_slacks_tiers(
    slack: FakeSlack, real_state: State
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token=slack.token,
        slack_api_url=slack.api_url,
    )
    client = make_client(settings, rate_limit_retries=0)  # the workers': they wait out 429s
    starter = make_client(settings)  # the roots', posted as /sora does, retrying a 429
    workers = [
        Worker(
            state=real_state,
            engine=Engine(model=OfflineModel(latency=0.05)),
            surface=SlackSurface(client=client, state=real_state, settings=settings),
            config=WorkerConfig(concurrency=SESSIONS, block_ms=50, drain_s=0.5),
            name=f"w{n}",
        )
        for n in range(2)
    ]
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stopping)) for w in workers]
    try:
        sessions = await start(starter, real_state)

        async def all_locked_and_shown() -> list[Session] | None:
            done = []
            for s in sessions:
                loaded = await real_state.sessions.load(s.id)
                if loaded is None or loaded.status != SessionStatus.LOCKED:
                    return None
                if 0 not in await real_state.posts.get(s.id, TURN_LOCKED):
                    return None
                done.append(loaded)
            return done

        done = await wait_until(all_locked_and_shown, "every session locked", within=120)
    finally:
        stopping.set()
        await asyncio.gather(*tasks)
        await close_client(client)
        await close_client(starter)

    # Within the tiers: Slack never refused a chat.update, nor held more than 50 in a minute.
    assert [c for c in slack.calls_to("chat.update") if c.status == 429] == []
    assert slack.most_in_a_minute("chat.update") <= 50
    for s in done:
        thread = slack.thread(str(s.origin.channel_id), str(s.origin.thread_ts))
        # Each turn shown once, with its full final text.
        for number, turn in enumerate(s.agent_turns):
            [message] = [m for m in thread if tag(m) == (s.id, number, 0)]
            assert message_body(message) == escape(turn.text), (s.id, number)
        # Nothing left as a placeholder, or saying it is still being written.
        assert not [
            m for m in thread if WRITING in json.dumps(m.get("blocks") or [], ensure_ascii=False)
        ]
        assert slack.thread_status(str(s.origin.channel_id), str(s.origin.thread_ts)) is None
