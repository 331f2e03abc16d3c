"""The Slack app end to end over HTTP: signed requests in, Slack calls and Redis state out.

Each test runs the real aiohttp web app (`bot.web`) with the real Bolt app on
127.0.0.1, against the fake Slack Web API and the real Redis (database 13, a
key prefix per test). Listeners go on after their ack, so a test waits for
them to finish (`Harness.settle`) before it looks at what they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.listener.async_listener_completion_handler import AsyncListenerCompletionHandler
from slack_bolt.listener.async_listener_start_handler import AsyncListenerStartHandler
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app
from bot.background import AfterAck
from bot.config import MAX_INTERJECTION_CHARS, Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import LockReason, Origin, Session, SessionStatus
from bot.llm.base import ModelReply, ModelRequest
from bot.llm.offline import OfflineModel
from bot.sessions import BadInput, parse_command_text
from bot.slack.blocks import (
    ACTION_LOCK,
    ACTION_RENDER,
    ACTION_RENDER_CONFIRM,
    ACTION_STOP,
    METADATA_EVENT,
    MODAL_CALLBACK,
    control_target,
    lock_value,
    render_value,
    root_blocks,
)
from bot.slack.client import close_client, make_client
from bot.slack.surface import SlackSurface
from bot.web import build_web_app
from bot.worker import Worker, WorkerConfig
from state import LibraryEntry, State
from tests.fakes.slack_server import APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID, FakeSlack
from tests.redis_fixtures import agent_turn, locked, make_session
from tests.slack_signing import (
    FORM,
    JSON_TYPE,
    command_body,
    event_body,
    interactive_body,
    signed_headers,
)
from tests.support import run_cli, wait_until

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0VIDEO"
ADA, GRACE, BOSS = "U0ADA", "U0GRACE", "U0BOSS"  # a starter, a colleague, a workspace admin
HANDLES = {ADA: "ada", GRACE: "grace", BOSS: "boss"}  # the user_name a command carries
IDEA = "a lighthouse at dusk"
ROOT = Path(__file__).resolve().parent.parent


# ---- harness --------------------------------------------------------------------------


def block_actions(action_id: str, value: str, *, user: str, **where: Any) -> dict[str, Any]:
    """A button press by `user`; `where` adds the container, channel or view it was in."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "legacy",
        "team": {"id": TEAM_ID, "domain": "fake-workspace"},
        "trigger_id": f"13345224609.738474920.{time.monotonic_ns()}",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "controls",
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
        **where,
    }


class InFlight:
    """Counts Bolt listeners still running after their ack, so tests can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def install(self, app: AsyncApp) -> None:
        tracker = self

        class Started(AsyncListenerStartHandler):
            async def handle(
                self, request: AsyncBoltRequest, response: BoltResponse | None
            ) -> None:
                tracker.count += 1
                tracker.idle.clear()

        class Finished(AsyncListenerCompletionHandler):
            async def handle(
                self, request: AsyncBoltRequest, response: BoltResponse | None
            ) -> None:
                tracker.count -= 1
                if tracker.count == 0:
                    tracker.idle.set()

        app.listener_runner.listener_start_handler = Started()
        app.listener_runner.listener_completion_handler = Finished()


class Harness:
    def __init__(
        self,
        *,
        slack: FakeSlack,
        state: State,
        settings: Settings,
        http: TestClient[web.Request, web.Application],
    ) -> None:
        self.slack = slack
        self.state = state
        self.settings = settings
        self.http = http
        self.in_flight = InFlight()
        self.after_ack = AfterAck()
        self._events = 0

    async def post(
        self,
        body: str,
        *,
        content_type: str,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        all_headers = signed_headers(secret, body, content_type=content_type, timestamp=timestamp)
        all_headers.update(headers or {})
        return await self.http.post("/slack/events", data=body.encode(), headers=all_headers)

    async def command(self, text: str, *, user: str = ADA, channel: str = CHANNEL) -> Any:
        """Send `/sora text`; the ack's body (JSON, text, or "" for an empty ack)."""
        resp = await self.post(
            command_body(
                token="legacy",
                team_id=TEAM_ID,
                team_domain="fake-workspace",
                channel_id=channel,
                channel_name="video-ideas",
                user_id=user,
                user_name=HANDLES.get(user, user.lower()),
                command="/sora",
                text=text,
                api_app_id=APP_ID,
                trigger_id=f"13345224609.738474920.{time.monotonic_ns()}",
            ),
            content_type=FORM,
        )
        assert resp.status == 200, await resp.text()
        raw = await resp.text()
        return json.loads(raw) if raw.startswith("{") else raw

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        self._events += 1
        return {
            "token": "legacy",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{self._events:08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        }

    async def event(self, envelope: dict[str, Any], *, retry: int = 0) -> ClientResponse:
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(
            event_body(envelope), content_type=JSON_TYPE, headers=headers if retry else None
        )

    async def click(self, action_id: str, sid: str, *, user: str, root_ts: str) -> ClientResponse:
        payload = block_actions(
            action_id,
            sid,
            user=user,
            container={"type": "message", "message_ts": root_ts, "channel_id": CHANNEL},
            channel={"id": CHANNEL, "name": "video-ideas"},
        )
        return await self.post(interactive_body(payload), content_type=FORM)

    async def submit(
        self, values: dict[str, Any], *, user: str = ADA, channel: str = CHANNEL
    ) -> Any:
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "fake-workspace"},
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "legacy",
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "view": {
                "id": "V0MODAL",
                "type": "modal",
                "team_id": TEAM_ID,
                "app_id": APP_ID,
                "callback_id": MODAL_CALLBACK,
                "private_metadata": json.dumps({"channel_id": channel}),
                "state": {"values": values},
            },
        }
        resp = await self.post(interactive_body(payload), content_type=FORM)
        assert resp.status == 200, await resp.text()
        raw = await resp.text()
        return json.loads(raw) if raw.startswith("{") else raw

    async def settle(self) -> None:
        """Wait until every listener and the work it handed off after its ack are done."""
        await asyncio.wait_for(self.in_flight.idle.wait(), timeout=10)
        await asyncio.wait_for(self.after_ack.idle(), timeout=10)

    async def start(self, text: str = IDEA, *, user: str = ADA) -> tuple[str, str]:
        """Start a session through `/sora`; its id and its root's ts."""
        before = {m["ts"] for m in self.roots()}
        assert await self.command(text, user=user) == ""
        await self.settle()
        [root] = [m for m in self.roots() if m["ts"] not in before]
        sid = await self.state.threads.lookup(TEAM_ID, CHANNEL, root["ts"])
        assert sid is not None
        return sid, root["ts"]

    def roots(self) -> list[dict[str, Any]]:
        return [
            m
            for m in self.slack.messages(CHANNEL)
            if m.get("metadata", {}).get("event_type") == METADATA_EVENT
            and m.get("thread_ts", m["ts"]) == m["ts"]
        ]

    async def keys(self) -> list[str]:
        return sorted(
            [k async for k in self.state.redis.scan_iter(match=f"{self.state.keys.prefix}:*")]
        )


