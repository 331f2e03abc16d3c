"""The Home tab's listeners: opening it, its buttons, its search and remix modals.

Each acks at once and does its work after the ack (`AfterAck`): a Home view needs the
store and, for privacy, Slack's answers about the channels in the library. What the
person may do is checked here against the saved entry, never against the button:
Delete only by the person who started the session or an admin, Copy and Remix only
for an entry the person may see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.sessions import (
    TEAM_PERSONA_NAME_RE,
    BadInput,
    ControlKind,
    Invoker,
    Refused,
    Sessions,
)
from bot.slack.home import (
    ACTION_CLEAR,
    ACTION_COPY,
    ACTION_DEFAULTS,
    ACTION_DELETE,
    ACTION_PAGE,
    ACTION_PERSONA,
    ACTION_REMIX,
    ACTION_RETRY,
    ACTION_SEARCH,
    ACTION_STOP,
    DEFAULT_CHANNEL,
    DEFAULT_CONTROLS,
    DEFAULT_PERSONA,
    DEFAULT_TARGET,
    DEFAULTS_CALLBACK,
    PERSONA_CALLBACK,
    PERSONA_DESCRIPTION,
    PERSONA_NAME,
    REMIX_CALLBACK,
    REMIX_CHANGE,
    REMIX_CHANNEL,
    SEARCH_CALLBACK,
    SEARCH_INPUT,
    HomeState,
    HomeTab,
    copy_modal,
    defaults_modal,
    persona_modal,
    remix_modal,
    search_modal,
)
from handlers import start
from state import LibraryEntry
from state.defaults import WorkspaceDefaults

log = logging.getLogger("sora.handlers")

_CONTROLS: dict[str, ControlKind] = {ACTION_STOP: "stop", ACTION_RETRY: "retry"}


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)
    for action_id in (ACTION_SEARCH, ACTION_CLEAR, ACTION_PAGE, ACTION_COPY, ACTION_REMIX):
        app.action(action_id)(on_home_action)
    for action_id in (ACTION_DELETE, ACTION_STOP, ACTION_RETRY, ACTION_DEFAULTS, ACTION_PERSONA):
        app.action(action_id)(on_home_action)
    for callback in (DEFAULTS_CALLBACK, SEARCH_CALLBACK, REMIX_CALLBACK, PERSONA_CALLBACK):
        app.view_submission(callback)(on_home_submitted)


def _team(body: dict[str, Any]) -> str | None:
    team = body.get("team_id") or (body.get("team") or {}).get("id")
    if not team:
        team = (body.get("view") or {}).get("team_id")
    return str(team) if team else None


async def _publish(
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    *,
    team: str | None,
    user: str,
    state: HomeState | None = None,
    notice: str | None = None,
) -> None:
    person = await sessions.person(team, user)
    workspace = await sessions.settings_for(team) if person.is_admin else None
    try:
        await home.publish(
            client,
            team=team,
            user=user,
            is_admin=person.is_admin,
            home=state,
            notice=notice,
            workspace=workspace,
        )
    except SlackApiError as e:
        log.warning("Home tab of %s not published: %s", user, e.response.get("error"))


async def on_home_opened(
    event: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    if event.get("tab") not in (None, "home"):
        return  # the Messages tab (turned off in the manifest) or About
    user = str(event["user"])
    await after_ack.submit(_publish(client, sessions, home, team=_team(body), user=user))


async def _entry(
    client: AsyncWebClient, home: HomeTab, *, team: str | None, user: str, entry_id: str
) -> LibraryEntry | None:
    """The entry, if it exists and `user` may see it."""
    entry = await home.state.index.get(entry_id, team_id=team)
    if entry is None:
        return None
    if not await home.access.may_see(client, team=team or "-", user=user, channel=entry.channel_id):
        return None
    return entry


async def on_home_action(
    ack: AsyncAck,
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    await ack()
    await after_ack.submit(_home_action(action, body, client, sessions, home))


async def _home_action(
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
) -> None:
    user = str((body.get("user") or {})["id"])
    team = _team(body)
    action_id = str(action["action_id"])
    value = str(action.get("value") or "")
    current = HomeState.decode((body.get("view") or {}).get("private_metadata"))
    trigger = body.get("trigger_id")

    async def show(notice: str | None = None, state: HomeState | None = current) -> None:
        await _publish(client, sessions, home, team=team, user=user, state=state, notice=notice)

    if action_id == ACTION_SEARCH:
        await client.views_open(trigger_id=trigger, view=search_modal(current))
        return
    if action_id == ACTION_CLEAR:
        await show(state=None)
        return
    if action_id == ACTION_PAGE:
        await show(state=HomeState.decode(value))
        return
    if action_id == ACTION_PERSONA:
        await client.views_open(trigger_id=trigger, view=persona_modal())
        return
    if action_id == ACTION_DEFAULTS:
        if not (await sessions.person(team, user)).is_admin:
            await show("Only a workspace admin can change the workspace's defaults.")
            return
        names = [p.name for p in sessions.personas()]
        names += [p.name for p in await sessions.team_personas(team)]
        view = defaults_modal(await sessions.settings_for(team), persona_names=sorted(names))
        await client.views_open(trigger_id=trigger, view=view)
        return
    if action_id in _CONTROLS:
        try:
            notice = await sessions.control(_CONTROLS[action_id], session_id=value, user_id=user)
        except Refused as e:
            notice = f"⚠ {e}"
        await show(notice)
        return
    entry = await _entry(client, home, team=team, user=user, entry_id=value)
    if entry is None:
        await show("That prompt is gone, or made where you are not.")
        return
    if action_id == ACTION_COPY:
        view = copy_modal(entry, extra_profiles_dir=sessions.settings.extra_profiles_dir)
        await client.views_open(trigger_id=trigger, view=view)
    elif action_id == ACTION_REMIX:
        await client.views_open(trigger_id=trigger, view=remix_modal(entry))
    elif action_id == ACTION_DELETE:
        person = await sessions.person(team, user)
        if entry.user_id != user and not person.is_admin:
            notice = "Only the person who started it, or a workspace admin, can delete it."
        else:
            await sessions.state.library.delete(
                entry.id, channel=entry.channel_id, user=entry.user_id, team=team
            )
            await sessions.state.audit.record(
                team,
                "delete",
                session=entry.id,
                actor=user,
                actor_name=person.name,
                detail="library entry, from the Home tab",
            )
            notice = f"Deleted “{entry.locked.draft.title}” from the library."
        await show(notice)


def _input(view: dict[str, Any], block: str) -> dict[str, Any]:
    """The submitted state of a modal's input (block id and action id are both `block`)."""
    values = (view.get("state") or {}).get("values") or {}
    state = (values.get(block) or {}).get(block) or {}
    return state if isinstance(state, dict) else {}


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """A Home modal's submission and what its work needs after the ack."""

    body: dict[str, Any]
    view: dict[str, Any]
    client: AsyncWebClient
    sessions: Sessions
    home: HomeTab
    after_ack: AfterAck

    @property
    def user(self) -> str:
        return str((self.body.get("user") or {})["id"])

    @property
    def team(self) -> str | None:
        return _team(self.body)

    def chosen(self, block: str) -> str | None:
        option = _input(self.view, block).get("selected_option") or {}
        return str(option["value"]) if isinstance(option, dict) and option.get("value") else None

    async def publish(self, *, state: HomeState | None = None, notice: str | None = None) -> None:
        await _publish(
            self.client,
            self.sessions,
            self.home,
            team=self.team,
            user=self.user,
            state=state,
            notice=notice,
        )


