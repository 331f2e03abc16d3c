"""The app's Home tab: a person's running sessions and the team library, and its modals.

Built for the person who opens it: *Running now* lists the sessions they started that
are running or paused (Stop, and Retry when paused); *Team library* lists the
workspace's locked prompts newest first, one compact entry each (Copy prompt, Remix,
and Delete for the person who started it and admins), or the answers to a search. Only
entries the viewer may see are listed (`bot.slack.access`), and pages are counted
after that filter, so a page is never short because of it.

Block Kit allows 100 blocks in a Home view (api.slack.com/reference/block-kit/views);
a library entry takes `BLOCKS_PER_ENTRY`, so `LIBRARY_PAGE` entries and the fixed
parts stay under it, and Older/Newer buttons page through the rest. Every view is
checked by slack_sdk's own `View` model before it is sent.

`views.publish` is Tier 4 (about 100 a minute per workspace,
api.slack.com/methods/views.publish). The Home is published when a person opens it or
presses one of its buttons, and refreshed when a session of theirs locks or pauses:
that refresh is coalesced (`HomeRefresher`), one per person per
HOME_REFRESH_COALESCE_MS, showing everything that changed in the window.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import FREE_TEXT_MAX_CHARS, targets
from bot.dialogue.report import ready_prompt
from bot.dialogue.text import as_text
from bot.slack.access import Access
from bot.slack.blocks import STATUS_LABELS, escape, truncate
from bot.slack.people import People
from state import LibraryEntry, State
from state.keys import HOME_REFRESH_COALESCE_MS, NO_TEAM
from state.personas import TeamPersona
from state.search import query_terms

log = logging.getLogger("sora.slack")

MAX_VIEW_BLOCKS = 100
BLOCKS_PER_ENTRY = 3  # section, context, actions
LIBRARY_PAGE = 20
RUNNING_SHOWN = 5
QUERY_MAX_CHARS = 200
PREVIEW_CHARS = 280

ACTION_SEARCH = "home_search"
ACTION_CLEAR = "home_clear"
ACTION_PAGE = "home_page"
ACTION_COPY = "home_copy"
ACTION_REMIX = "home_remix"
ACTION_DELETE = "home_delete"
ACTION_STOP = "home_stop"
ACTION_RETRY = "home_retry"
ACTION_DEFAULTS = "home_defaults"
ACTION_PERSONA = "home_persona"
PERSONA_CALLBACK = "home_persona_modal"
PERSONA_NAME = "persona_name"
PERSONA_DESCRIPTION = "persona_description"
PERSONAS_SHOWN_CHARS = 2_500
DEFAULTS_CALLBACK = "home_defaults_modal"
DEFAULT_CHANNEL = "prompts_channel"
DEFAULT_TARGET = "default_target"
DEFAULT_PERSONA = "default_persona"
DEFAULT_CONTROLS = "controls_allowed"
CONTROLS_LABELS = {
    "starter_or_admin": "the starter and admins",
    "anyone": "anyone in the channel",
}
SEARCH_CALLBACK = "home_search_modal"
REMIX_CALLBACK = "home_remix_modal"
SEARCH_INPUT = "query"
REMIX_CHANNEL = "channel"
REMIX_CHANGE = "change"


@dataclass(frozen=True, kw_only=True)
class HomeState:
    """What the viewer is looking at: a page of the library or of a search."""

    page: int = 0
    query: str = ""

    def encode(self) -> str:
        return json.dumps({"p": self.page, "q": self.query})

    @classmethod
    def decode(cls, raw: str | None) -> HomeState:
        try:
            data = json.loads(raw or "{}")
            return cls(page=max(0, int(data.get("p", 0))), query=str(data.get("q", ""))[:200])
        except (ValueError, TypeError, AttributeError):
            return cls()


def _text(s: str, kind: str = "mrkdwn") -> dict[str, Any]:
    return {"type": kind, "text": s}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": _text(text, "plain_text"),
        "action_id": action_id,
        "value": value,
    }
    if style:
        b["style"] = style
    return b


def thread_link(channel: str | None, ts: str | None) -> str | None:
    """A link to a thread that Slack opens in the right workspace."""
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def _when(entry: LibraryEntry) -> str:
    ts = int(entry.created_at.timestamp())
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{entry.created_at:%Y-%m-%d %H:%M} UTC>"


def _running_blocks(sessions: list[Session]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _text("Running now", "plain_text")}]
    if not sessions:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _text("Nothing of yours is running. Type `/sora <idea>` in a channel.")
                ],
            }
        )
        return blocks
    for s in sessions[:RUNNING_SHOWN]:
        link = thread_link(s.origin.channel_id, s.origin.thread_ts)
        where = f" · <{link}|open the thread>" if link else ""
        blocks.append(
            {
                "type": "section",
                "text": _text(
                    f"{STATUS_LABELS[s.status]} · *{escape(truncate(s.idea, 150))}*\n"
                    f"Round {s.rounds} of {s.max_rounds} · {escape(s.target.name)}{where}"
                ),
            }
        )
        buttons = [_button("Stop", ACTION_STOP, s.id, "danger")]
        if s.status == SessionStatus.PAUSED:
            buttons.insert(0, _button("Retry", ACTION_RETRY, s.id, "primary"))
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def _defaults_blocks(s: Settings) -> list[dict[str, Any]]:
    channel = f"<#{s.prompts_channel}>" if s.prompts_channel else "none"
    return [
        {"type": "divider"},
        {"type": "header", "text": _text("Workspace defaults", "plain_text")},
        {
            "type": "section",
            "fields": [
                _text(f"*Prompts channel*\n{channel}"),
                _text(f"*Target*\n{escape(s.default_target)}"),
                _text(f"*Persona*\n{escape(s.default_persona)}"),
                _text(f"*Controls*\n{CONTROLS_LABELS[s.controls_allowed]}"),
            ],
            "accessory": _button("Edit", ACTION_DEFAULTS, "defaults"),
        },
    ]


def _personas_blocks(team: list[TeamPersona]) -> list[dict[str, Any]]:
    lines = [f"`{p.name}`: {escape(truncate(p.description, 120))}" for p in team]
    listed = (
        truncate("\n".join(lines), PERSONAS_SHOWN_CHARS)
        if lines
        else ("None yet. A team persona is a name for a description, used as `persona: <name>`.")
    )
    return [
        {"type": "divider"},
        {"type": "header", "text": _text("Team personas", "plain_text")},
        {
            "type": "section",
            "text": _text(listed),
            "accessory": _button("Save a persona", ACTION_PERSONA, "persona"),
        },
    ]


def persona_modal() -> dict[str, Any]:
    """The form that saves a team persona (as `/sora persona save <name>: <description>`)."""
    return validated(
        {
            "type": "modal",
            "callback_id": PERSONA_CALLBACK,
            "title": _text("Save a team persona", "plain_text"),
            "submit": _text("Save", "plain_text"),
            "close": _text("Cancel", "plain_text"),
            "blocks": [
                {
                    "type": "input",
                    "block_id": PERSONA_NAME,
                    "label": _text("Name (one lowercase word)", "plain_text"),
                    "element": {
                        "type": "plain_text_input",
                        "action_id": PERSONA_NAME,
                        "max_length": 32,
                        "placeholder": _text("critic", "plain_text"),
                    },
                },
                {
                    "type": "input",
                    "block_id": PERSONA_DESCRIPTION,
                    "label": _text("Who they are", "plain_text"),
                    "element": {
                        "type": "plain_text_input",
                        "action_id": PERSONA_DESCRIPTION,
                        "multiline": True,
                        "max_length": FREE_TEXT_MAX_CHARS,
                        "placeholder": _text("a harsh festival film critic", "plain_text"),
                    },
                },
            ],
        }
    )


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _text(truncate(label, 75), "plain_text"), "value": value}


def _select(action_id: str, options: list[tuple[str, str]], initial: str | None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "static_select",
        "action_id": action_id,
        "options": [_option(label, value) for label, value in options],
    }
    chosen = next(((lab, v) for lab, v in options if v == initial), None)
    if chosen is not None:
        element["initial_option"] = _option(*chosen)
    return element


def defaults_modal(s: Settings, *, persona_names: list[str]) -> dict[str, Any]:
    """The admins' form for the workspace's defaults, filled with the current ones."""
    channel: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": DEFAULT_CHANNEL,
        "filter": {"include": ["public"], "exclude_bot_users": True},
    }
    if s.prompts_channel:
        channel["initial_conversation"] = s.prompts_channel
    profiles = sorted(targets(s.extra_profiles_dir))

    def field(block: str, label: str, element: dict[str, Any], optional: bool) -> dict[str, Any]:
        return {
            "type": "input",
            "block_id": block,
            "optional": optional,
            "label": _text(label, "plain_text"),
            "element": element,
        }

    return validated(
        {
            "type": "modal",
            "callback_id": DEFAULTS_CALLBACK,
            "title": _text("Workspace defaults", "plain_text"),
            "submit": _text("Save", "plain_text"),
            "close": _text("Cancel", "plain_text"),
            "blocks": [
                field(DEFAULT_CHANNEL, "Prompts channel (public)", channel, True),
                field(
                    DEFAULT_TARGET,
                    "Default target",
                    _select(DEFAULT_TARGET, [(t, t) for t in profiles], s.default_target),
                    False,
                ),
                field(
                    DEFAULT_PERSONA,
                    "Default persona",
                    _select(
                        DEFAULT_PERSONA, [(p, p) for p in persona_names[:100]], s.default_persona
                    ),
                    False,
                ),
                field(
                    DEFAULT_CONTROLS,
                    "Who may press Stop, Lock and Retry",
                    _select(
                        DEFAULT_CONTROLS,
                        [(label, v) for v, label in CONTROLS_LABELS.items()],
                        s.controls_allowed,
                    ),
                    False,
                ),
            ],
        }
    )


def _entry_blocks(entry: LibraryEntry, *, may_delete: bool) -> list[dict[str, Any]]:
    d = entry.locked.draft
    link = thread_link(entry.channel_id, entry.thread_ts)
    about = [
        f"Locked by <@{entry.user_id}>" if entry.user_id else "Locked in the terminal",
        _when(entry),
    ]
    if link:
        about.append(f"<{link}|thread>")
    if entry.remixed_from:
        about.append(f"remixed from “{escape(entry.remixed_from_title or entry.remixed_from)}”")
    buttons = [
        _button("Copy prompt", ACTION_COPY, entry.id, "primary"),
        _button("Remix", ACTION_REMIX, entry.id),
    ]
    if may_delete:
        buttons.append(_button("Delete", ACTION_DELETE, entry.id, "danger"))
    return [
        {
            "type": "section",
            "text": _text(
                f"*{escape(truncate(d.title, 150))}* · {escape(entry.target)} · "
                f"{escape(entry.persona)}\n{escape(truncate(d.prompt_text, PREVIEW_CHARS))}"
            ),
        },
        {"type": "context", "elements": [_text(" · ".join(about))]},
        {"type": "actions", "block_id": f"entry:{entry.id}", "elements": buttons},
    ]


def home_view(
    *,
    running: list[Session],
    entries: list[LibraryEntry],
    more: bool,
    state: HomeState,
    viewer: str,
    viewer_is_admin: bool,
    notice: str | None = None,
    workspace: Settings | None = None,
    team_personas: list[TeamPersona] | None = None,
) -> dict[str, Any]:
    """The Home tab for `viewer`, validated by slack_sdk's View model. `workspace`: the
    workspace's settings, shown (with an Edit button) to admins."""
    blocks: list[dict[str, Any]] = []
    if notice:
        blocks.append({"type": "context", "elements": [_text(escape(notice))]})
    blocks += _running_blocks(running)
    if viewer_is_admin and workspace is not None:
        blocks += _defaults_blocks(workspace)
    blocks += _personas_blocks(team_personas or [])
    blocks.append({"type": "divider"})
    title = f"Search: {as_text(truncate(state.query, 120))}" if state.query else "Team library"
    blocks.append({"type": "header", "text": _text(title, "plain_text")})
    top = [_button("Search the library", ACTION_SEARCH, "search")]
    if state.query:
        top.append(_button("Show everything", ACTION_CLEAR, "clear"))
    blocks.append({"type": "actions", "block_id": "library_top", "elements": top})
    if not entries:
        empty = (
            "Nothing matches that search (that you may see)."
            if state.query
            else "No locked prompts yet. When a session locks, its prompt appears here."
        )
        blocks.append({"type": "context", "elements": [_text(empty)]})
    for e in entries:
        blocks += _entry_blocks(e, may_delete=viewer_is_admin or e.user_id == viewer)
    pager = []
    if state.page > 0:
        pager.append(
            _button(
                "Newer", ACTION_PAGE, HomeState(page=state.page - 1, query=state.query).encode()
            )
        )
    if more:
        pager.append(
            _button(
                "Older", ACTION_PAGE, HomeState(page=state.page + 1, query=state.query).encode()
            )
        )
    if pager:
        blocks.append({"type": "actions", "block_id": "library_pages", "elements": pager})
    view = {
        "type": "home",
        "callback_id": "sora_home",
        "private_metadata": state.encode(),
        "blocks": blocks,
    }
    return validated(view)