def make_settings(slack: FakeSlack, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": slack.token,
        "slack_signing_secret": SECRET,
        "slack_api_url": slack.api_url,
        "redis_prefix": prefix,
        "max_running_per_user": 3,
        "max_running_per_team": 50,
        "controls_allowed": "starter_or_admin",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.seed_channel("video-ideas", CHANNEL)
        fake.seed_user(ADA, "ada", display_name="Ada")
        fake.seed_user(GRACE, "grace", display_name="Grace")
        fake.seed_user(BOSS, "boss", display_name="The Boss", is_admin=True)
        yield fake


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(
    slack: FakeSlack, real_state: State, prefix: str
) -> AsyncIterator[HarnessFactory]:
    made: list[Harness] = []

    async def make(state: State | None = None, **overrides: Any) -> Harness:
        settings = make_settings(slack, prefix, **overrides)
        use = state or real_state
        if state is None:
            await use.queue.ensure_group()
        after_ack = AfterAck()
        app = build_app(settings=settings, state=use, after_ack=after_ack)
        http = TestClient(TestServer(build_web_app(app, state=use), host="127.0.0.1"))
        await http.start_server()
        harness = Harness(slack=slack, state=use, settings=settings, http=http)
        harness.after_ack = after_ack
        harness.in_flight.install(app)
        made.append(harness)
        clients.append(app.client)
        return harness

    clients: list[AsyncWebClient] = []
    yield make
    for harness in made:
        await harness.settle()
        await harness.http.close()
    for client in clients:
        await close_client(client)


@pytest.fixture
async def app(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


# ---- /sora <idea> ---------------------------------------------------------------------


async def test_a_signed_sora_command_posts_the_root_and_queues_turn_zero(app: Harness) -> None:
    # Slack sends what people type with &, < and > as HTML entities.
    text = f"{IDEA} &amp; fog persona: a 1970s Italian horror director rounds: 4 target: sora-2-pro"
    assert await app.command(text) == ""  # an empty ack: the thread is the answer
    await app.settle()

    [root] = app.roots()
    assert root["user"] == BOT_USER_ID and "Sora Copilot" in root["text"]
    sid = await app.state.threads.lookup(TEAM_ID, CHANNEL, root["ts"])
    assert sid is not None and root["metadata"]["event_payload"] == {"session": sid, "kind": "root"}
    session = await app.state.sessions.load(sid)
    assert session is not None
    assert session.idea == f"{IDEA} & fog"
    assert session.max_rounds == 4 and session.target.name == "sora-2-pro"
    # A free-text persona is written by the worker before turn 0, from these words.
    assert session.persona.description == "a 1970s Italian horror director"
    assert session.persona.pending
    assert session.origin == Origin(
        surface="slack",
        channel_id=CHANNEL,
        thread_ts=root["ts"],
        user_id=ADA,
        user_name="ada",  # the command's handle; the worker looks up "Ada" at the lock
        team_id=TEAM_ID,
        place="public",  # what conversations.info says of the channel
    )
    assert session.status == SessionStatus.RUNNING and session.next_turn == 0
    assert app.slack.calls_to("users.info") == []  # one Slack call to start: the root
    stats = await app.state.queue.stats()
    assert stats.backlog == 1 and stats.dead == 0
    assert await app.state.running.count_user(ADA, TEAM_ID) == 1


async def test_the_ack_does_not_wait_for_the_thread_root(app: Harness) -> None:
    await app.command("help")  # the first request checks the token (auth.test) once
    app.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    assert await app.command(IDEA) == ""
    assert time.monotonic() - started < 0.5  # the root waits a second for Slack's rate limit
    assert app.roots() == []
    await app.settle()
    assert len(app.roots()) == 1
    assert (await app.state.queue.stats()).backlog == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("   persona: director", "The idea is empty"),
        ("x" * 2001, "The idea is 2001 characters; the limit is 2000."),
        (f"{IDEA} persona: fonder", "Unknown persona 'fonder'"),
        (f"{IDEA} rounds: 0", "Rounds must be between 1 and 12, not 0."),
        (f"{IDEA} rounds: 13", "Rounds must be between 1 and 12, not 13."),
        (f"{IDEA} rounds: four", "Rounds must be a whole number between 1 and 12"),
        (f"{IDEA} target: sora-9", "Unknown target 'sora-9'"),
        (f"{IDEA} target: sora-2 target: generic", "`target:` is given twice"),
    ],
)
async def test_bad_input_is_answered_in_the_ack_and_changes_nothing(
    app: Harness, text: str, says: str
) -> None:
    before = await app.keys()
    reply = await app.command(text)
    await app.settle()
    assert reply["response_type"] == "ephemeral" and says in reply["text"]
    assert app.slack.calls_to("chat.postMessage") == []
    assert await app.keys() == before  # no session, no job, no running slot
    assert await app.state.running.count_user(ADA, TEAM_ID) == 0


