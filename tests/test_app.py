"""Building the Bolt app: what an operator sees in the log when it starts."""

from __future__ import annotations

import logging

import pytest

from bot.app import build_app
from bot.config import Settings
from bot.slack.client import close_client, make_client
from state import State, connect


async def test_building_the_app_does_not_warn_that_the_bot_token_is_unused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Bolt reads SLACK_BOT_TOKEN itself, then warns it is unused because a client came too.
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    settings = Settings(_env_file=None, slack_bot_token="xoxb-from-the-environment")  # type: ignore[call-arg]
    redis = await connect(None)
    client = make_client(settings)
    try:
        with caplog.at_level(logging.WARNING):
            app = build_app(settings=settings, state=State.create(redis, prefix="t"), client=client)
            # Bolt's other warnings still get through the filter.
            logging.getLogger("slack_bolt.AsyncApp").warning("something else")
        assert app.client is client and client.token == "xoxb-from-the-environment"
        assert "will be unused" not in caplog.text
        assert "something else" in caplog.text
    finally:
        await close_client(client)
        await redis.aclose()