def validated(view: dict[str, Any]) -> dict[str, Any]:
    """`view` if slack_sdk's own View model finds nothing wrong (ValueError otherwise)."""
    model = View(**view)
    model.validate_json()  # raises SlackObjectFormationError (a ValueError) when wrong
    if len(view.get("blocks", [])) > MAX_VIEW_BLOCKS:
        raise ValueError(f"a view takes at most {MAX_VIEW_BLOCKS} blocks")
    return view


def copy_modal(entry: LibraryEntry, *, extra_profiles_dir: str | None = None) -> dict[str, Any]:
    """The prompt in a copyable block, with its parameters and where to paste it."""
    d = entry.locked.draft
    target = targets(extra_profiles_dir).get(entry.target)
    lines: list[str] = []
    how = ""
    if target is not None:
        r = ready_prompt(d, target)
        lines = [f"*{escape(k)}*: {escape(v)}" for k, v in r.parameters]
        how = r.how_to_use
    else:
        lines = [f"*Duration*: {d.duration_seconds} s", f"*Size*: {escape(d.size)}"]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": _text(f"*{escape(truncate(d.title, 200))}* · {escape(entry.target)}"),
        },
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_preformatted",
                    "elements": [{"type": "text", "text": as_text(d.prompt_text, code=True)}],
                }
            ],
        },
        {"type": "section", "text": _text("\n".join(lines) or " ")},
    ]
    if how:
        blocks.append({"type": "context", "elements": [_text(escape(how))]})
    return validated(
        {
            "type": "modal",
            "title": _text("Copy prompt", "plain_text"),
            "close": _text("Done", "plain_text"),
            "blocks": blocks,
        }
    )


