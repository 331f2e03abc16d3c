"""The whole app as a team sees it: `serve` and `worker` as real processes.

Both run on the real Redis against the fake Slack Web API and the fake
Anthropic Messages API (started here, on loopback). A slash command signed
exactly as Slack signs it goes in over HTTP; the test then reads the thread
the way a person would: the root, the turns under their speakers' names, a
teammate's interjection reaching the next model request, the pinned locked
prompt, the cross-post, the uploaded report and the root's final status.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.dialogue.models import SessionStatus
from state import State
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import TEAM_ID, FakeSlack
from tests.slack_signing import (
    FORM,
    JSON_TYPE,
    command_body,
    event_body,
    signed_headers,
    thread_reply_event,
)
from tests.support import app_processes, copilot, draft_json, persona, wait_until

SECRET = "e2e-signing-secret"
CHANNEL, PROMPTS = "C0VIDEO", "C0PROMPTS"
STARTER, TEAMMATE = "U0ANA", "U0BO"
INTERJECTION = "Make the bottle green sea glass 🍾"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scripted_reply(body: dict[str, Any]) -> str:
    """The two agents, as a function of what each request shows them."""
    texts = [b["text"] for m in body["messages"] for b in m["content"] if m["role"] == "user"]
    own_turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
    heard = "<interjection" in texts[-1]
    if "draft" in body["output_config"]["format"]["schema"]["properties"]:
        note = " @Bo: sea glass it is." if heard else ""
        return copilot(
            f"Draft {own_turns + 1} is below. <!channel>{note}", draft_json(own_turns + 1)
        )
    latest = max(int(v) for v in re.findall(r"Draft v(\d+)", "\n".join(texts)))
    if own_turns == 0:
        return persona("Not yet: more storm, and keep the keeper's face in frame.")
    return persona("That is the one.", "approve", latest)


def seed_workspace(slack: FakeSlack, claude: FakeAnthropic, *, channel: str, prompts: str) -> None:
    """The channel the team works in, the prompts channel, two people, the scripted agents."""
    slack.seed_channel("video", channel)
    slack.seed_channel("prompts", prompts)
    slack.seed_user(STARTER, "ana", display_name="Ana")
    slack.seed_user(TEAMMATE, "bo", display_name="Bo")
    claude.responder = scripted_reply


def app_env(
    slack: FakeSlack, claude: FakeAnthropic, *, prompts: str, **extra: str
) -> dict[str, str]:
    """The environment of an app process pointed at the fakes: none of the caller's
    Anthropic, Slack or Redis settings, and `extra`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SLACK_", "REDIS_"))
    }
    env.update(
        SLACK_BOT_TOKEN=slack.token,
        SLACK_API_URL=slack.api_url,
        ANTHROPIC_API_KEY=claude.api_key,
        ANTHROPIC_BASE_URL=claude.base_url,
        PROMPTS_CHANNEL=prompts,
        **extra,
    )
    return env


# The whole path (serve and a worker as processes, a slash command to a pinned prompt) on
# one Redis, then on the Redis Cluster.
ON_CLUSTER_TOO = True


@pytest.fixture
async def app(
    real_state: State, prefix: str, redis_url: str
) -> AsyncIterator[tuple[FakeSlack, FakeAnthropic, str]]:
    async with FakeSlack() as slack, FakeAnthropic(chunk_delay=0.01) as claude:
        seed_workspace(slack, claude, channel=CHANNEL, prompts=PROMPTS)
        port = free_port()
        env = app_env(
            slack,
            claude,
            prompts=PROMPTS,
            REDIS_URL=redis_url,
            REDIS_PREFIX=prefix,
            SLACK_SIGNING_SECRET=SECRET,
            PORT=str(port),
        )
        url = f"http://127.0.0.1:{port}"
        async with app_processes([("serve",), ("worker",)], env=env, url=url):
            yield slack, claude, url


async def post_signed(http: aiohttp.ClientSession, url: str, body: str, content_type: str) -> int:
    headers = signed_headers(SECRET, body, content_type=content_type)
    async with http.post(f"{url}/slack/events", data=body.encode(), headers=headers) as r:
        return r.status


