"""The Slack client's own settings: logging that costs nothing when it is off."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from bot.config import Settings
from bot.slack.client import SDK_LOGGER, close_client, make_client


@pytest.mark.parametrize("root_level", [logging.INFO, logging.WARNING, logging.DEBUG])
def test_slack_sdk_logs_at_the_configured_level_and_builds_no_debug_lines_above_it(
    monkeypatch: pytest.MonkeyPatch, root_level: int
) -> None:
    # slack_sdk builds its debug lines whenever `logger.level <= DEBUG`; NOTSET is 0.
    sdk = logging.getLogger(SDK_LOGGER)
    monkeypatch.setattr(sdk, "level", logging.NOTSET)
    monkeypatch.setattr(logging.root, "level", root_level)
    client = make_client(Settings(_env_file=None, slack_bot_token="xoxb-test"))  # type: ignore[call-arg]
    assert client.logger is sdk
    assert client.logger.level == root_level
    assert (client.logger.level <= logging.DEBUG) is (root_level == logging.DEBUG)


def test_an_explicit_slack_sdk_level_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = logging.getLogger(SDK_LOGGER)
    monkeypatch.setattr(sdk, "level", logging.ERROR)
    monkeypatch.setattr(logging.root, "level", logging.DEBUG)
    assert make_client(Settings(_env_file=None, slack_bot_token="xoxb-test")).logger.level == (  # type: ignore[call-arg]
        logging.ERROR
    )


async def test_the_app_client_never_resends_a_post_whose_answer_was_lost() -> None:
    """A lost answer may mean a posted message: only reads are retried on their own."""
    from tests.fakes.slack_server import FakeSlack

    async with FakeSlack() as slack:
        settings = Settings(
            _env_file=None, slack_bot_token=slack.token, slack_api_url=slack.api_url
        )  # type: ignore[call-arg]
        client = make_client(settings)
        try:
            root = await client.chat_postMessage(channel="C0TEST", text="root")
            slack.lose_next("chat.postMessage")
            with pytest.raises(aiohttp.ClientError):
                await client.chat_postMessage(channel="C0TEST", thread_ts=root["ts"], text="hi")
            assert len(slack.thread("C0TEST", root["ts"])) == 2  # sent once
            slack.lose_next("conversations.replies")
            replies = await client.conversations_replies(channel="C0TEST", ts=root["ts"])
            assert len(replies["messages"]) == 2  # a read is simply asked again
        finally:
            await close_client(client)