def search_modal(state: HomeState) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": SEARCH_INPUT,
        "max_length": QUERY_MAX_CHARS,
        "placeholder": _text("rain neon target:sora-2 by:@ada persona:director", "plain_text"),
    }
    if state.query:
        element["initial_value"] = as_text(state.query)
    return validated(
        {
            "type": "modal",
            "callback_id": SEARCH_CALLBACK,
            "title": _text("Search the library", "plain_text"),
            "submit": _text("Search", "plain_text"),
            "close": _text("Cancel", "plain_text"),
            "blocks": [
                {
                    "type": "input",
                    "block_id": SEARCH_INPUT,
                    "label": _text("Words, target:, persona:, by:", "plain_text"),
                    "element": element,
                    "hint": _text(
                        "Words in the caption, prompt or idea; target:<name>, "
                        "persona:<name> and by:@person narrow it.",
                        "plain_text",
                    ),
                }
            ],
        }
    )


def remix_modal(entry: LibraryEntry) -> dict[str, Any]:
    d = entry.locked.draft
    return validated(
        {
            "type": "modal",
            "callback_id": REMIX_CALLBACK,
            "private_metadata": entry.id,
            "title": _text("Remix", "plain_text"),
            "submit": _text("Start", "plain_text"),
            "close": _text("Cancel", "plain_text"),
            "blocks": [
                {
                    "type": "section",
                    "text": _text(
                        f"Start a new session from *{escape(truncate(d.title, 150))}*: "
                        "the Copilot begins with its prompt as draft v0."
                    ),
                },
                {
                    "type": "input",
                    "block_id": REMIX_CHANNEL,
                    "label": _text("Channel", "plain_text"),
                    "element": {
                        "type": "conversations_select",
                        "action_id": REMIX_CHANNEL,
                        "default_to_current_conversation": True,
                        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
                    },
                },
                {
                    "type": "input",
                    "block_id": REMIX_CHANGE,
                    "optional": True,
                    "label": _text("What to change", "plain_text"),
                    "element": {
                        "type": "plain_text_input",
                        "action_id": REMIX_CHANGE,
                        "max_length": 500,
                        "placeholder": _text("make it night, in the rain", "plain_text"),
                    },
                },
            ],
        }
    )


