"""The Home tab through the fake Slack: signed app_home_opened and Home buttons in,
views.publish out, each view checked by slack_sdk's own View model and Slack's limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from bot.dialogue.agents import build_request
from bot.dialogue.models import Origin, SessionStatus
from bot.driver import steps_after
from bot.slack.home import (
    ACTION_COPY,
    ACTION_DEFAULTS,
    ACTION_DELETE,
    ACTION_PAGE,
    ACTION_REMIX,
    ACTION_STOP,
    DEFAULT_CHANNEL,
    DEFAULT_CONTROLS,
    DEFAULT_PERSONA,
    DEFAULT_TARGET,
    DEFAULTS_CALLBACK,
    LIBRARY_PAGE,
    REMIX_CALLBACK,
    REMIX_CHANGE,
    REMIX_CHANNEL,
    SEARCH_CALLBACK,
    SEARCH_INPUT,
    HomeRefresher,
    HomeTab,
)
from bot.slack.people import People
from bot.slack.steps import STEPS
from bot.surfaces.base import REFRESH_HOME
from state import LibraryEntry, State
from state.defaults import WorkspaceDefaults
from tests import test_handlers as handlers_harness
from tests.fakes.slack_server import APP_ID, MAX_VIEW_BLOCKS, TEAM_ID, FakeSlack
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, library_entry, locked, make_session
from tests.slack_signing import FORM, interactive_body
from tests.test_handlers import ADA, BOSS, CHANNEL, GRACE, Harness, block_actions

# The signed-request harness of the handler tests, as fixtures here too.
slack = handlers_harness.slack
make_harness = handlers_harness.make_harness
app = handlers_harness.app

SECRET_CHANNEL = "G0SECRET"


async def add_entry(
    state: State,
    *,
    title: str,
    prompt: str = "a neon street in the rain",
    minutes: int = 5,
    channel: str = CHANNEL,
    user: str = ADA,
) -> LibraryEntry:
    entry = library_entry(
        title=title, prompt=prompt, minutes=minutes, channel=channel, user=user, team=TEAM_ID
    )
    await state.library.add(entry)
    return entry


async def open_home(h: Harness, user: str) -> dict[str, Any]:
    event = {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home"}
    resp = await h.event(h.envelope(event))
    assert resp.status == 200
    await h.settle()
    return home_of(h.slack, user)


def home_of(slack: FakeSlack, user: str) -> dict[str, Any]:
    view = slack.home(user)
    assert view is not None, f"no Home published for {user}"
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS
    View(
        **{k: view[k] for k in ("type", "blocks", "private_metadata", "callback_id")}
    ).validate_json()
    return view


def text_of(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def buttons(view: dict[str, Any], action_id: str) -> list[dict[str, Any]]:
    return [
        e
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == action_id
    ]


async def click_home(
    h: Harness, view: dict[str, Any], action_id: str, value: str, *, user: str
) -> None:
    payload = block_actions(
        action_id,
        value,
        user=user,
        container={"type": "view", "view_id": view["id"]},
        view={**view, "team_id": TEAM_ID},
    )
    resp = await h.post(interactive_body(payload), content_type=FORM)
    assert resp.status == 200, await resp.text()
    await h.settle()


async def test_home_shows_my_running_session_and_the_team_library(app: Harness) -> None:
    sid, _ = await app.start("a lighthouse at dusk")
    await add_entry(app.state, title="Neon rain", user=GRACE)
    view = await open_home(app, ADA)
    text = text_of(view)
    assert "a lighthouse at dusk" in text and "Neon rain" in text
    assert [b["value"] for b in buttons(view, ACTION_STOP)] == [sid]
    # Grace has nothing running, sees the same library, and Delete on the entry she made.
    grace = await open_home(app, GRACE)
    assert "a lighthouse at dusk" not in text_of(grace)
    assert len(buttons(grace, ACTION_DELETE)) == 1  # she started it
    assert buttons(view, ACTION_DELETE) == []  # Ada did not, and is no admin


async def test_the_library_pages_past_100_blocks(app: Harness) -> None:
    n = 2 * LIBRARY_PAGE + 5
    for i in range(n):
        await add_entry(app.state, title=f"Shot {i:02d}", minutes=n - i)
    seen: list[str] = []
    view = await open_home(app, ADA)
    while True:
        seen += [b["value"] for b in buttons(view, ACTION_COPY)]
        older = [b for b in buttons(view, ACTION_PAGE) if b["text"]["text"] == "Older"]
        if not older:
            break
        await click_home(app, view, ACTION_PAGE, older[0]["value"], user=ADA)
        view = home_of(app.slack, ADA)
    assert len(seen) == n == len(set(seen))
    assert "Shot 00" in text_of(view)  # the oldest, on the last page


async def test_a_private_channel_prompt_is_shown_to_its_members_only(
    app: Harness, slack: FakeSlack
) -> None:
    slack.seed_channel("secret-plans", SECRET_CHANNEL, is_private=True, members=[ADA])
    await add_entry(app.state, title="Secret launch", channel=SECRET_CHANNEL)
    await add_entry(app.state, title="Public teaser")
    assert "Secret launch" in text_of(await open_home(app, ADA))
    grace = await open_home(app, GRACE)
    assert "Public teaser" in text_of(grace) and "Secret launch" not in text_of(grace)
    # Nor by searching for it.
    await submit_search(app, "secret launch", user=GRACE)
    assert "Secret launch" not in text_of(home_of(slack, GRACE))
    assert slack.calls_to("conversations.members")


async def submit_view(
    h: Harness, callback_id: str, values: dict[str, Any], *, user: str, metadata: str = ""
) -> None:
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "fake-workspace"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "legacy",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            "id": "V0MODAL",
            "type": "modal",
            "team_id": TEAM_ID,
            "app_id": APP_ID,
            "callback_id": callback_id,
            "private_metadata": metadata,
            "state": {"values": values},
        },
    }
    resp = await h.post(interactive_body(payload), content_type=FORM)
    assert resp.status == 200, await resp.text()
    await h.settle()


async def submit_search(h: Harness, query: str, *, user: str) -> None:
    values = {SEARCH_INPUT: {SEARCH_INPUT: {"type": "plain_text_input", "value": query}}}
    await submit_view(h, SEARCH_CALLBACK, values, user=user)


async def test_a_search_shows_only_the_matching_prompts(app: Harness, slack: FakeSlack) -> None:
    await add_entry(app.state, title="Neon rain", prompt="a neon street at night")
    await add_entry(app.state, title="Dawn boat", prompt="a fishing boat at dawn", user=GRACE)
    await submit_search(app, "neon", user=ADA)
    text = text_of(home_of(slack, ADA))
    assert "Neon rain" in text and "Dawn boat" not in text
    await submit_search(app, f"by:<@{GRACE}>", user=ADA)
    text = text_of(home_of(slack, ADA))
    assert "Dawn boat" in text and "Neon rain" not in text


async def test_delete_is_for_the_starter_and_admins(app: Harness, slack: FakeSlack) -> None:
    entry = await add_entry(app.state, title="Neon rain", user=ADA)
    view = await open_home(app, GRACE)
    await click_home(app, view, ACTION_DELETE, entry.id, user=GRACE)
    assert await app.state.index.get(entry.id, team_id=TEAM_ID) is not None
    assert "Only the person who started it" in text_of(home_of(slack, GRACE))
    view = await open_home(app, BOSS)
    await click_home(app, view, ACTION_DELETE, entry.id, user=BOSS)
    assert await app.state.index.get(entry.id, team_id=TEAM_ID) is None
    assert await app.state.library.get(entry.id, team=TEAM_ID) is None
    assert "Neon rain" not in text_of(await open_home(app, ADA))


async def test_copy_prompt_opens_a_modal_with_the_prompt_to_copy(
    app: Harness, slack: FakeSlack
) -> None:
    entry = await add_entry(app.state, title="Neon rain", prompt="a neon street, <!channel> rain")
    view = await open_home(app, ADA)
    await click_home(app, view, ACTION_COPY, entry.id, user=ADA)
    [modal] = [v for v in slack.views() if v["type"] == "modal"]
    assert "a neon street, <!channel> rain" in json.dumps(modal["blocks"])  # verbatim, as text
    assert modal["blocks"][1]["type"] == "rich_text"


async def test_stop_from_home_stops_my_session(app: Harness, slack: FakeSlack) -> None:
    sid, _ = await app.start("a lighthouse at dusk")
    view = await open_home(app, ADA)
    await click_home(app, view, ACTION_STOP, sid, user=ADA)
    assert "Stop requested" in text_of(home_of(slack, ADA))
    assert [e.kind for e in await app.state.inbox.peek(sid)] == ["stop"]
    # Grace may not stop Ada's session from her Home either.
    await click_home(app, view, ACTION_STOP, sid, user=GRACE)
    assert "Only the person who started" in text_of(home_of(slack, GRACE))


async def submit_remix(h: Harness, entry_id: str, *, channel: str, change: str, user: str) -> None:
    values = {
        REMIX_CHANNEL: {
            REMIX_CHANNEL: {"type": "conversations_select", "selected_conversation": channel}
        },
        REMIX_CHANGE: {REMIX_CHANGE: {"type": "plain_text_input", "value": change}},
    }
    await submit_view(h, REMIX_CALLBACK, values, user=user, metadata=entry_id)


async def test_remix_starts_from_the_source_prompt_and_the_new_entry_names_it(
    app: Harness, slack: FakeSlack
) -> None:
    source = await add_entry(
        app.state, title="Neon rain", prompt="A neon street in the rain, slow dolly.", user=GRACE
    )
    view = await open_home(app, ADA)
    await click_home(app, view, ACTION_REMIX, source.id, user=ADA)
    [modal] = [v for v in slack.views() if v["callback_id"] == REMIX_CALLBACK]
    assert modal["private_metadata"] == source.id
    before = {m["ts"] for m in app.roots()}
    await submit_remix(app, source.id, channel=CHANNEL, change="make it dawn", user=ADA)
    [root] = [m for m in app.roots() if m["ts"] not in before]
    sid = await app.state.threads.lookup(TEAM_ID, CHANNEL, root["ts"])
    assert sid is not None
    session = await app.state.sessions.load(sid)
    assert session is not None
    assert (session.idea, session.remixed_from) == ("make it dawn", source.id)
    assert session.source_draft == source.locked.draft
    # The Copilot's first request carries the source prompt, labelled as draft v0.
    request = build_request(session, max_tokens=1000)
    assert request.agent == "copilot"
    first = request.messages[0].content
    assert "Draft v0 (the source): Neon rain" in first
    assert "A neon street in the rain, slow dolly." in first
    # Locked, its library entry names its source, and the Home says so.
    await app.state.library.add(LibraryEntry.from_session(locked(agent_turn(session))))
    entry = await app.state.index.get(sid, team_id=TEAM_ID)
    assert entry is not None and entry.remixed_from == source.id
    assert "remixed from “Neon rain”" in text_of(await open_home(app, ADA))


async def test_a_private_prompt_is_not_remixed_into_another_channel(
    app: Harness, slack: FakeSlack
) -> None:
    slack.seed_channel("secret-plans", SECRET_CHANNEL, is_private=True, members=[ADA])
    secret = await add_entry(app.state, title="Secret launch", channel=SECRET_CHANNEL)
    before = len(app.roots())
    await submit_remix(app, secret.id, channel=CHANNEL, change="", user=ADA)
    assert len(app.roots()) == before
    assert "remix it there" in text_of(home_of(slack, ADA))


def selected(value: str) -> dict[str, Any]:
    return {"type": "static_select", "selected_option": {"value": value}}


async def test_admins_set_the_workspace_defaults_on_home_and_sessions_use_them(
    app: Harness, slack: FakeSlack
) -> None:
    assert "Workspace defaults" not in text_of(await open_home(app, ADA))
    view = await open_home(app, BOSS)
    assert "Workspace defaults" in text_of(view)
    await click_home(app, view, ACTION_DEFAULTS, "defaults", user=BOSS)
    [modal] = [v for v in slack.views() if v["callback_id"] == DEFAULTS_CALLBACK]
    assert "sora-2-pro" in json.dumps(modal["blocks"])  # the targets to choose from
    values = {
        DEFAULT_CHANNEL: {
            DEFAULT_CHANNEL: {"type": "conversations_select", "selected_conversation": "C0PROMPTS"}
        },
        DEFAULT_TARGET: {DEFAULT_TARGET: selected("sora-2-pro")},
        DEFAULT_PERSONA: {DEFAULT_PERSONA: selected("director")},
        DEFAULT_CONTROLS: {DEFAULT_CONTROLS: selected("anyone")},
    }
    await submit_view(app, DEFAULTS_CALLBACK, values, user=ADA)  # not an admin: refused
    assert await app.state.defaults.get(TEAM_ID) == WorkspaceDefaults()
    await submit_view(app, DEFAULTS_CALLBACK, values, user=BOSS)
    assert await app.state.defaults.get(TEAM_ID) == WorkspaceDefaults(
        prompts_channel="C0PROMPTS",
        default_target="sora-2-pro",
        default_persona="director",
        controls_allowed="anyone",
    )
    assert "<#C0PROMPTS>" in text_of(home_of(slack, BOSS))
    sid, _ = await app.start("a lighthouse at dusk", user=ADA)
    session = await app.state.sessions.load(sid)
    assert session is not None
    assert (session.target.name, session.persona.name) == ("sora-2-pro", "director")
    # Anyone may now press the controls: Grace stops Ada's session from her Home.
    await click_home(app, await open_home(app, GRACE), ACTION_STOP, sid, user=GRACE)
    assert [e.kind for e in await app.state.inbox.peek(sid)] == ["stop"]


async def test_my_home_is_refreshed_once_for_changes_inside_a_window(
    app: Harness, slack: FakeSlack
) -> None:
    await add_entry(app.state, title="Neon rain")
    window_over = asyncio.Event()

    async def until_the_window_ends(seconds: float) -> None:
        await window_over.wait()

    client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
    refresher = HomeRefresher(
        HomeTab(app.state),
        people=People(client),
        settings=app.settings,
        window_ms=60_000,
        sleep=until_the_window_ends,
    )
    origin = Origin(
        surface="slack", channel_id=CHANNEL, thread_ts="1.1", user_id=ADA, team_id=TEAM_ID
    )
    session = make_session(origin=origin)
    for _ in range(3):  # a lock, a pause, another lock, all inside one window
        await refresher.changed(client, session)
    assert slack.calls_to("views.publish") == []
    window_over.set()
    await refresher.idle()
    assert len(slack.calls_to("views.publish")) == 1
    assert "Neon rain" in text_of(home_of(slack, ADA))
    terminal = make_session(origin=Origin(surface="terminal"))
    await refresher.changed(client, terminal)  # nobody's Home
    await refresher.idle()
    assert len(slack.calls_to("views.publish")) == 1


def test_a_lock_and_a_pause_end_with_the_home_refresh_step() -> None:
    done = locked(agent_turn(make_session()))
    paused = make_session().model_copy(update={"status": SessionStatus.PAUSED})
    assert steps_after(done)[-1] == REFRESH_HOME == steps_after(paused)[-1]
    assert REFRESH_HOME in STEPS
