"""Deletion you can ask for, and a clear answer when a session is gone: through signed
Slack requests against the fake Slack and the real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack.blocks import ACTION_DELETE, ACTION_STOP, locked_parts
from bot.slack.lost import DELETED_LINE, LOST_LINE
from bot.slack.poster import WORKSPACE
from state import LibraryEntry
from tests import test_handlers
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID
from tests.redis_fixtures import agent_turn, locked
from tests.test_handlers import ADA, BOSS, CHANNEL, GRACE, Harness, HarnessFactory

# The signed-request harness of test_handlers: a Bolt app on the fake Slack and real Redis.
slack = test_handlers.slack
make_harness = test_handlers.make_harness


@pytest.fixture
async def app(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


async def keys_of(app: Harness, sid: str) -> list[str]:
    found = []
    redis = app.state.redis
    for key in await app.keys():
        kind = await redis.type(key)
        if (
            sid in key
            or (kind == "zset" and await redis.zscore(key, sid) is not None)
            or (kind == "hash" and await redis.hexists(key, sid))
        ):
            found.append(key)
    return found


async def lock_and_list(app: Harness, sid: str) -> None:
    """What the worker leaves once the session locks: its library entry."""
    session = await app.state.sessions.load(sid)
    assert session is not None
    await app.state.library.add(LibraryEntry.from_session(locked(agent_turn(session))))


def root(app: Harness, ts: str) -> dict[str, Any]:
    message = app.slack.message(CHANNEL, ts)
    assert message is not None
    return message


def reply(thread_ts: str, after_s: int, *, parent: str) -> dict[str, Any]:
    """Grace's reply in a thread whose first message `parent` wrote (Slack names the
    thread's author in a reply's `parent_user_id`)."""
    return {
        "type": "message",
        "channel": CHANNEL,
        "user": GRACE,
        "text": "more fog please",
        "ts": f"{float(thread_ts) + after_s:.6f}",
        "thread_ts": thread_ts,
        "parent_user_id": parent,
        "channel_type": "channel",
    }


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in message.get("blocks") or [] if b["type"] == "actions"]


async def test_the_starter_deletes_a_session_and_every_key_of_it(app: Harness) -> None:
    sid, root_ts = await app.start()
    await lock_and_list(app, sid)
    assert await keys_of(app, sid)
    await app.command(f"delete {sid}")
    await app.settle()
    [told] = app.slack.ephemerals(CHANNEL, ADA)
    assert told["text"].startswith(f"Deleted session {sid}")
    assert await keys_of(app, sid) == []
    assert await app.state.library.get(sid, team=TEAM_ID) is None
    assert buttons(root(app, root_ts)) == [] and DELETED_LINE in str(root(app, root_ts))


async def test_someone_else_cannot_delete_it(app: Harness) -> None:
    sid, _ = await app.start()
    before = await keys_of(app, sid)
    await app.command(f"delete {sid}", user=GRACE)
    await app.settle()
    [told] = app.slack.ephemerals(CHANNEL, GRACE)
    assert "Only the person who started this session, or a workspace admin" in told["text"]
    assert await keys_of(app, sid) == before


async def test_an_admin_deletes_with_the_locked_replys_button(app: Harness) -> None:
    sid, root_ts = await app.start()
    await lock_and_list(app, sid)
    session = await app.state.sessions.load(sid)
    assert session is not None
    [button] = [
        e
        for b in locked_parts(locked(agent_turn(session)))[-1].blocks
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert button["action_id"] == ACTION_DELETE and "confirm" in button
    await app.click(ACTION_DELETE, sid, user=BOSS, root_ts=root_ts)
    await app.settle()
    assert await keys_of(app, sid) == []
    [told] = app.slack.ephemerals(CHANNEL, BOSS)
    assert told["text"].startswith("Deleted session")


async def test_a_library_entry_outliving_its_session_can_be_deleted(app: Harness) -> None:
    sid, _ = await app.start()
    await lock_and_list(app, sid)
    await app.state.redis.delete(app.state.keys.session(sid))  # expired after 30 days
    await app.command(f"delete {sid}")
    await app.settle()
    assert await app.state.library.get(sid, team=TEAM_ID) is None
    assert await app.state.library.recent(team=TEAM_ID, channel=CHANNEL) == []


async def test_delete_without_an_id_is_one_clear_line(app: Harness) -> None:
    reply = await app.command("delete")
    assert "`/sora delete <session id>`" in str(reply)


async def test_a_button_on_a_session_that_is_gone_answers_and_retires_its_root(
    app: Harness,
) -> None:
    sid, root_ts = await app.start()
    assert buttons(root(app, root_ts))
    await app.state.redis.delete(app.state.keys.session(sid))  # Redis lost it
    spent = await updates_spent(app)
    await app.click(ACTION_STOP, sid, user=ADA, root_ts=root_ts)
    await app.settle()
    [told] = app.slack.ephemerals(CHANNEL, ADA)
    assert "no longer exists" in told["text"] and "/sora <idea>" in told["text"]
    assert buttons(root(app, root_ts)) == [] and LOST_LINE in str(root(app, root_ts))
    # The root's update took its call of the workspace's chat.update budget (Tier 3).
    assert await updates_spent(app) == spent + 1


async def updates_spent(app: Harness) -> int:
    """Calls taken from the workspace's chat.update budget in its current window."""
    return int(await app.state.redis.zcard(app.state.keys.update_budget(WORKSPACE)))


async def test_a_reply_in_a_thread_whose_session_is_gone_is_answered(app: Harness) -> None:
    sid, root_ts = await app.start()
    await app.state.redis.delete(  # restarted empty: neither the session nor its thread
        app.state.keys.session(sid), app.state.keys.thread(TEAM_ID, CHANNEL, root_ts)
    )
    spent = await updates_spent(app)
    await app.event(app.envelope(reply(root_ts, 5, parent=BOT_USER_ID)))
    await app.settle()
    [told] = app.slack.ephemerals(CHANNEL, GRACE)
    assert "no longer exists" in told["text"]
    assert buttons(root(app, root_ts)) == []
    assert await updates_spent(app) == spent + 1


async def test_a_reply_in_someone_elses_thread_says_nothing(app: Harness) -> None:
    theirs = app.slack.seed_message(CHANNEL, "lunch?", user=ADA)
    for n in range(2):
        await app.event(app.envelope(reply(theirs, 1 + n, parent=ADA)))
        await app.settle()
    assert app.slack.ephemerals(CHANNEL, GRACE) == []
    assert app.slack.calls_to("conversations.history") == []  # not the app's: not looked at