class HomeTab:
    """Builds and publishes a person's Home tab from the store and Slack's answers."""

    def __init__(self, state: State, *, access: Access | None = None) -> None:
        self.state = state
        self.access = access or Access()

    async def running(self, team: str | None, user: str) -> list[Session]:
        out = []
        for sid in await self.state.home.recent(team, user):
            s = await self.state.sessions.load(sid)
            if s is not None and s.status in (SessionStatus.RUNNING, SessionStatus.PAUSED):
                out.append(s)
        return out

    async def hidden(self, client: AsyncWebClient, team: str | None, user: str) -> list[str]:
        channels = await self.state.index.channels(team)
        return await self.access.hidden(client, team=team or NO_TEAM, user=user, channels=channels)

    async def view(
        self,
        client: AsyncWebClient,
        *,
        team: str | None,
        user: str,
        is_admin: bool,
        home: HomeState,
        notice: str | None = None,
        workspace: Settings | None = None,
    ) -> dict[str, Any]:
        hidden = await self.hidden(client, team, user)
        page = await self.state.index.search(
            team,
            query_terms(home.query),
            hidden=hidden,
            offset=home.page * LIBRARY_PAGE,
            limit=LIBRARY_PAGE,
        )
        return home_view(
            running=await self.running(team, user),
            entries=page.entries,
            more=page.more,
            state=home,
            viewer=user,
            viewer_is_admin=is_admin,
            notice=notice,
            workspace=workspace,
            team_personas=await self.state.personas.all(team),
        )

    async def publish(
        self,
        client: AsyncWebClient,
        *,
        team: str | None,
        user: str,
        is_admin: bool,
        home: HomeState | None = None,
        notice: str | None = None,
        workspace: Settings | None = None,
    ) -> None:
        view = await self.view(
            client,
            team=team,
            user=user,
            is_admin=is_admin,
            home=home or HomeState(),
            notice=notice,
            workspace=workspace,
        )
        await client.views_publish(user_id=user, view=view)


