"""`sora-copilot dev` as a real process: Socket Mode and a worker in one, on the embedded store.

No public host and no Redis: the process opens a Socket Mode connection to the
fake Slack (`apps.connections.open` with the app-level token), gets `/sora` and
a teammate's thread reply as envelopes over the WebSocket, acknowledges each,
and runs the session through to the pinned locked prompt itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import APP_ID, TEAM_ID, FakeSlack
from tests.slack_signing import thread_reply_event
from tests.support import wait_until
from tests.test_e2e_slack import app_env, seed_workspace

CHANNEL, PROMPTS = "C0DEV", "C0DEVPROMPTS"
STARTER, TEAMMATE = "U0ANA", "U0BO"
INTERJECTION = "Make the bottle green sea glass 🍾"


def command(text: str) -> dict[str, Any]:
    """A slash command's payload, as Socket Mode carries it (the HTTP form's fields, as JSON)."""
    return {
        "token": "unused",
        "team_id": TEAM_ID,
        "team_domain": "fake-workspace",
        "channel_id": CHANNEL,
        "channel_name": "dev",
        "user_id": STARTER,
        "user_name": "ana",
        "command": "/sora",
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T0FAKE/1/x",
        "trigger_id": f"{time.monotonic_ns()}.1.x",
    }


@pytest.fixture
async def dev() -> AsyncIterator[tuple[FakeSlack, FakeAnthropic, asyncio.subprocess.Process]]:
    async with FakeSlack() as slack, FakeAnthropic(chunk_delay=0.01) as claude:
        seed_workspace(slack, claude, channel=CHANNEL, prompts=PROMPTS)
        env = app_env(slack, claude, prompts=PROMPTS, SLACK_APP_TOKEN=slack.app_token)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "dev",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await slack.wait_socket(within=60)
            yield slack, claude, proc
        finally:
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_dev_runs_a_session_over_socket_mode_on_the_embedded_store(
    dev: tuple[FakeSlack, FakeAnthropic, asyncio.subprocess.Process],
) -> None:
    slack, claude, proc = dev

    # Bad input and help are answered in the acknowledgement itself, only to the sender.
    help_ack = await slack.socket_ack(await slack.socket_send("slash_commands", command("help")))
    assert help_ack["payload"]["response_type"] == "ephemeral"
    assert "/sora <idea>" in help_ack["payload"]["text"]
    bad_ack = await slack.socket_ack(
        await slack.socket_send("slash_commands", command("a lighthouse rounds: 99"))
    )
    assert bad_ack["payload"]["response_type"] == "ephemeral"
    assert "Rounds must be between" in bad_ack["payload"]["text"]
    assert slack.messages(CHANNEL) == []  # neither started anything

    started = await slack.socket_send(
        "slash_commands",
        command("A lighthouse keeper finds a message in a bottle persona: director rounds: 3"),
    )
    assert "payload" not in await slack.socket_ack(started)  # a plain, immediate ack

    def root() -> dict[str, Any] | None:
        tops = [m for m in slack.messages(CHANNEL) if m.get("thread_ts") in (None, m["ts"])]
        return tops[0] if tops else None

    root_ts = (await wait_until(root, "the thread root", within=30))["ts"]

    def turn_posts() -> list[dict[str, Any]]:
        found = []
        for m in slack.thread(CHANNEL, root_ts):
            tag = (m.get("metadata") or {}).get("event_payload", {})
            if tag.get("turn", -1) >= 0 and tag.get("part") == 0:
                found.append(m)
        return found

    await wait_until(lambda: len(turn_posts()) >= 1, "the Copilot's opening", within=30)
    human_ts = slack.seed_message(CHANNEL, INTERJECTION, user=TEAMMATE, thread_ts=root_ts)
    reply = await slack.socket_send(
        "events_api",
        thread_reply_event(
            channel=CHANNEL,
            user=TEAMMATE,
            text=INTERJECTION,
            ts=human_ts,
            thread_ts=root_ts,
            event_id="Ev0DEVREPLY",
        ),
    )
    assert await slack.socket_ack(reply) == {"envelope_id": reply}

    # The lock's steps: pin and report, then Locked on the root, then the cross-post (last, as
    # it waits on the prompts channel's rate).
    await wait_until(
        lambda: (
            "Locked" in json.dumps(slack.message(CHANNEL, root_ts), ensure_ascii=False)
            and slack.messages(PROMPTS)
        ),
        "the root to show Locked and the cross-post",
        within=60,
    )
    assert len(slack.pins(CHANNEL)) == 1
    names = [p.get("username") for p in turn_posts()]
    assert names[:2] == ["Sora Copilot", "Tomás Ferreira"]
    assert all(n in ("Sora Copilot", "Tomás Ferreira") for n in names)
    await wait_until(
        lambda: "white_check_mark" in slack.reactions(CHANNEL, human_ts), "the ✅ on the reply"
    )
    assert "eyes" in slack.reactions(CHANNEL, human_ts)
    assert any(INTERJECTION in json.dumps(b, ensure_ascii=False) for b in claude.requests)
    [cross] = slack.messages(PROMPTS)
    assert "started by Ana" in json.dumps(cross, ensure_ascii=False)
    assert len(slack.files()) == 1  # the report

    # SIGTERM: the process stops cleanly and says nothing alarming.
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode(errors="replace")
    assert "Traceback" not in err, err
    assert "embedded in-process store" in err
