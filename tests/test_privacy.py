"""Private stays private: a prompt made anywhere but a public channel is never shown
outside it, decided from what Slack says about the channel, at the start and again at
the lock. The fake Slack answers `conversations.info` as Slack does for each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.models import Session
from bot.driver import show, steps_after
from bot.sessions import Invoker, Sessions
from bot.slack.blocks import TURN_CROSSPOST, TURN_LOCKED
from bot.slack.client import close_client, make_client
from bot.slack.privacy import Places, place_of
from bot.slack.roots import Roots
from bot.slack.surface import SlackSurface
from state import State
from tests.fakes.slack_server import FakeSlack
from tests.redis_fixtures import *  # noqa: F403
from tests.redis_fixtures import agent_turn, locked, make_session

PUBLIC, PROMPTS, SECRET_PROMPTS = "C0PUBLIC", "C0PROMPTS", "C0SECRETP"
ALICE = "U0ALICE"
# Each kind of place, as Slack makes it: (id, seed_channel arguments, expected place).
PLACES: dict[str, tuple[str, dict[str, Any], str]] = {
    "public channel": ("C0OPEN", {}, "public"),
    "private channel": ("C0CLOSED", {"is_private": True}, "private_channel"),
    "private channel before 2021": ("G0OLD", {}, "private_channel"),
    "DM": ("D0ALICE", {"members": [ALICE]}, "dm"),
    "group DM": ("C0MPDM", {"is_mpim": True}, "group_dm"),
    "Slack Connect channel": ("C0CONNECT", {"is_ext_shared": True}, "shared"),
}
PRIVATE_KINDS = [k for k, (_, _, place) in PLACES.items() if place != "public"]


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, AsyncWebClient]]:
    async with FakeSlack() as fake:
        for name, (cid, kw, _) in PLACES.items():
            fake.seed_channel(name.replace(" ", "-"), cid, **kw)
        fake.seed_channel("prompts", PROMPTS)
        fake.seed_channel("secret-prompts", SECRET_PROMPTS, is_private=True)
        fake.seed_user(ALICE, "alice", display_name="Alice")
        client = make_client(settings(fake))
        yield fake, client
        await close_client(client)


def settings(fake: FakeSlack, **kw: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token=fake.token,
        slack_api_url=fake.api_url,
        prompts_channel=PROMPTS,
        **kw,
    )


@pytest.mark.parametrize("kind", list(PLACES))
async def test_the_place_is_what_slack_says_not_the_ids_first_letter(
    slack: tuple[FakeSlack, AsyncWebClient], kind: str
) -> None:
    _, client = slack
    cid, _, expected = PLACES[kind]
    assert await Places().place(client, cid) == expected


def test_an_object_with_no_channel_booleans_is_not_public() -> None:
    assert place_of({"id": "C1"}) == "unknown"
    assert place_of({"is_channel": True, "is_pending_ext_shared": True}) == "shared"


async def test_a_channel_slack_will_not_describe_counts_as_private(
    slack: tuple[FakeSlack, AsyncWebClient],
) -> None:
    fake, client = slack
    fake.error_next("conversations.info", "missing_scope")
    assert await Places().place(client, "C0OPEN") == "unknown"


async def locked_in(
    fake: FakeSlack, client: AsyncWebClient, state: State, channel: str, **kw: Any
) -> tuple[Session, SlackSurface]:
    """Start a session in `channel` as /sora does, lock it, and run the lock's steps."""
    service = Sessions(state=state, settings=settings(fake, **kw), slack=Roots(client))
    session = make_session()
    await service.start_session(session, invoker=Invoker(channel_id=channel, user_id=ALICE))
    return session, SlackSurface(client=client, state=state, settings=settings(fake, **kw))


async def lock(surface: SlackSurface, state: State, session: Session) -> Session:
    done = locked(agent_turn(session))
    await show(surface, done, steps_after(done), library=state.library)
    return done


def crossposts(fake: FakeSlack, channel: str = PROMPTS) -> list[dict[str, Any]]:
    return [
        m
        for m in fake.messages(channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("turn") == TURN_CROSSPOST
    ]


def locked_reply(fake: FakeSlack, channel: str, session: Session) -> str:
    thread = fake.thread(channel, str(session.origin.thread_ts))
    return " ".join(
        str(m.get("blocks"))
        for m in thread
        if (m.get("metadata") or {}).get("event_payload", {}).get("turn") == TURN_LOCKED
    )


@pytest.mark.parametrize("kind", PRIVATE_KINDS)
async def test_a_prompt_made_in_a_private_place_is_never_cross_posted(
    slack: tuple[FakeSlack, AsyncWebClient], real_state: State, kind: str
) -> None:
    fake, client = slack
    cid, _, place = PLACES[kind]
    session, surface = await locked_in(fake, client, real_state, cid)
    assert session.origin.place == place  # decided at the start, from conversations.info
    done = await lock(surface, real_state, session)
    assert crossposts(fake) == []
    assert "this prompt stays here" in locked_reply(fake, cid, done)
    entry = await real_state.library.get(done.id, team=done.origin.team_id)
    assert entry is not None and entry.place == place
    assert await real_state.library.recent(team=done.origin.team_id, channel=PUBLIC) == []


async def test_a_prompt_made_in_a_public_channel_is_cross_posted(
    slack: tuple[FakeSlack, AsyncWebClient], real_state: State
) -> None:
    fake, client = slack
    session, surface = await locked_in(fake, client, real_state, "C0OPEN")
    done = await lock(surface, real_state, session)
    assert len(crossposts(fake)) == 1
    assert "stays here" not in locked_reply(fake, "C0OPEN", done)


async def test_a_channel_made_private_during_the_session_counts_as_private(
    slack: tuple[FakeSlack, AsyncWebClient], real_state: State
) -> None:
    fake, client = slack
    session, surface = await locked_in(fake, client, real_state, "C0OPEN")
    assert session.origin.place == "public"
    await surface.places.place(client, "C0OPEN")  # cached as public
    fake.make_private("C0OPEN")
    done = await lock(surface, real_state, session)
    assert crossposts(fake) == [] and done.origin.place == "private_channel"
    assert "private channel" in locked_reply(fake, "C0OPEN", done)


async def test_private_prompts_may_be_collected_in_a_private_channel_only(
    slack: tuple[FakeSlack, AsyncWebClient], real_state: State
) -> None:
    fake, client = slack
    session, surface = await locked_in(
        fake, client, real_state, "C0CLOSED", private_prompts_channel=SECRET_PROMPTS
    )
    done = await lock(surface, real_state, session)
    assert crossposts(fake) == [] and len(crossposts(fake, SECRET_PROMPTS)) == 1
    assert f"<#{SECRET_PROMPTS}>" in locked_reply(fake, "C0CLOSED", done)

    # Pointed at a public channel, the opt-in collects nothing anywhere.
    session, surface = await locked_in(
        fake, client, real_state, "C0CLOSED", private_prompts_channel=PROMPTS
    )
    await lock(surface, real_state, session)
    assert crossposts(fake) == []
