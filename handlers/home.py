"""The Home tab's listeners: opening it, its buttons, its search and remix modals.

Each acks at once and does its work after the ack (`AfterAck`): a Home view needs the
store and, for privacy, Slack's answers about the channels in the library. What the
person may do is checked here against the saved entry, never against the button:
Delete only by the person who started the session or an admin, Copy and Remix only
for an entry the person may see.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.sessions import BadInput, ControlKind, Invoker, Refused, Sessions
from bot.slack.home import (
    ACTION_CLEAR,
    ACTION_COPY,
    ACTION_DELETE,
    ACTION_PAGE,
    ACTION_REMIX,
    ACTION_RETRY,
    ACTION_SEARCH,
    ACTION_STOP,
    REMIX_CALLBACK,
    REMIX_CHANGE,
    REMIX_CHANNEL,
    SEARCH_CALLBACK,
    SEARCH_INPUT,
    HomeState,
    HomeTab,
    copy_modal,
    remix_modal,
    search_modal,
)
from handlers import start
from state import LibraryEntry

log = logging.getLogger("sora.handlers")

_CONTROLS: dict[str, ControlKind] = {ACTION_STOP: "stop", ACTION_RETRY: "retry"}


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)
    for action_id in (ACTION_SEARCH, ACTION_CLEAR, ACTION_PAGE, ACTION_COPY, ACTION_REMIX):
        app.action(action_id)(on_home_action)
    for action_id in (ACTION_DELETE, ACTION_STOP, ACTION_RETRY):
        app.action(action_id)(on_home_action)
    app.view_submission(SEARCH_CALLBACK)(on_search_submitted)
    app.view_submission(REMIX_CALLBACK)(on_remix_submitted)


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
    try:
        await home.publish(
            client, team=team, user=user, is_admin=person.is_admin, home=state, notice=notice
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
    if action_id == ACTION_SEARCH:
        await client.views_open(trigger_id=trigger, view=search_modal(current))
        return
    if action_id == ACTION_CLEAR:
        await _publish(client, sessions, home, team=team, user=user)
        return
    if action_id == ACTION_PAGE:
        await _publish(client, sessions, home, team=team, user=user, state=HomeState.decode(value))
        return
    if action_id in _CONTROLS:
        try:
            notice = await sessions.control(_CONTROLS[action_id], session_id=value, user_id=user)
        except Refused as e:
            notice = f"⚠ {e}"
        await _publish(client, sessions, home, team=team, user=user, state=current, notice=notice)
        return
    entry = await _entry(client, home, team=team, user=user, entry_id=value)
    if entry is None:
        await _publish(
            client,
            sessions,
            home,
            team=team,
            user=user,
            state=current,
            notice="That prompt is gone, or made where you are not.",
        )
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
            notice = f"Deleted “{entry.locked.draft.title}” from the library."
        await _publish(client, sessions, home, team=team, user=user, state=current, notice=notice)


def _input(view: dict[str, Any], block: str) -> dict[str, Any]:
    """The submitted state of a modal's input (block id and action id are both `block`)."""
    values = (view.get("state") or {}).get("values") or {}
    state = (values.get(block) or {}).get(block) or {}
    return state if isinstance(state, dict) else {}


async def on_search_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    query = str(_input(view, SEARCH_INPUT).get("value") or "")
    await ack()
    user = str((body.get("user") or {})["id"])
    state = HomeState(query=" ".join(query.split()))
    await after_ack.submit(
        _publish(client, sessions, home, team=_team(body), user=user, state=state)
    )


async def on_remix_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    channel = _input(view, REMIX_CHANNEL).get("selected_conversation")
    change = str(_input(view, REMIX_CHANGE).get("value") or "")
    if not channel:
        await ack(response_action="errors", errors={REMIX_CHANNEL: "Choose a channel."})
        return
    await ack()
    await after_ack.submit(
        _remix(
            body,
            str(view.get("private_metadata") or ""),
            str(channel),
            change,
            client,
            sessions,
            home,
            after_ack,
        )
    )


async def _remix(
    body: dict[str, Any],
    entry_id: str,
    channel: str,
    change: str,
    client: AsyncWebClient,
    sessions: Sessions,
    home: HomeTab,
    after_ack: AfterAck,
) -> None:
    user_obj = body.get("user") or {}
    user, team = str(user_obj["id"]), _team(body)
    entry = await _entry(client, home, team=team, user=user, entry_id=entry_id)
    notice: str
    if entry is None:
        notice = "That prompt is gone, or made where you are not."
    elif (
        entry.channel_id
        and channel != entry.channel_id
        and (await home.access.place(client, team=team or "-", channel=entry.channel_id)).public
        is False
    ):
        # A prompt made in a private place stays there: remixing it elsewhere would show it.
        notice = "That prompt was made in a private conversation: remix it there, not elsewhere."
    else:
        try:
            session = sessions.build_remix(entry, change)
        except BadInput as e:
            notice = f"⚠ {e}"
        else:
            invoker = Invoker(
                channel_id=channel,
                user_id=user,
                team_id=team,
                user_name=user_obj.get("username") or user_obj.get("name"),
            )
            await start(session, invoker, sessions=sessions, after_ack=after_ack, client=client)
            notice = f"Remix of “{entry.locked.draft.title}” is starting in the channel you chose."
    await _publish(client, sessions, home, team=team, user=user, notice=notice)