async def test_a_fourth_running_session_of_one_person_is_refused(app: Harness) -> None:
    for i in range(3):
        await app.start(f"{IDEA}, take {i}")
    before = await app.keys()
    assert await app.command(f"{IDEA}, take 4") == ""
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, ADA)
    assert "You already have 3 sessions running" in refusal["text"]
    assert len(app.roots()) == 3 and await app.keys() == before
    assert (await app.state.queue.stats()).backlog == 3
    await app.start(user=GRACE)  # someone else still may


async def test_the_team_cap_refuses_a_session_beyond_it(make_harness: HarnessFactory) -> None:
    app = await make_harness(max_running_per_team=2)
    await app.start(user=ADA)
    await app.start(user=GRACE)
    assert await app.command(IDEA, user=BOSS) == ""
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, BOSS)
    assert "This workspace already has 2 sessions running" in refusal["text"]
    assert len(app.roots()) == 2
    assert await app.state.running.count_user(BOSS, TEAM_ID) == 0


async def test_the_channel_cap_refuses_clearly_and_a_finished_session_frees_its_place(
    make_harness: HarnessFactory,
) -> None:
    app = await make_harness(max_running_per_channel=2)
    first, _ = await app.start(user=ADA)
    await app.start(user=GRACE)
    before = await app.keys()
    assert await app.command(IDEA, user=BOSS) == ""
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, BOSS)
    assert refusal["text"].startswith(":warning: This channel already has 2 sessions running")
    assert len(app.roots()) == 2 and await app.keys() == before
    # A session that ends (here: stopped) no longer counts against its channel.
    session = await app.state.sessions.load(first)
    assert session is not None
    session.status = SessionStatus.STOPPED
    assert await app.state.sessions.save(session, expected_turn=0)
    await app.start(user=BOSS)
    assert len(app.roots()) == 3
    assert await app.state.running.count_channel(CHANNEL, TEAM_ID) == 2


async def test_a_burst_in_one_channel_posts_its_roots_in_order_and_tells_who_waits(
    make_harness: HarnessFactory,
) -> None:
    app = await make_harness()
    people = [f"U0P{i}" for i in range(6)]
    for p in people:
        app.slack.seed_user(p, p.lower(), display_name=p)
    for i, p in enumerate(people):  # each acked before the next is sent, before any wait
        assert await app.command(f"{IDEA} #{i}", user=p) == ""
    await app.settle()
    roots = sorted(app.roots(), key=lambda m: float(m["ts"]))
    assert [r["text"].rsplit("#", 1)[1] for r in roots] == [str(i) for i in range(6)]
    # Slack allows a burst of 3, then one post a second per channel: the last roots
    # waited their turn in the channel's line, and their starters were told.
    for p in people[4:]:
        [notice] = app.slack.ephemerals(CHANNEL, p)
        assert notice["text"].startswith("Starting — ")
        assert "queued in this channel" in notice["text"]
    assert all(
        not e["text"].startswith(":warning:")
        for p in people
        for e in app.slack.ephemerals(CHANNEL, p)
    )


