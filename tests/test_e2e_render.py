"""Render in Slack end to end: `serve` and a `worker` as real processes, on the real Redis,
against the fake Slack and the fake video APIs (both Gemini call shapes, and Runway).

The worker shows a locked session's reply with its Render button; a signed button press
goes to `serve`, which answers the starter alone with the cost and Confirm; Confirm (pressed
twice) submits one vendor job; the worker renders it with one progress message in the
thread and the clip uploaded once, confirmed with files.info before the done message. A
worker SIGKILLed while it polls the vendor is replaced by one that checks the same job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.config import Settings
from bot.dialogue.models import Origin, Session, SessionStatus
from bot.render import make
from bot.render.jobs import request
from bot.slack.blocks import (
    ACTION_RENDER,
    ACTION_RENDER_CONFIRM,
    TURN_LOCKED,
)
from bot.slack.renders import TURN_RENDER_PROGRESS
from state import InboxEntry, State
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, FakeSlack
from tests.fakes.video_server import FakeVideoAPI, JobScript
from tests.redis_fixtures import REDIS_TEST_URL, agent_turn, make_session
from tests.slack_signing import FORM, interactive_body, signed_headers
from tests.support import app_processes, wait_until
from tests.test_e2e_slack import free_port

SECRET = "e2e-render-signing-secret"
CHANNEL = "C0VIDEO"
STARTER, TEAMMATE = "U0ANA", "U0BO"


def env_for(slack: FakeSlack, video: FakeVideoAPI, prefix: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "SLACK_", "REDIS_", "GEMINI_", "RUNWAYML_", "RENDER_"))
    }
    env.update(
        SLACK_BOT_TOKEN=slack.token,
        SLACK_API_URL=slack.api_url,
        SLACK_SIGNING_SECRET=SECRET,
        REDIS_URL=REDIS_TEST_URL,
        REDIS_PREFIX=prefix,
        GEMINI_API_KEY=video.gemini_key,
        GEMINI_BASE_URL=video.base_url,
        RUNWAYML_API_SECRET=video.runway_secret,
        RUNWAYML_BASE_URL=video.base_url,
        RENDER_POLL_SECONDS="0.2",
        **extra,
    )
    return env


async def locked_session(state: State, slack: FakeSlack, target: str) -> Session:
    """A session with a draft, locked by its starter's Lock as the worker applies it: the
    worker then shows the lock's steps (the locked reply first)."""
    root_ts = slack.seed_message(CHANNEL, "A lighthouse keeper…", user=BOT_USER_ID)
    origin = Origin(
        surface="slack",
        channel_id=CHANNEL,
        thread_ts=root_ts,
        user_id=STARTER,
        user_name="ana",
        team_id=TEAM_ID,
    )
    session = agent_turn(make_session(target=target, origin=origin))
    first = session.turns[0]
    assert first.draft is not None
    draft = first.draft.model_copy(update={"size": session.target.sizes[0], "target": target})
    session.turns[0] = first.model_copy(update={"draft": draft})
    await state.sessions.create(session)
    entry = InboxEntry(kind="lock", author="Ana", user_id=STARTER, version=draft.version)
    await state.inbox.push(session.id, entry)
    await state.queue.enqueue(session.id, session.next_turn, TEAM_ID)
    return session


async def _locked(state: State, sid: str) -> bool:
    loaded = await state.sessions.load(sid)
    return loaded is not None and loaded.status == SessionStatus.LOCKED


def press(action_id: str, value: str, *, user: str, thread_ts: str, ts: str) -> str:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0FAKE",
        "token": "legacy",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "trigger_id": "1.2.3",
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": CHANNEL,
            "thread_ts": thread_ts,
        },
        "channel": {"id": CHANNEL, "name": "video"},
        "message": {"ts": ts, "thread_ts": thread_ts},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value}],
    }
    return interactive_body(payload)


async def post(http: aiohttp.ClientSession, url: str, body: str) -> None:
    headers = signed_headers(SECRET, body, content_type=FORM)
    async with http.post(f"{url}/slack/events", data=body.encode(), headers=headers) as r:
        assert r.status == 200


def buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        e["action_id"]: e["value"]
        for b in message.get("blocks") or []
        if b.get("type") == "actions"
        for e in b["elements"]
    }


def progress_messages(slack: FakeSlack, root: str) -> list[dict[str, Any]]:
    """The thread's render progress messages (tagged with a render's own ledger)."""
    return [
        m
        for m in slack.thread(CHANNEL, root)
        if (tag_of(m) or ("", 0))[0].startswith("render-")
        and (tag_of(m) or ("", 0))[1] == TURN_RENDER_PROGRESS
    ]


def tag_of(message: dict[str, Any]) -> tuple[str, int] | None:
    p = (message.get("metadata") or {}).get("event_payload")
    return (p["session"], p["turn"]) if p else None


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeVideoAPI]]:
    async with FakeSlack() as slack, FakeVideoAPI() as video:
        slack.seed_channel("video", CHANNEL)
        slack.seed_user(STARTER, "ana", display_name="Ana")
        slack.seed_user(TEAMMATE, "bo", display_name="Bo")
        yield slack, video


