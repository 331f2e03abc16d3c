"""A session whose state Redis lost is told so in its thread, and its root loses its
buttons: nobody is left pressing Stop on a session that no longer exists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack.blocks import METADATA_EVENT, root_blocks, root_text
from bot.slack.client import close_client, make_client
from bot.slack.lost import LOST_LINE, tell_lost
from tests.fakes.slack_server import FakeSlack
from tests.support import make_session

CHANNEL = "C0LOST"


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, AsyncWebClient]]:
    async with FakeSlack() as fake:
        fake.seed_channel("video", CHANNEL)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=fake.token,
            slack_api_url=fake.api_url,
        )
        client = make_client(settings)
        yield fake, client
        await close_client(client)


async def post_root(client: AsyncWebClient, sid: str | None = None) -> tuple[str, str]:
    session = make_session()
    reply = await client.chat_postMessage(
        channel=CHANNEL,
        text=root_text(session),
        blocks=root_blocks(session),
        metadata={
            "event_type": METADATA_EVENT,
            "event_payload": {"session": sid or session.id, "kind": "root"},
        },
    )
    return sid or session.id, str(reply["ts"])


def actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in message.get("blocks") or [] if b["type"] == "actions"]


async def test_a_lost_session_is_told_in_its_thread_and_its_buttons_go(
    slack: tuple[FakeSlack, AsyncWebClient],
) -> None:
    fake, client = slack
    sid, ts = await post_root(client)
    assert actions(fake.message(CHANNEL, ts) or {})
    await tell_lost(client, session_id=sid, channel=CHANNEL, ts=ts)
    root = fake.message(CHANNEL, ts) or {}
    assert actions(root) == []
    assert LOST_LINE in str(root["blocks"][-1])
    assert "Sora Copilot" in str(root["blocks"][0])  # the idea stays
    replies = fake.thread(CHANNEL, ts)[1:]
    assert [m["text"] for m in replies] == [LOST_LINE]