async def test_a_root_slack_refuses_frees_the_slot_and_starts_nothing(app: Harness) -> None:
    await app.command("help")
    before = await app.keys()
    app.slack.error_next("chat.postMessage", "not_in_channel")
    assert await app.command(IDEA) == ""
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, ADA)
    assert "invite me" in refusal["text"]
    # The attempted post spent a rate-limit token (a short-lived bucket); nothing else changed.
    after = [k for k in await app.keys() if ":ratelimit:" not in k]
    assert app.roots() == [] and after == before
    assert await app.state.running.count_user(ADA, TEAM_ID) == 0


# ---- signatures -----------------------------------------------------------------------


async def test_a_forged_signature_gets_401_and_changes_nothing(app: Harness) -> None:
    before = await app.keys()
    body = command_body(command="/sora", text=IDEA, user_id=ADA, channel_id=CHANNEL)
    resp = await app.post(body, content_type=FORM, secret="not-the-signing-secret")
    assert resp.status == 401
    await app.settle()
    assert app.slack.calls == [] and await app.keys() == before


async def test_a_stale_timestamp_gets_401_and_changes_nothing(app: Harness) -> None:
    before = await app.keys()
    body = command_body(command="/sora", text=IDEA, user_id=ADA, channel_id=CHANNEL)
    resp = await app.post(body, content_type=FORM, timestamp=int(time.time()) - 6 * 60)
    assert resp.status == 401
    await app.settle()
    assert app.slack.calls == [] and await app.keys() == before


async def test_the_url_verification_challenge_is_answered(app: Harness) -> None:
    body = event_body(
        {"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV", "type": "url_verification"}
    )
    resp = await app.post(body, content_type=JSON_TYPE)
    assert resp.status == 200 and await resp.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV"}


# ---- replies in the thread ------------------------------------------------------------


def reply_event(
    text: str, ts: str, root_ts: str, *, user: str = GRACE, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": CHANNEL,
        "channel_type": "channel",
        "user": user,
        "team": TEAM_ID,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "thread_ts": root_ts,
        **extra,
    }


async def test_a_thread_reply_is_queued_once_with_eyes_even_when_retried(app: Harness) -> None:
    sid, root_ts = await app.start()
    ts = app.slack.seed_message(
        CHANNEL, "make it foggy &amp; <b>cold</b>", user=GRACE, thread_ts=root_ts
    )
    envelope = app.envelope(reply_event("make it foggy &amp; &lt;b&gt;cold&lt;/b&gt;", ts, root_ts))
    assert (await app.event(envelope)).status == 200
    await app.settle()
    assert (await app.event(envelope, retry=1)).status == 200  # Slack's retry of the same event
    await app.settle()

    [entry] = await app.state.inbox.peek(sid)
    assert entry.kind == "interjection" and entry.author == "Grace" and entry.user_id == GRACE
    assert entry.text == "make it foggy & <b>cold</b>" and entry.source_id == ts
    assert app.slack.reactions(CHANNEL, ts) == {"eyes": [BOT_USER_ID]}
    assert len(app.slack.calls_to("reactions.add")) == 1


async def test_a_reply_also_sent_to_the_channel_is_an_interjection(app: Harness) -> None:
    sid, root_ts = await app.start()
    ts = app.slack.seed_message(CHANNEL, "warmer light", user=GRACE, thread_ts=root_ts)
    event = reply_event("warmer light", ts, root_ts, subtype="thread_broadcast")
    await app.event(app.envelope(event))
    await app.settle()
    assert [e.text for e in await app.state.inbox.peek(sid)] == ["warmer light"]
    assert app.slack.reactions(CHANNEL, ts) == {"eyes": [BOT_USER_ID]}


@pytest.mark.parametrize(
    "kind",
    [
        "other bot",
        "bot_message subtype",
        "own post",
        "edit",
        "deletion",
        "join",
        "top level",
        "not a session thread",
    ],
)
async def test_messages_that_are_not_a_persons_thread_reply_are_ignored(
    app: Harness, kind: str
) -> None:
    sid, root_ts = await app.start()
    ts = app.slack.seed_message(CHANNEL, "hello", user=GRACE, thread_ts=root_ts)
    other_root = app.slack.seed_message(CHANNEL, "an unrelated thread", user=GRACE)
    events = {
        "other bot": reply_event("beep", ts, root_ts, bot_id="B0OTHER"),
        "bot_message subtype": reply_event("beep", ts, root_ts, subtype="bot_message"),
        "own post": reply_event("my own turn", ts, root_ts, user=BOT_USER_ID, bot_id=BOT_ID),
        "edit": {
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL,
            "ts": f"{time.time():.6f}",
            "message": reply_event("edited", ts, root_ts),
            "previous_message": reply_event("hello", ts, root_ts),
        },
        "deletion": {
            "type": "message",
            "subtype": "message_deleted",
            "channel": CHANNEL,
            "ts": f"{time.time():.6f}",
            "deleted_ts": ts,
            "previous_message": reply_event("hello", ts, root_ts),
        },
        "join": reply_event("<@U0GRACE> has joined", ts, root_ts, subtype="channel_join"),
        "top level": reply_event("hello", other_root, other_root) | {"thread_ts": None},
        "not a session thread": reply_event("hello", ts, other_root),
    }
    resp = await app.event(app.envelope(events[kind]))
    assert resp.status == 200
    await app.settle()
    assert await app.state.inbox.size(sid) == 0
    assert app.slack.calls_to("reactions.add") == []
    assert app.slack.ephemerals(CHANNEL, GRACE) == []