class HomeRefresher:
    """Refreshes a person's Home tab when a session of theirs changes, coalesced.

    The first change in a window claims it in Redis (shared by every worker) and
    publishes after the window, from the store as it is then; changes inside the window
    find it claimed and are shown by that publish. Best effort: a failure is logged,
    never raised into the step that asked.
    """

    def __init__(
        self,
        home: HomeTab,
        *,
        people: People,
        settings: Settings,
        window_ms: int = HOME_REFRESH_COALESCE_MS,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.home = home
        self.people = people
        self.settings = settings
        self.window_ms = window_ms
        self._sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()

    async def changed(self, client: AsyncWebClient, session: Session) -> None:
        user, team = session.origin.user_id, session.origin.team_id
        if session.origin.surface != "slack" or not user:
            return
        key = self.home.state.keys.home_refresh(team or NO_TEAM, user)
        try:
            if not await self.home.state.redis.set(key, "1", nx=True, px=self.window_ms):
                return  # a refresh is already due; it will show this change too
        except RedisError as e:
            log.info("Home of %s not refreshed: %s", user, e)
            return
        task = asyncio.create_task(self._publish_later(client, team, user))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait for the refreshes already due (tests, a draining worker)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _publish_later(self, client: AsyncWebClient, team: str | None, user: str) -> None:
        await self._sleep(self.window_ms / 1000)
        try:
            person = await self.people.get(user)
            workspace = None
            if person.is_admin:
                defaults = await self.home.state.defaults.get(team)
                workspace = defaults.applied_to(self.settings)
            await self.home.publish(
                client, team=team, user=user, is_admin=person.is_admin, workspace=workspace
            )
        except (SlackApiError, RedisError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.info("Home of %s not refreshed: %s", user, e)