async def test_a_slash_command_becomes_a_pinned_locked_prompt_in_its_thread(
    app: tuple[FakeSlack, FakeAnthropic, str], real_state: State
) -> None:
    slack, claude, url = app
    async with aiohttp.ClientSession() as http:
        status = await post_signed(
            http,
            url,
            command_body(
                token="unused",
                team_id="T0FAKE",
                team_domain="fake",
                channel_id=CHANNEL,
                channel_name="video",
                user_id=STARTER,
                user_name="ana",
                command="/sora",
                text="A lighthouse keeper finds a message in a bottle 🐋 persona: director "
                "rounds: 3",
                response_url=f"{slack.base_url}/_fake/response",
                trigger_id="1.2.3",
                api_app_id="A0FAKE",
            ),
            FORM,
        )
        assert status == 200

        def root() -> dict[str, Any] | None:
            tops = [m for m in slack.messages(CHANNEL) if m.get("thread_ts") in (None, m["ts"])]
            return tops[0] if tops else None

        root_msg = await wait_until(root, "the thread root")
        root_ts = root_msg["ts"]

        def turn_posts() -> list[dict[str, Any]]:
            return [
                m
                for m in slack.thread(CHANNEL, root_ts)
                if (m.get("metadata") or {}).get("event_payload", {}).get("turn", -1) >= 0
                and (m.get("metadata") or {}).get("event_payload", {}).get("part") == 0
            ]

        await wait_until(lambda: len(turn_posts()) >= 1, "the Copilot's opening")
        # A teammate replies in the thread.
        human_ts = slack.seed_message(CHANNEL, INTERJECTION, user=TEAMMATE, thread_ts=root_ts)
        event = thread_reply_event(
            channel=CHANNEL,
            user=TEAMMATE,
            text=INTERJECTION,
            ts=human_ts,
            thread_ts=root_ts,
            event_id="Ev0INTERJECT",
        )
        requests_before = len(claude.requests)
        assert await post_signed(http, url, event_body(event), JSON_TYPE) == 200

        # The lock's steps run one after another once it is saved (report, root, pin,
        # cross-post): wait for all of them, not the first.
        def lock_shown() -> bool:
            root_now = json.dumps(slack.message(CHANNEL, root_ts), ensure_ascii=False)
            return bool(
                slack.pins(CHANNEL)
                and slack.messages(PROMPTS)
                and slack.files()
                and "Locked" in root_now
            )

        await wait_until(lock_shown, "the lock's steps to be shown", within=60)

    session_id = await real_state.threads.lookup(TEAM_ID, CHANNEL, root_ts)
    assert session_id is not None
    session = await wait_until(
        lambda: _locked(real_state, session_id), "the session to be stored as locked"
    )
    assert session.locked is not None and session.locked.reason.value == "approved"

    # Turns alternate under their speakers' own names and icons.
    posts = turn_posts()
    names = [p.get("username") for p in posts]
    assert names == ["Sora Copilot", "Tomás Ferreira", "Sora Copilot", "Tomás Ferreira"]
    assert len(posts) == len(session.agent_turns)

    # The interjection was heard (👀 on arrival, ✅ once an agent heard it) and reached
    # the very next model request.
    reactions = slack.reactions(CHANNEL, human_ts)
    assert "eyes" in reactions and "white_check_mark" in reactions
    with_it = [
        i
        for i, b in enumerate(claude.requests)
        if INTERJECTION in json.dumps(b, ensure_ascii=False)
    ]
    # The request in flight when it arrived could not include it; the next one does.
    assert with_it and with_it[0] <= requests_before + 1
    assert with_it == list(range(with_it[0], len(claude.requests)))
    assert any(t.text == INTERJECTION and t.author == "Bo" for t in session.interjections)

    # Model output cannot ping the channel.
    thread_text = json.dumps(slack.thread(CHANNEL, root_ts), ensure_ascii=False)
    assert "<!channel>" not in thread_text and "&lt;!channel&gt;" in thread_text

    # The locked reply is pinned and holds the approved prompt, byte for byte.
    [pinned] = slack.pins(CHANNEL)
    pinned_msg = slack.message(CHANNEL, pinned)
    assert session.locked.draft.prompt_text in json.dumps(pinned_msg, ensure_ascii=False)

    # The prompts channel got the prompt and a link back to the thread.
    [cross] = [m for m in slack.messages(PROMPTS)]
    cross_text = json.dumps(cross, ensure_ascii=False)
    assert session.locked.draft.prompt_text in cross_text
    assert root_ts.replace(".", "") in cross_text or root_ts in cross_text

    # The report was uploaded into the thread, in UTF-8, with the locked prompt.
    [report] = slack.files()
    content = slack.file_content(report["id"]).decode("utf-8")
    assert session.locked.draft.prompt_text in content and "🐋" in content

    # The root shows the final status.
    final_root = slack.message(CHANNEL, root_ts)
    assert "Locked" in json.dumps(final_root, ensure_ascii=False)


async def _locked(state: State, sid: str) -> Any:
    s = await state.sessions.load(sid)
    return s if s is not None and s.status == SessionStatus.LOCKED else None