async def test_an_overlong_reply_gets_an_ephemeral_and_is_not_queued(app: Harness) -> None:
    sid, root_ts = await app.start()
    text = "y" * (MAX_INTERJECTION_CHARS + 1)
    ts = app.slack.seed_message(CHANNEL, text, user=GRACE, thread_ts=root_ts)
    envelope = app.envelope(reply_event(text, ts, root_ts))
    await app.event(envelope)
    await app.settle()
    await app.event(envelope, retry=1)
    await app.settle()
    [note] = app.slack.ephemerals(CHANNEL, GRACE)  # once, though Slack sent it twice
    assert f"at most {MAX_INTERJECTION_CHARS:,}" in note["text"] and note["thread_ts"] == root_ts
    assert await app.state.inbox.size(sid) == 0
    assert app.slack.calls_to("reactions.add") == []


async def test_a_reply_to_a_finished_session_is_ignored_quietly(app: Harness) -> None:
    root_ts = app.slack.seed_message(CHANNEL, "an old session's root", user=BOT_USER_ID)
    origin = Origin(
        surface="slack", channel_id=CHANNEL, thread_ts=root_ts, user_id=ADA, team_id=TEAM_ID
    )
    done = locked(agent_turn(make_session(origin=origin)))
    await app.state.sessions.create(done)
    ts = app.slack.seed_message(CHANNEL, "love it", user=GRACE, thread_ts=root_ts)
    await app.event(app.envelope(reply_event("love it", ts, root_ts)))
    await app.settle()
    assert await app.state.inbox.size(done.id) == 0
    assert app.slack.ephemerals(CHANNEL, GRACE) == [] and app.slack.reactions(CHANNEL, ts) == {}


# ---- buttons --------------------------------------------------------------------------


async def test_stop_from_someone_else_is_refused_and_changes_nothing(app: Harness) -> None:
    sid, root_ts = await app.start()
    before = await app.keys()
    assert (await app.click(ACTION_STOP, sid, user=GRACE, root_ts=root_ts)).status == 200
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, GRACE)
    assert "Only the person who started this session, or a workspace admin" in refusal["text"]
    assert await app.state.inbox.size(sid) == 0 and await app.keys() == before
    assert (await app.state.queue.stats()).backlog == 1


async def test_stop_from_the_starter_queues_a_stop_and_wakes_the_session(app: Harness) -> None:
    sid, root_ts = await app.start()
    await app.click(ACTION_STOP, sid, user=ADA, root_ts=root_ts)
    await app.settle()
    [entry] = await app.state.inbox.peek(sid)
    assert entry.kind == "stop" and entry.author == "Ada" and entry.user_id == ADA
    assert (await app.state.queue.stats()).backlog == 2  # turn 0's job, and the wake-up
    jobs = await app.state.queue.take("w", count=2)
    assert [(j.session_id, j.team) for j in jobs] == [(sid, TEAM_ID)] * 2  # its workspace's
    [note] = app.slack.ephemerals(CHANNEL, ADA)
    assert note["text"].startswith("Stop requested")


async def test_a_workspace_admin_may_stop_anyones_session(app: Harness) -> None:
    sid, root_ts = await app.start()
    await app.click(ACTION_STOP, sid, user=BOSS, root_ts=root_ts)
    await app.settle()
    [entry] = await app.state.inbox.peek(sid)
    assert entry.kind == "stop" and entry.author == "The Boss"


async def test_anyone_may_stop_when_controls_are_open(make_harness: HarnessFactory) -> None:
    app = await make_harness(controls_allowed="anyone")
    sid, root_ts = await app.start()
    await app.click(ACTION_STOP, sid, user=GRACE, root_ts=root_ts)
    await app.settle()
    assert [e.kind for e in await app.state.inbox.peek(sid)] == ["stop"]