@pytest.mark.parametrize(
    ("target", "renderer"), [("veo-3.1", "veo"), ("sora-2", "omni"), ("runway-gen-4.5", "runway")]
)
async def test_render_from_the_button_to_the_clip_in_the_thread(
    fakes: tuple[FakeSlack, FakeVideoAPI],
    real_state: State,
    prefix: str,
    target: str,
    renderer: str,
) -> None:
    slack, video = fakes
    video.script(JobScript("done", checks=3))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(slack, video, prefix, PORT=str(port))
    session = await locked_session(real_state, slack, target)
    root = str(session.origin.thread_ts)
    async with (
        app_processes([("serve",), ("worker", "--offline")], env=env, url=url),
        aiohttp.ClientSession() as http,
    ):

        def locked_reply() -> dict[str, Any] | None:
            found = [
                m for m in slack.thread(CHANNEL, root) if tag_of(m) == (session.id, TURN_LOCKED)
            ]
            return found[-1] if found and ACTION_RENDER in buttons(found[-1]) else None

        reply = await wait_until(locked_reply, "the locked reply with its Render button", within=30)
        value = buttons(reply)[ACTION_RENDER]
        # A teammate may not render: told privately, nothing reserved.
        await post(
            http, url, press(ACTION_RENDER, value, user=TEAMMATE, thread_ts=root, ts=reply["ts"])
        )
        refusal = await wait_until(lambda: slack.ephemerals(CHANNEL, TEAMMATE), "the refusal")
        assert "Only the person who started this session" in refusal[0]["text"]
        # The starter gets the offer: cost and budgets, Confirm and Cancel.
        await post(
            http, url, press(ACTION_RENDER, value, user=STARTER, thread_ts=root, ts=reply["ts"])
        )
        [offer] = await wait_until(lambda: slack.ephemerals(CHANNEL, STARTER), "the offer")
        assert "Left today" in json.dumps(offer["blocks"]) and "$" in json.dumps(offer["blocks"])
        confirm = buttons(offer)[ACTION_RENDER_CONFIRM]
        for _ in range(2):  # a double click
            await post(
                http,
                url,
                press(ACTION_RENDER_CONFIRM, confirm, user=STARTER, thread_ts=root, ts=reply["ts"]),
            )

        def done() -> dict[str, Any] | None:
            shown = progress_messages(slack, root)
            return shown[0] if shown and "Rendered in" in json.dumps(shown[0]) else None

        progress = await wait_until(done, "the done message", within=60)

    # ONE progress message; ONE vendor job; the clip ONCE, confirmed before it was announced.
    assert progress_messages(slack, root) == [progress]
    assert len(video.submissions) == 1 and video.submissions[0].api == renderer
    [clip] = [f for f in slack.files() if f["name"].endswith(".mp4")]
    assert [m for m in slack.thread(CHANNEL, root) if clip["id"] in json.dumps(m.get("files"))]
    uploads = [c for c in slack.calls if c.method == "files.completeUploadExternal"]
    assert len(uploads) == 2  # the session report, then the clip
    methods = [c.method for c in slack.calls]
    last_upload = max(i for i, m in enumerate(methods) if m == "files.completeUploadExternal")
    assert "files.info" in methods[last_upload:]
    entry = await real_state.library.get(session.id, team=session.origin.team_id)
    assert entry is not None and [r.file_id for r in entry.renders] == [clip["id"]]


async def test_a_slack_worker_sigkilled_mid_poll_submits_once_and_posts_the_clip_once(
    fakes: tuple[FakeSlack, FakeVideoAPI], real_state: State, prefix: str
) -> None:
    slack, video = fakes
    video.script(JobScript("done", checks=8))
    session = await locked_session(real_state, slack, "veo-3.1")
    root = str(session.origin.thread_ts)
    env = env_for(
        slack,
        video,
        prefix,
        LEASE_TTL_MS="1500",
        RECLAIM_IDLE_MS="2000",
        RECLAIM_EVERY_SECONDS="0.3",
        DRAIN_SECONDS="0.2",
    )
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        gemini_api_key=video.gemini_key,
        gemini_base_url=video.base_url,
    )

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", "--offline"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def progress() -> list[dict[str, Any]]:
        return progress_messages(slack, root)

    first = worker()
    try:
        # The worker shows the lock; then the starter's render is asked (as Confirm does).
        await wait_until(lambda: _locked(real_state, session.id), "the lock", within=30)
        renderer = make("veo", settings)
        try:
            rec = await request(
                real_state,
                await real_state.sessions.load(session.id),  # type: ignore[arg-type]
                renderer=renderer,
                tier="draft",
                user_id=STARTER,
                user_name="Ana",
                settings=settings,
            )
        finally:
            await renderer.aclose()
        await wait_until(
            lambda: video.submissions and video.submissions[0].checks >= 2, "polls", within=30
        )
        video.delay_s = 0.5  # the next check is in flight when the worker dies
        checks = video.submissions[0].checks
        await wait_until(lambda: video.requests[-1][0] == "GET", "a check in flight")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    video.delay_s = 0.0
    second = worker()
    try:
        await wait_until(
            lambda: progress() and "Rendered in" in json.dumps(progress()), "the clip", within=60
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=15)
    assert b"Traceback" not in err
    assert len(video.submissions) == 1 and video.submissions[0].checks > checks
    assert len(progress()) == 1
    assert len([f for f in slack.files() if f["name"].endswith(".mp4")]) == 1
    assert len([c for c in slack.calls if c.method == "files.completeUploadExternal"]) == 2
    assert rec.id in json.dumps(progress()[0]["metadata"])
