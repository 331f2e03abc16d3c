"""The Slack client's own settings: logging that costs nothing when it is off."""

from __future__ import annotations

import logging

import pytest

from bot.config import Settings
from bot.slack.client import SDK_LOGGER, make_client


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