async def test_render_is_refused_privately_offered_to_the_starter_and_confirmed_once(
    make_harness: HarnessFactory,
) -> None:
    app = await make_harness(render_offline_in_slack=True)
    root_ts = app.slack.seed_message(CHANNEL, "a session", user=BOT_USER_ID)
    origin = Origin(
        surface="slack", channel_id=CHANNEL, thread_ts=root_ts, user_id=ADA, team_id=TEAM_ID
    )
    done = locked(agent_turn(make_session(origin=origin)))
    await app.state.sessions.create(done)
    before = await app.keys()
    await app.click(ACTION_RENDER, render_value(done.id, "draft"), user=GRACE, root_ts=root_ts)
    await app.settle()
    [refusal] = app.slack.ephemerals(CHANNEL, GRACE)
    assert "Only the person who started this session, or a workspace admin" in refusal["text"]
    assert await app.keys() == before
    await app.click(ACTION_RENDER, render_value(done.id, "draft"), user=ADA, root_ts=root_ts)
    await app.settle()
    [offer] = app.slack.ephemerals(CHANNEL, ADA)
    assert "Left today: this workspace 120 s of 120 s, you 40 s of 40 s" in json.dumps(
        offer["blocks"]
    )
    # An offer reserves nothing: it only names the entry's render-to-be (its slot).
    slot = app.state.keys.render_slot(TEAM_ID, done.id, "draft")
    assert await app.keys() == sorted([*before, slot])
    [confirm, _cancel] = offer["blocks"][-1]["elements"]
    for _ in range(2):  # a double click
        await app.click(ACTION_RENDER_CONFIRM, confirm["value"], user=ADA, root_ts=root_ts)
    await app.settle()
    texts = [e["text"] for e in app.slack.ephemerals(CHANNEL, ADA)[1:]]
    assert sorted(t.split(":")[0] for t in texts) == [
        "Submitted",
        "This render was already submitted; its progress is in the thread.",
    ]
    assert (await app.state.queue.stats()).backlog == 1


async def test_lock_without_a_draft_and_stop_on_a_finished_session_are_refused(
    app: Harness,
) -> None:
    sid, root_ts = await app.start()
    await app.click(ACTION_LOCK, sid, user=ADA, root_ts=root_ts)
    origin = Origin(
        surface="slack", channel_id=CHANNEL, thread_ts=root_ts, user_id=ADA, team_id=TEAM_ID
    )
    done = locked(agent_turn(make_session(origin=origin)))
    await app.state.sessions.create(done)
    await app.click(ACTION_STOP, done.id, user=ADA, root_ts=root_ts)
    await app.settle()
    texts = sorted(e["text"] for e in app.slack.ephemerals(CHANNEL, ADA))
    assert texts == [
        ":warning: There is no draft to lock yet.",
        ":warning: This session is already locked.",
    ]
    assert await app.state.inbox.size(sid) == 0 and await app.state.inbox.size(done.id) == 0


# ---- the modal ------------------------------------------------------------------------


async def test_sora_alone_opens_the_new_session_modal(app: Harness) -> None:
    assert await app.command("") == ""
    await app.settle()
    [call] = app.slack.calls_to("views.open")
    assert call.params["trigger_id"].startswith("13345224609.")
    [view] = app.slack.views()
    assert view["callback_id"] == MODAL_CALLBACK
    assert json.loads(view["private_metadata"]) == {"channel_id": CHANNEL}
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert blocks["idea"]["element"]["multiline"] is True
    assert blocks["idea"]["element"]["max_length"] == 2000
    assert {o["value"] for o in blocks["persona"]["element"]["options"]} >= {"director", "founder"}
    assert {o["value"] for o in blocks["target"]["element"]["options"]} >= {"sora-2", "sora-2-pro"}
    assert app.roots() == []


def modal_values(
    *,
    idea: str | None,
    persona: str | None = "director",
    free: str | None = None,
    rounds: str | None = "4",
    target: str | None = "sora-2",
) -> dict[str, Any]:
    def select(action: str, value: str | None) -> dict[str, Any]:
        option = {"value": value, "text": {"type": "plain_text", "text": value}} if value else None
        return {action: {"type": "static_select", "selected_option": option}}

    return {
        "idea": {"idea": {"type": "plain_text_input", "value": idea}},
        "persona": select("persona", persona),
        "persona_text": {"persona_text": {"type": "plain_text_input", "value": free}},
        "rounds": {"rounds": {"type": "number_input", "value": rounds}},
        "target": select("target", target),
    }


async def test_a_modal_submission_with_bad_fields_gets_field_errors(app: Harness) -> None:
    before = await app.keys()
    reply = await app.submit(modal_values(idea="  ", rounds="13", free="fonder"))
    await app.settle()
    assert reply["response_action"] == "errors"
    errors = reply["errors"]
    assert set(errors) == {"idea", "rounds", "persona_text"}
    assert "The idea is empty" in errors["idea"] and "not 13" in errors["rounds"]
    assert app.roots() == [] and await app.keys() == before


async def test_a_good_modal_submission_starts_a_session_in_the_commands_channel(
    app: Harness,
) -> None:
    reply = await app.submit(modal_values(idea=IDEA, free="a 1970s Italian horror director"))
    await app.settle()
    assert reply == ""  # the modal closes
    [root] = app.roots()
    sid = await app.state.threads.lookup(TEAM_ID, CHANNEL, root["ts"])
    assert sid is not None
    session = await app.state.sessions.load(sid)
    assert session is not None and session.max_rounds == 4
    # A free-text persona is written by the worker before turn 0, from these words.
    assert session.persona.description == "a 1970s Italian horror director"
    assert session.persona.pending
    assert session.origin.user_id == ADA and session.origin.thread_ts == root["ts"]


# ---- help, personas, library ----------------------------------------------------------


