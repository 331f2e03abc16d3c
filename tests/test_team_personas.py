"""Team personas through the fake Slack: saved with /sora persona save, listed, used by
name, edited and deleted by their author or an admin, and per workspace."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.sessions import BadInput, CommandRequest, Sessions
from bot.slack.home import ACTION_PERSONA, PERSONA_CALLBACK, PERSONA_DESCRIPTION, PERSONA_NAME
from bot.slack.roots import Roots
from state.defaults import WorkspaceDefaults
from tests.fakes.slack_server import TEAM_ID
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import library_entry
from tests.test_handlers import ADA, BOSS, CHANNEL, GRACE, Harness
from tests.test_home import (
    click_home,
    handlers_harness,
    home_of,
    open_home,
    submit_view,
    text_of,
)

# The signed-request harness of the handler tests, as fixtures here too.
slack = handlers_harness.slack
make_harness = handlers_harness.make_harness
app = handlers_harness.app

CRITIC = "a harsh festival film critic who hates clichés"


def sessions_of(h: Harness) -> Sessions:
    """The service behind the app, as a test calls it directly."""
    client = AsyncWebClient(token=h.slack.token, base_url=h.slack.api_url)
    return Sessions(state=h.state, settings=h.settings, slack=Roots(client))


async def told(h: Harness, text: str, *, user: str) -> str:
    """Send `/sora text` as `user`; the newest ephemeral answer they got."""
    assert await h.command(text, user=user) == ""
    await h.settle()
    return str(h.slack.ephemerals(CHANNEL, user)[-1]["text"])


async def test_a_team_persona_is_saved_listed_used_edited_and_deleted(app: Harness) -> None:
    assert "saved" in await told(app, f"persona save critic: {CRITIC}", user=ADA)
    listed = await app.command("personas", user=GRACE)
    assert "`critic`" in listed["text"] and "festival film critic" in listed["text"]

    sid, _ = await app.start("a lighthouse at dusk persona: critic", user=GRACE)
    session = await app.state.sessions.load(sid)
    assert session is not None
    assert (session.persona.name, session.persona.description) == ("custom", CRITIC)

    # Grace did not save it: she may neither change nor delete it; an admin may.
    assert "someone else" in await told(app, "persona save critic: a kind critic", user=GRACE)
    assert "Only the person" in await told(app, "persona delete critic", user=GRACE)
    assert "updated" in await told(app, "persona save critic: a kind gentle critic", user=BOSS)
    stored = await app.state.personas.get(TEAM_ID, "critic")
    assert stored is not None and stored.description == "a kind gentle critic"

    assert "deleted" in await told(app, "persona delete critic", user=ADA)
    reply = await app.command("another idea persona: critic", user=ADA)
    assert "Unknown persona 'critic'" in reply["text"]


async def test_bad_team_persona_commands_are_answered_and_change_nothing(app: Harness) -> None:
    for text in ("persona save critic", "persona save Two Words: x", "persona rename a b"):
        reply = await app.command(text, user=ADA)
        assert "/sora persona save <name>: <description>" in reply["text"]
    assert "shipped persona" in await told(app, "persona save director: a quiet one", user=ADA)
    assert "does not make a persona" in await told(app, "persona save critic: ab", user=ADA)
    assert await app.state.personas.all(TEAM_ID) == []


async def test_another_workspace_never_sees_a_team_persona(app: Harness) -> None:
    assert "saved" in await told(app, f"persona save critic: {CRITIC}", user=ADA)
    sessions_service = sessions_of(app)
    assert await app.state.personas.get("T0OTHER", "critic") is None
    with pytest.raises(BadInput):
        await sessions_service.build_for_team(
            CommandRequest(kind="start", idea="a lighthouse", persona="critic"), "T0OTHER"
        )
    made = await sessions_service.build_for_team(
        CommandRequest(kind="start", idea="a lighthouse", persona="critic"), TEAM_ID
    )
    assert made.persona.description == CRITIC


async def test_uninstalling_deletes_the_workspaces_personas_defaults_and_index(
    app: Harness,
) -> None:
    assert "saved" in await told(app, f"persona save critic: {CRITIC}", user=ADA)
    await app.state.defaults.save(TEAM_ID, WorkspaceDefaults(default_target="sora-2-pro"))
    await app.state.library.add(library_entry(title="Rain", prompt="rain", team=TEAM_ID))
    await app.state.library.add(library_entry(title="Rain", prompt="rain", team="T0OTHER"))
    service = sessions_of(app)
    await service.uninstall(TEAM_ID, why="app_uninstalled")
    tag = "{ws:" + TEAM_ID + "}"
    assert [k for k in await app.keys() if tag in k] == []
    assert (await app.state.index.search("T0OTHER", ["rain"])).entries  # another's stays


async def test_a_team_persona_is_saved_from_the_home_tab_and_listed_there(app: Harness) -> None:
    view = await open_home(app, GRACE)
    assert "Team personas" in text_of(view) and "None yet" in text_of(view)
    await click_home(app, view, ACTION_PERSONA, "persona", user=GRACE)
    assert [v for v in app.slack.views() if v["callback_id"] == PERSONA_CALLBACK]
    values = {
        PERSONA_NAME: {PERSONA_NAME: {"type": "plain_text_input", "value": "Critic"}},
        PERSONA_DESCRIPTION: {PERSONA_DESCRIPTION: {"type": "plain_text_input", "value": CRITIC}},
    }
    await submit_view(app, PERSONA_CALLBACK, values, user=GRACE)
    stored = await app.state.personas.get(TEAM_ID, "critic")
    assert stored is not None and (stored.author_id, stored.description) == (GRACE, CRITIC)
    assert "`critic`: a harsh festival film critic" in text_of(home_of(app.slack, GRACE))


async def test_persona_and_defaults_changes_are_in_the_audit_trail(app: Harness) -> None:
    assert "saved" in await told(app, f"persona save critic: {CRITIC}", user=ADA)
    service = sessions_of(app)
    await service.save_defaults(TEAM_ID, BOSS, WorkspaceDefaults(default_target="sora-2-pro"))
    trail = await app.state.audit.read(TEAM_ID)
    assert [(e.action, e.actor, e.detail) for e in trail] == [
        ("settings", ADA, "team persona critic saved"),
        ("settings", BOSS, 'defaults {"default_target":"sora-2-pro"}'),
    ]