async def on_home_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    """The search, remix and defaults modals: a missing field is answered in place,
    the rest after the ack."""
    callback = str(view.get("callback_id") or "")
    if callback == REMIX_CALLBACK and not _input(view, REMIX_CHANNEL).get("selected_conversation"):
        await ack(response_action="errors", errors={REMIX_CHANNEL: "Choose a channel."})
        return
    await ack()
    s = Submitted(
        body=body, view=view, client=client, sessions=sessions, home=home, after_ack=after_ack
    )
    await after_ack.submit(_SUBMITTED[callback](s))


async def _search(s: Submitted) -> None:
    query = str(_input(s.view, SEARCH_INPUT).get("value") or "")
    await s.publish(state=HomeState(query=" ".join(query.split())))


async def _remix(s: Submitted) -> None:
    channel = str(_input(s.view, REMIX_CHANNEL).get("selected_conversation"))
    change = str(_input(s.view, REMIX_CHANGE).get("value") or "")
    user, team, client = s.user, s.team, s.client
    entry = await _entry(
        client, s.home, team=team, user=user, entry_id=str(s.view.get("private_metadata") or "")
    )
    notice: str
    if entry is None:
        notice = "That prompt is gone, or made where you are not."
    elif (
        entry.channel_id
        and channel != entry.channel_id
        and not (
            await s.home.access.place(client, team=team or "-", channel=entry.channel_id)
        ).public
    ):
        # A prompt made in a private place stays there: remixing it elsewhere would show it.
        notice = "That prompt was made in a private conversation: remix it there, not elsewhere."
    else:
        try:
            session = s.sessions.build_remix(entry, change)
        except BadInput as e:
            notice = f"⚠ {e}"
        else:
            user_obj = s.body.get("user") or {}
            invoker = Invoker(
                channel_id=channel,
                user_id=user,
                team_id=team,
                user_name=user_obj.get("username") or user_obj.get("name"),
            )
            await start(session, invoker, sessions=s.sessions, after_ack=s.after_ack, client=client)
            notice = f"Remix of “{entry.locked.draft.title}” is starting in the channel you chose."
    await s.publish(notice=notice)


async def _save_defaults(s: Submitted) -> None:
    controls = s.chosen(DEFAULT_CONTROLS)
    defaults = WorkspaceDefaults(
        prompts_channel=_input(s.view, DEFAULT_CHANNEL).get("selected_conversation") or None,
        default_target=s.chosen(DEFAULT_TARGET),
        default_persona=s.chosen(DEFAULT_PERSONA),
        controls_allowed=controls if controls in ("starter_or_admin", "anyone") else None,
    )
    try:
        notice = await s.sessions.save_defaults(s.team, s.user, defaults)
    except Refused as e:
        notice = f"⚠ {e}"
    await s.publish(notice=notice)


async def _save_persona(s: Submitted) -> None:
    name = str(_input(s.view, PERSONA_NAME).get("value") or "").strip().lower()
    description = " ".join(str(_input(s.view, PERSONA_DESCRIPTION).get("value") or "").split())
    if not TEAM_PERSONA_NAME_RE.fullmatch(name):
        notice = "⚠ A team persona's name is one lowercase word (letters, digits, hyphens)."
    else:
        try:
            notice = await s.sessions.save_team_persona(
                team_id=s.team, user_id=s.user, name=name, description=description
            )
        except Refused as e:
            notice = f"⚠ {e}"
    await s.publish(notice=notice)


_SUBMITTED: dict[str, Callable[[Submitted], Coroutine[Any, Any, None]]] = {
    SEARCH_CALLBACK: _search,
    REMIX_CALLBACK: _remix,
    DEFAULTS_CALLBACK: _save_defaults,
    PERSONA_CALLBACK: _save_persona,
}