async def test_help_and_personas_answer_in_the_ack(app: Harness) -> None:
    help_reply = await app.command("help")
    assert help_reply["response_type"] == "ephemeral" and "/sora <idea>" in help_reply["text"]
    assert "`veo-3.1`" in help_reply["text"] and "`runway-gen-4.5`" in help_reply["text"]
    personas = await app.command("personas")
    assert "Tomás Ferreira" in personas["text"] and "indie film director" in personas["text"]
    assert "`director`" in personas["text"]
    await app.settle()
    assert app.roots() == []


async def test_library_lists_the_channels_latest_locked_prompts(app: Harness) -> None:
    root_ts = app.slack.seed_message(CHANNEL, "an old session's root", user=BOT_USER_ID)
    here = Origin(
        surface="slack",
        channel_id=CHANNEL,
        thread_ts=root_ts,
        user_id=ADA,
        user_name="Ada",
        team_id=TEAM_ID,
    )
    elsewhere = here.model_copy(update={"channel_id": "C0ELSEWHERE"})
    for origin, idea in ((here, "a lighthouse"), (elsewhere, "a submarine")):
        session = locked(agent_turn(make_session(origin=origin, idea=idea)))
        await app.state.library.add(LibraryEntry.from_session(session))

    assert await app.command("library") == ""
    await app.settle()
    [listing] = app.slack.ephemerals(CHANNEL, ADA)
    text = listing["text"]
    assert "*Threshold.*" in text  # the caption
    assert "Version 1: a lighthouse keeper on a wet stone stair" in text  # the prompt excerpt
    assert "Tomás Ferreira" in text and f"<@{ADA}>" in text
    assert (
        f"https://fake-workspace.slack.com/archives/{CHANNEL}/p{root_ts.replace('.', '')}" in text
    )
    assert text.count("• ") == 1  # the other channel's prompt is not listed


# ---- health ---------------------------------------------------------------------------


async def test_healthz_is_200_while_redis_answers(app: Harness) -> None:
    resp = await app.http.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"ok": True, "redis": "ok"}


async def test_healthz_is_503_when_redis_is_unreachable(
    make_harness: HarnessFactory, prefix: str
) -> None:
    nowhere = Redis.from_url(
        "redis://127.0.0.1:1/0", decode_responses=True, socket_connect_timeout=1
    )
    try:
        app = await make_harness(state=State.create(nowhere, prefix=prefix))
        resp = await app.http.get("/healthz")
        body = await resp.json()
        assert (
            resp.status == 503 and body["ok"] is False and body["redis"].startswith("unreachable")
        )
        assert "127.0.0.1" not in body["redis"] and "Error" not in body["redis"]
    finally:
        await nowhere.aclose()


# ---- parsing ---------------------------------------------------------------------------


def test_options_may_come_anywhere_and_persona_takes_words_up_to_the_next() -> None:
    r = parse_command_text(
        "a lighthouse rounds: 4 at dusk persona: a 1970s Italian horror director target: sora-2-pro"
    )
    assert (r.kind, r.idea, r.rounds, r.target) == (
        "start",
        "a lighthouse at dusk",
        "4",
        "sora-2-pro",
    )
    assert r.persona == "a 1970s Italian horror director"
    assert parse_command_text("  ").kind == "modal"
    assert parse_command_text("Help").kind == "help"
    assert parse_command_text("a sniper's xtarget: here").idea == "a sniper's xtarget: here"
    with pytest.raises(BadInput, match="given twice"):
        parse_command_text("idea rounds: 3 rounds: 4")


# ---- the commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve"], {}, "sora-copilot serve needs REDIS_URL"),
        (
            ["serve"],
            {"REDIS_URL": "redis://127.0.0.1:6379/13"},
            "sora-copilot serve needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET",
        ),
        (
            ["serve"],
            {"REDIS_URL": "redis://127.0.0.1:6379/13", "SLACK_BOT_TOKEN": "xoxb-1"},
            "sora-copilot serve needs SLACK_SIGNING_SECRET",
        ),
        (["dev"], {"SLACK_BOT_TOKEN": "xoxb-1"}, "sora-copilot dev needs SLACK_APP_TOKEN"),
    ],
)
def test_serve_and_dev_refuse_clearly_without_their_settings(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    p = run_cli(*args, cwd=tmp_path, env=env)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert says in err and "Traceback" not in err


# ---- the thread as everyone sees it: a worker in this process --------------------------


class GatedModel(OfflineModel):
    """The offline model, held before its call number `hold_at` (0-based) until released."""

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.calls = 0
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request: ModelRequest, on_text: Any = None) -> ModelReply:
        n, self.calls = self.calls, self.calls + 1
        if n == self.hold_at:
            self.holding.set()
            await self.release.wait()
        return await super().complete(request, on_text)


@contextlib.asynccontextmanager
async def worker_for(app: Harness, model: OfflineModel) -> AsyncIterator[Worker]:
    """A worker showing sessions in the fake Slack, as `sora-copilot worker` does."""
    client = make_client(app.settings)
    worker = Worker(
        state=app.state,
        engine=Engine(model=model),
        surface=SlackSurface(client=client, state=app.state, settings=app.settings),
        config=WorkerConfig(concurrency=4, block_ms=50, drain_s=0.5, reclaim_every_s=0.2),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        yield worker
    finally:
        stopping.set()
        await task
        await close_client(client)


async def _finished(state: State, sid: str) -> Session | None:
    s = await state.sessions.load(sid)
    return s if s is not None and s.finished else None


async def test_lock_pressed_during_a_copilot_turn_locks_the_version_that_was_pressed(
    app: Harness,
) -> None:
    # Calls 0 and 1 are the Copilot's opening (v1) and the persona's push-back; the
    # Copilot's next turn (call 2, which writes v2) is held while Ada presses Lock.
    model = GatedModel(hold_at=2)
    sid, root_ts = await app.start()
    async with worker_for(app, model):
        await asyncio.wait_for(model.holding.wait(), timeout=30)
        on_screen = await app.state.sessions.load(sid)
        assert on_screen is not None and on_screen.latest_draft is not None
        assert on_screen.latest_draft.version == 1
        [lock] = [
            e
            for b in root_blocks(on_screen)
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == ACTION_LOCK
        ]
        assert lock["text"]["text"] == "Lock draft v1"
        await app.click(ACTION_LOCK, lock["value"], user=ADA, root_ts=root_ts)
        await app.settle()
        [note] = app.slack.ephemerals(CHANNEL, ADA)
        assert note["text"] == "Lock requested: draft v1 is locked before the next turn."
        model.release.set()
        done = await wait_until(lambda: _finished(app.state, sid), "the lock", within=30)
    assert done.locked is not None and done.locked.reason == LockReason.HUMAN
    assert done.locked.draft.version == 1 and done.locked.locked_by == "Ada"
    assert [d.version for d in done.drafts] == [1, 2]  # v2 was written and shown, not locked
    assert done.locked.draft == done.drafts[0]
    [pinned] = app.slack.pins(CHANNEL)
    shown = json.dumps(app.slack.message(CHANNEL, pinned), ensure_ascii=False)
    assert "Locked v1 (pressed by Ada)." in shown
    assert "v2, written after Lock was pressed, is not locked." in shown
    # `shown` is JSON text: compare the prompt as JSON encodes it (it has line breaks).
    assert json.dumps(done.drafts[0].prompt_text, ensure_ascii=False)[1:-1] in shown


def test_a_lock_button_value_names_its_session_and_version() -> None:
    assert control_target(lock_value("abc123", 7)) == ("abc123", 7)
    assert control_target("abc123") == ("abc123", None)  # Stop, Retry, older Lock buttons


# What pings people in Slack text: a broadcast, a user, a user group.
LIVE_MENTION = re.compile(
    r"<!(?:channel|here|everyone)(?:\|[^>]*)?>|<@[UW][A-Z0-9]+(?:\|[^>]*)?>|<!subteam\^[^>]*>"
)
PINGS = "<!channel> <!here> <!everyone> <@U0BOSS> <!subteam^S0TEAM|@video>"


async def test_nothing_a_person_typed_can_ping_anyone_in_any_message_or_file(
    make_harness: HarnessFactory, slack: FakeSlack
) -> None:
    """Idea, free-text persona, an interjection and its author's name all carry live
    mention syntax; every message and file the app sends Slack is swept for it."""
    slack.seed_channel("prompts", "C0PROMPTS")
    slack.seed_user("U0MAL", "mal", display_name=f"Mal {PINGS}")
    app = await make_harness(prompts_channel="C0PROMPTS", default_rounds=2)
    sid, root_ts = await app.start(f"a festival {PINGS} persona: a director who shouts {PINGS}")
    ts = slack.seed_message(CHANNEL, f"louder {PINGS}", user="U0MAL", thread_ts=root_ts)
    await app.event(app.envelope(reply_event(f"louder {PINGS}", ts, root_ts, user="U0MAL")))
    await app.settle()
    async with worker_for(app, OfflineModel()):
        await wait_until(lambda: _finished(app.state, sid), "the session to end", within=60)
        await wait_until(lambda: slack.files(), "the report", within=30)
    done = await app.state.sessions.load(sid)
    assert done is not None and done.locked is not None
    assert any(t.author.startswith("Mal") for t in done.interjections)
    assert slack.messages("C0PROMPTS"), "the cross-post is part of the sweep"
    starter = f"*Started by:* <@{ADA}>"  # the one mention the app means to make
    swept = 0
    for call in slack.calls:
        if call.method.startswith(("chat.", "files.")):
            sent = json.dumps(call.params, ensure_ascii=False).replace(starter, "")
            assert not LIVE_MENTION.findall(sent), (call.method, LIVE_MENTION.findall(sent))
            swept += 1
    for f in slack.files():
        content = slack.file_content(f["id"]).decode("utf-8")
        assert not LIVE_MENTION.findall(content + json.dumps(f, ensure_ascii=False))
    assert swept >= 10
    # Escaped, what was typed still reads as typed.
    [root_post] = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params.get("text", "").startswith("Sora Copilot session")
    ]
    assert "&lt;!channel&gt;" in root_post.params["text"]
