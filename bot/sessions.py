"""Starting and steering sessions: the service every Slack handler calls.

Handlers translate a Slack payload into one call here and show the outcome;
this module decides. It validates what a person asked for, enforces the
running-session caps and who may press Stop, Lock and Retry, posts a session's
thread root and creates the session with its first turn job, and hands human
replies and button presses to the session's inbox. After creating a session
the web process never writes it again: the worker applies inbox entries.

Every refusal is one clear sentence for the person who asked (`BadInput` for
input that can be fixed, `Refused` for a request the app declines or could not
carry out), raised after changing nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from redis.exceptions import RedisError

from bot import metrics
from bot.config import MAX_IDEA_CHARS, MAX_INTERJECTION_CHARS, MAX_ROUNDS, MIN_ROUNDS, Settings
from bot.dialogue.models import Origin, Persona, Session, SessionStatus
from bot.dialogue.profiles import ProfileError, personas, resolve_persona, resolve_target
from bot.slack.client import SlackClient
from bot.slack.errors import SlackRefusal, SlackUnreachable
from bot.slack.lost import DELETED_LINE, LOST_LINE, retire_if_live, retire_root, update_spender
from bot.slack.people import People, Person
from bot.slack.poster import WORKSPACE
from bot.slack.privacy import Places
from bot.slack.roots import Roots, refusal_message
from bot.slack.workspaces import Clients, NotInstalled
from state import InboxEntry, LibraryEntry, PushResult, State, describe, is_full
from state.defaults import WorkspaceDefaults
from state.personas import TeamPersona
from state.running import Cap
from state.workspace import erase_workspace

if TYPE_CHECKING:
    from bot.slack.render_desk import RenderDesk

log = logging.getLogger("sora.sessions")

CommandKind = Literal[
    "start", "modal", "help", "personas", "library", "delete", "persona_save", "persona_delete"
]
ControlKind = Literal["stop", "lock", "retry"]
Field = Literal["idea", "persona", "rounds", "target"]

_OPTION_FIELDS: dict[str, Field] = {"persona": "persona", "rounds": "rounds", "target": "target"}
SUBCOMMANDS: dict[str, CommandKind] = {
    "help": "help",
    "personas": "personas",
    "library": "library",
}
LIBRARY_LIMIT = 5
DEFAULTS_TTL_S = 30.0  # how stale a process's copy of a workspace's defaults may be
NOT_OURS_MAX = 10_000
EYES = "eyes"

_SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A team persona's name: one lowercase word (hyphens allowed), as `persona: <name>` takes.
TEAM_PERSONA_NAME_RE = re.compile(r"[a-z][a-z0-9-]{1,31}")
_PERSONA_USAGE = (
    "Save a team persona with `/sora persona save <name>: <description>` (the name one "
    "lowercase word, e.g. `/sora persona save critic: a harsh festival film critic`), or "
    "delete one with `/sora persona delete <name>`."
)
# An option starts at a word boundary ("persona:" inside "xpersona:" is idea text).
_OPTION_RE = re.compile(r"(?:(?<=\s)|^)(persona|rounds|target)\s*:", re.IGNORECASE)


class BadInput(Exception):
    """Input the person can fix; the message is one clear sentence, `field` names the input."""

    def __init__(self, message: str, *, field: Field | None = None) -> None:
        super().__init__(message)
        self.field = field


class Refused(Exception):
    """A request the app declines or could not carry out; nothing was changed.

    The message is one clear sentence for the person who asked.
    """


class Gone(Refused):
    """The session asked about no longer exists (expired, deleted, or lost by Redis)."""


GONE = (
    "This session no longer exists (it expired, was deleted, or its state was lost); "
    "start again with `/sora <idea>`."
)


# ---- validation (the terminal's `run` uses these too) ----------------------------------


def validate_idea(idea: str) -> str:
    idea = idea.strip()
    if not idea:
        raise BadInput(
            "The idea is empty: describe the video you want, e.g. "
            '"a lighthouse keeper finds a message in a bottle".',
            field="idea",
        )
    if len(idea) > MAX_IDEA_CHARS:
        raise BadInput(
            f"The idea is {len(idea)} characters; the limit is {MAX_IDEA_CHARS}.", field="idea"
        )
    if not re.search(r"[^\W\d_]{3}", idea):
        # "!!!" or "x" is no idea: nothing in it could become a subject, a place or an action.
        raise BadInput(
            "The idea needs words: describe the video in a sentence, e.g. "
            '"a lighthouse keeper finds a message in a bottle".',
            field="idea",
        )
    return idea


def validate_rounds(rounds: int) -> int:
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise BadInput(
            f"Rounds must be between {MIN_ROUNDS} and {MAX_ROUNDS}, not {rounds}.", field="rounds"
        )
    return rounds


def parse_rounds(text: str) -> int:
    """Rounds as typed (`"4"`), validated."""
    try:
        rounds = int(text.strip())
    except ValueError:
        raise BadInput(
            f"Rounds must be a whole number between {MIN_ROUNDS} and {MAX_ROUNDS}, "
            f"not {text.strip()!r}.",
            field="rounds",
        ) from None
    return validate_rounds(rounds)


def new_session(
    idea: str, *, persona: str, target: str, rounds: int, settings: Settings
) -> Session:
    """Validate user input and build a session; BadInput says what is wrong."""
    idea = validate_idea(idea)
    try:
        chosen = resolve_persona(persona, settings.extra_profiles_dir)
    except ProfileError as e:
        raise BadInput(str(e), field="persona") from e
    try:
        profile = resolve_target(target, settings.extra_profiles_dir)
    except ProfileError as e:
        raise BadInput(str(e), field="target") from e
    return Session(idea=idea, persona=chosen, target=profile, max_rounds=validate_rounds(rounds))


# ---- what someone asked for -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommandRequest:
    """What `/sora …` (or the new-session modal) asks for, as typed.

    Options not given are None and take the configured defaults; `rounds` stays
    text until validated so that "rounds: four" gets a clear answer.
    """

    kind: CommandKind
    idea: str = ""  # for "delete": the session id
    persona: str | None = None
    rounds: str | None = None
    target: str | None = None


def parse_command_text(text: str) -> CommandRequest:
    """Read `/sora` text: a subcommand, nothing (the modal), or an idea with options.

    `persona: …`, `rounds: N` and `target: NAME` may appear anywhere. `rounds`
    and `target` take one word; `persona` takes everything up to the next
    option or the end (a free-text persona has spaces). Text outside the
    options is the idea. Raises BadInput for an option given twice.
    """
    stripped = text.strip()
    if not stripped:
        return CommandRequest(kind="modal")
    if stripped.lower() in SUBCOMMANDS:
        return CommandRequest(kind=SUBCOMMANDS[stripped.lower()])
    word, _, rest = stripped.partition(" ")
    if word.lower() == "persona":
        return _persona_command(rest.strip())
    if word.lower() == "delete":
        sid = rest.strip()
        if not _SESSION_ID_RE.fullmatch(sid):
            raise BadInput(
                "Say which session to delete: `/sora delete <session id>` (the id is in the "
                "report's name, sora-session-<id>.md, and on the Delete button's session)."
            )
        return CommandRequest(kind="delete", idea=sid)
    matches = list(_OPTION_RE.finditer(stripped))
    idea_parts = [stripped[: matches[0].start()] if matches else stripped]
    options: dict[str, str] = {}
    for i, match in enumerate(matches):
        name = match.group(1).lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(stripped)
        value = stripped[match.end() : end].strip()
        if name in options:
            raise BadInput(f"`{name}:` is given twice; give it once.", field=_OPTION_FIELDS[name])
        if name != "persona":
            # One word; whatever follows it belongs to the idea again.
            word, _, rest = value.partition(" ")
            value = word
            idea_parts.append(rest)
        options[name] = value
    idea = " ".join(part.strip() for part in idea_parts if part.strip())
    return CommandRequest(
        kind="start",
        idea=idea,
        persona=options.get("persona"),
        rounds=options.get("rounds"),
        target=options.get("target"),
    )


def _persona_command(text: str) -> CommandRequest:
    """`persona save <name>: <description>` or `persona delete <name>`."""
    verb, _, rest = text.partition(" ")
    if verb.lower() == "delete":
        name = rest.strip().lower()
        if not TEAM_PERSONA_NAME_RE.fullmatch(name):
            raise BadInput(_PERSONA_USAGE)
        return CommandRequest(kind="persona_delete", persona=name)
    if verb.lower() == "save":
        name, colon, description = rest.partition(":")
        name = name.strip().lower()
        if not colon or not TEAM_PERSONA_NAME_RE.fullmatch(name) or not description.strip():
            raise BadInput(_PERSONA_USAGE)
        return CommandRequest(kind="persona_save", persona=name, idea=" ".join(description.split()))
    raise BadInput(_PERSONA_USAGE)


def field_errors(request: CommandRequest, settings: Settings) -> dict[Field, str]:
    """Every invalid input of `request`, by field (empty when all are valid)."""
    errors: dict[Field, str] = {}
    try:
        validate_idea(request.idea)
    except BadInput as e:
        errors["idea"] = str(e)
    try:
        resolve_persona(_persona_spec(request, settings), settings.extra_profiles_dir)
    except ProfileError as e:
        errors["persona"] = str(e)
    if request.rounds is not None:
        try:
            parse_rounds(request.rounds)
        except BadInput as e:
            errors["rounds"] = str(e)
    try:
        resolve_target(request.target or settings.default_target, settings.extra_profiles_dir)
    except ProfileError as e:
        errors["target"] = str(e)
    return errors


def _persona_spec(request: CommandRequest, settings: Settings) -> str:
    return request.persona if request.persona is not None else settings.default_persona


def session_for(request: CommandRequest, settings: Settings) -> Session:
    """The session `request` asks for, defaults applied; BadInput names the first problem."""
    if request.kind != "start":
        raise ValueError(f"a {request.kind!r} request starts no session")
    rounds = parse_rounds(request.rounds) if request.rounds is not None else settings.default_rounds
    return new_session(
        request.idea,
        persona=_persona_spec(request, settings),
        target=request.target or settings.default_target,
        rounds=rounds,
        settings=settings,
    )


# ---- the service ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Invoker:
    """Who asked, and where: the channel a session starts in and its starter."""

    channel_id: str
    user_id: str
    team_id: str | None = None
    user_name: str | None = None  # a fallback when users.info cannot name them


_STORE_DOWN = "The session store did not answer, so nothing was started; try again in a minute."


def store_failed(e: Exception) -> str:
    """What to tell a person whose request the store failed: a full Redis says so (it
    answered: it is out of memory, and waiting a minute will not help)."""
    if is_full(e):
        return f"{describe(e)}. Nothing was started; tell whoever runs this app."
    return _STORE_DOWN


_CONTROL_DONE: dict[ControlKind, str] = {
    "stop": "Stop requested: the session stops before its next turn.",
    "lock": "Lock requested: the latest draft is locked before the next turn.",
    "retry": "Retrying: the failed turn runs again.",
}


class Sessions:
    """The operations behind /sora, thread replies and the root's buttons."""

    def __init__(
        self,
        *,
        state: State,
        settings: Settings,
        slack: Roots,
    ) -> None:
        self.state = state
        self.settings = settings
        # Slack's calls; in OAuth mode each workspace's own client (and its own people:
        # ids are per workspace).
        self.slack = slack
        self.people = slack.people
        self.clients: Clients | None = slack.clients
        self._defaults: dict[str, tuple[float, WorkspaceDefaults]] = {}
        self.places = Places()
        self._not_ours: set[str] = set()  # threads that are no lost session's

    @functools.cached_property
    def renders(self) -> RenderDesk:
        """Render from Slack: the offer with its cost, then the confirmed submission."""
        from bot.slack.render_desk import RenderDesk

        return RenderDesk(self)

    async def _client(self, team_id: str | None) -> SlackClient:
        """The client speaking for `team_id` (raises NotInstalled in OAuth mode)."""
        return await self.slack.client_of(team_id)

    def _spender(self, team_id: str | None) -> Callable[[], Awaitable[float]]:
        """Waits for a call of `team_id`'s chat.update budget (`bot.slack.lost`)."""
        return update_spender(self.state, self.settings, team_id, oauth=self.clients is not None)

    async def retire(
        self, channel: str, root: str, team_id: str | None = None, line: str = LOST_LINE
    ) -> None:
        """Take the buttons off the app's thread root at `root` and add `line` (one
        chat.update, within the workspace's budget)."""
        await retire_root(
            await self._client(team_id), channel, root, line, spend=self._spender(team_id)
        )

    async def _people_of(self, team_id: str | None) -> People:
        return await self.slack.people_of(team_id)

    async def person(self, team_id: str | None, user_id: str) -> Person:
        """A workspace member: their display name and whether they are an admin."""
        return await (await self._people_of(team_id)).get(user_id)

    # -- start ---------------------------------------------------------------------------

    def build(self, request: CommandRequest) -> Session:
        """The validated session `request` asks for (BadInput otherwise). No I/O."""
        return session_for(request, self.settings)

    # -- team personas ------------------------------------------------------------------

    async def save_team_persona(
        self, *, team_id: str | None, user_id: str, name: str, description: str
    ) -> str:
        """Save (or, for its author or an admin, replace) a workspace persona; the answer."""
        if name in {p.name for p in self.personas()}:
            raise Refused(f"`{name}` is a shipped persona; choose another name.")
        try:
            made = resolve_persona(description, self.settings.extra_profiles_dir)
        except ProfileError as e:
            raise Refused(f"That description does not make a persona: {e}") from e
        if made.name != "custom":
            raise Refused("Describe the persona in a few words, not with another persona's name.")
        existing = await self.state.personas.get(team_id, name)
        person = await self.person(team_id, user_id)
        if existing is not None and existing.author_id != user_id and not person.is_admin:
            raise Refused(
                f"`{name}` was saved by someone else; only they or a workspace admin can change it."
            )
        await self.state.personas.save(
            team_id,
            TeamPersona(  # an edit keeps its author: they may still change or delete it
                name=name,
                description=description,
                author_id=existing.author_id if existing else user_id,
                author_name=existing.author_name if existing else person.name,
            ),
        )
        verb = "updated" if existing is not None else "saved"
        await self._audit_settings(team_id, person, f"team persona {name} {verb}")
        return (
            f"Team persona `{name}` {verb}. Use it with `/sora <idea> persona: {name}`; its "
            "sheet is written from the description when a session starts."
        )

    async def _audit_settings(self, team_id: str | None, person: Person, detail: str) -> None:
        await self.state.audit.record(
            team_id, "settings", actor=person.id, actor_name=person.name, detail=detail
        )

    async def delete_team_persona(self, *, team_id: str | None, user_id: str, name: str) -> str:
        existing = await self.state.personas.get(team_id, name)
        if existing is None:
            raise Refused(f"This workspace has no team persona `{name}`.")
        person = await self.person(team_id, user_id)
        if existing.author_id != user_id and not person.is_admin:
            raise Refused(
                f"Only the person who saved `{name}`, or a workspace admin, can delete it."
            )
        await self.state.personas.delete(team_id, name)
        await self._audit_settings(team_id, person, f"team persona {name} deleted")
        return f"Team persona `{name}` deleted."

    async def team_personas(self, team_id: str | None) -> list[TeamPersona]:
        return await self.state.personas.all(team_id)

    async def build_for_team(self, request: CommandRequest, team_id: str | None) -> Session:
        """`build` with the workspace's defaults, `persona: <name>` also naming one of the
        workspace's own personas (its description then makes a free-text persona).
        BadInput otherwise."""
        settings = await self.settings_for(team_id)
        try:
            return session_for(request, settings)
        except BadInput as e:
            name = (request.persona or "").strip().lower()
            if e.field != "persona" or not TEAM_PERSONA_NAME_RE.fullmatch(name):
                raise
            team_persona = await self.state.personas.get(team_id, name)
            if team_persona is None:
                raise
        return session_for(replace(request, persona=team_persona.description), settings)

    async def settings_for(self, team_id: str | None) -> Settings:
        """The deployment's settings with the workspace's defaults applied (read from the
        store at most every DEFAULTS_TTL_S per process)."""
        now = time.monotonic()
        hit = self._defaults.get(team_id or "")
        if hit is None or hit[0] <= now:
            defaults = await self.state.defaults.get(team_id)
            hit = self._defaults[team_id or ""] = (now + DEFAULTS_TTL_S, defaults)
        return hit[1].applied_to(self.settings)

    async def save_defaults(
        self, team_id: str | None, user_id: str, defaults: WorkspaceDefaults
    ) -> str:
        """An admin sets the workspace's defaults (Refused for anyone else)."""
        if not (await self.person(team_id, user_id)).is_admin:
            raise Refused("Only a workspace admin can change the workspace's defaults.")
        settings = self.settings
        if defaults.default_target is not None:
            try:
                resolve_target(defaults.default_target, settings.extra_profiles_dir)
            except ProfileError as e:
                raise Refused(str(e)) from e
        if defaults.default_persona is not None:
            known = {p.name for p in self.personas()}
            if defaults.default_persona not in known and (
                await self.state.personas.get(team_id, defaults.default_persona) is None
            ):
                raise Refused(f"Unknown persona {defaults.default_persona!r}.")
        await self.state.defaults.save(team_id, defaults)
        self._defaults.pop(team_id or "", None)
        await self._audit_settings(
            team_id,
            await self.person(team_id, user_id),
            "defaults " + defaults.model_dump_json(exclude_none=True),
        )
        return "Workspace defaults saved."

    def build_remix(self, entry: LibraryEntry, change: str) -> Session:
        """A new session that starts from `entry`'s locked prompt (draft v0, the source),
        with its persona and target where they still exist; the idea is the change asked
        for. BadInput when the change is not a valid idea."""
        s = self.settings
        persona = entry.persona_key
        if persona not in {p.name for p in self.personas()}:
            persona = None  # a free-text persona is not kept in the library: the default
        try:
            target: str | None = resolve_target(entry.target, s.extra_profiles_dir).name
        except ProfileError:
            target = None
        idea = " ".join(change.split()) or f"Remix of “{entry.locked.draft.title}”"
        session = self.build(
            CommandRequest(kind="start", idea=idea, persona=persona, target=target)
        )
        return session.model_copy(
            update={"remixed_from": entry.id, "source_draft": entry.locked.draft}
        )

    def personas(self) -> list[Persona]:
        return list(personas(self.settings.extra_profiles_dir).values())

    async def start_session(self, session: Session, *, invoker: Invoker) -> Session:
        """Reserve a running slot, post the thread root, create the session with turn 0 queued.

        `reserve`, then `post_root` after the channel's post token. Raises
        Refused (changing nothing) at a running cap, or when Slack or Redis
        fails. Returns the stored session.
        """
        await self.reserve(session, invoker=invoker)
        return await self.post_root(session, invoker=invoker, paced=False)

    async def reserve(self, session: Session, *, invoker: Invoker) -> None:
        """Take `session`'s running slots (user, team, channel), or raise Refused. 1 round trip.

        Quick, and independent of the channel's post rate: Slack's handlers call
        it before queueing the root behind the channel's other roots, so a
        refusal comes at once and nothing waits for a root that will not be posted.
        """
        s = self.settings
        try:
            cap = await self.state.running.reserve(
                session.id,
                invoker.user_id,
                invoker.team_id,
                max_user=s.max_running_per_user,
                max_team=s.max_running_per_team,
                channel=invoker.channel_id,
                max_channel=s.max_running_per_channel,
            )
        except RedisError as e:
            metrics.redis_error("reserve")
            log.error("session %s: the store failed before starting: %s", session.id, describe(e))
            raise Refused(store_failed(e)) from e
        if cap is not None:
            raise Refused(_cap_message(cap, s))

    async def wait_to_post(self, channel: str, team_id: str | None = None) -> None:
        """Wait for the channel's post token (Slack: about one post a second per channel,
        for the whole app; the bucket is in Redis, shared by every process). The bucket is
        the workspace's, named as the workers' posters name it (WORKSPACE with one token)."""
        scope = team_id if self.clients is not None else WORKSPACE
        await self.state.ratelimit.wait(channel, team=scope)

    async def post_root(self, session: Session, *, invoker: Invoker, paced: bool) -> Session:
        """Post the reserved session's thread root and create it with turn 0 queued.

        With `paced`, the caller has already taken the channel's post token
        (`wait_to_post`). Raises Refused when Slack or Redis fails; the slot is
        then freed and the root deleted, so nothing is left half-made.
        """
        channel, root_ts, created = invoker.channel_id, None, False
        try:
            # The root names the starter as <@id>. The name stored here is the one
            # the command carried (their handle); the worker replaces it with their
            # display name (users.info) at the lock, the first place a name is shown,
            # so starting a session costs one Slack call, not two.
            session.origin = Origin(
                surface="slack",
                channel_id=invoker.channel_id,
                user_id=invoker.user_id,
                user_name=invoker.user_name or invoker.user_id,
                team_id=invoker.team_id,
            )
            client = await self._client(invoker.team_id)
            session.origin = session.origin.model_copy(
                update={"place": await self.places.place(client, invoker.channel_id)}
            )
            if not paced:
                await self.wait_to_post(invoker.channel_id, invoker.team_id)
            channel, root_ts = await self.slack.post(session, invoker.channel_id, invoker.team_id)
            session.origin = session.origin.model_copy(
                update={"channel_id": channel, "thread_ts": root_ts}
            )
            await self.state.sessions.create(session, enqueue=True)
            created = True
            await self._remember_for_home(session)
        except SlackRefusal as e:
            raise Refused(refusal_message(e.error)) from e
        except NotInstalled as e:
            raise Refused(f"{e} Ask a workspace admin to install it again.") from e
        except RedisError as e:
            metrics.redis_error("start")
            log.error("session %s: the store failed while starting: %s", session.id, describe(e))
            raise Refused(store_failed(e)) from e
        except (SlackUnreachable, OSError, TimeoutError) as e:
            log.warning("session %s: Slack did not answer: %s", session.id, e)
            raise Refused(
                "Slack did not answer, so nothing was started; try again in a minute."
            ) from e
        finally:
            if not created:
                await self._undo_start(session, invoker, channel, root_ts)
        metrics.session_started("slack")
        await self.state.audit.record(
            invoker.team_id,
            "start",
            session=session.id,
            actor=invoker.user_id,
            actor_name=invoker.user_name or "",
            detail=f"in {channel}, target {session.target.name}, "
            f"{session.max_rounds} rounds at most",
        )
        return session

    async def _remember_for_home(self, session: Session) -> None:
        """File the new session under its starter's Home tab; a failure costs only that."""
        try:
            await self.state.home.remember(session)
        except RedisError as e:
            log.warning("session %s: not filed for its starter's Home: %s", session.id, describe(e))

    async def _undo_start(
        self, session: Session, invoker: Invoker, channel: str, root_ts: str | None
    ) -> None:
        try:
            await self.state.running.remove(
                session.id, invoker.user_id, invoker.team_id, invoker.channel_id
            )
        except (RedisError, OSError):
            # `RunningSessions` prunes a slot whose session never appeared after its grace period.
            log.warning("session %s: could not free its running slot now", session.id)
        if root_ts is not None:
            await self.slack.delete(channel, root_ts, invoker.team_id)

    # -- humans in the thread -----------------------------------------------------------

    async def interject(
        self,
        *,
        channel_id: str,
        thread_ts: str,
        user_id: str,
        text: str,
        source_id: str,
        event_id: str | None,
        team_id: str | None = None,
    ) -> PushResult | None:
        """Queue a human reply in a session's thread for the next speaker; 👀 when queued.

        None when the thread is no session's. Raises Refused for a reply that
        is too long or finds the inbox full (the author should know it was not
        heard); a finished session's replies are ignored quietly, since people
        often discuss a locked prompt in its thread. Deduplicated by `event_id`.
        """
        sid = await self.state.threads.lookup(team_id, channel_id, thread_ts)
        if sid is None:
            return None
        if len(text) > MAX_INTERJECTION_CHARS:
            if event_id is not None and not await self.state.dedupe.first_time(event_id, team_id):
                return PushResult.DUPLICATE
            raise Refused(
                f"Your reply is {len(text):,} characters; the agents read replies of at most "
                f"{MAX_INTERJECTION_CHARS:,}. Shorten it and post it again."
            )
        person = await (await self._people_of(team_id)).get(user_id)
        entry = InboxEntry(
            kind="interjection", author=person.name, user_id=user_id, text=text, source_id=source_id
        )
        result = await self.state.inbox.push(sid, entry, event_id=event_id)
        if result == PushResult.QUEUED:
            # Who spoke, not what: the text stays in the session, which expires.
            await self.state.audit.record(
                team_id, "interject", session=sid, actor=user_id, actor_name=person.name
            )
            await self.slack.react(channel_id, source_id, EYES, team_id)
        elif result == PushResult.FULL:
            raise Refused(
                "This session has too many unread replies; yours was not queued. "
                "Post it again after the next turn."
            )
        return result

    async def control(
        self, kind: ControlKind, *, session_id: str, user_id: str, version: int | None = None
    ) -> str:
        """Stop, lock a draft, or retry a paused session; returns a confirmation.

        A lock takes the draft `version` the person saw on the button they pressed
        (None: the latest, for buttons that carry none).

        Checks who may (settings.controls_allowed) and whether the session's
        state allows it, then queues the command and a job for the session's
        next turn, which wakes a paused or idle session. Raises Refused,
        changing nothing, otherwise.
        """
        session = await self.state.sessions.load(session_id)
        if session is None:
            raise Gone(GONE)
        person = await (await self._people_of(session.origin.team_id)).get(user_id)
        settings = await self.settings_for(session.origin.team_id)
        if (
            settings.controls_allowed == "starter_or_admin"
            and session.origin.user_id != user_id
            and not person.is_admin
        ):
            raise Refused(
                f"Only the person who started this session, or a workspace admin, can {kind} it."
            )
        if session.finished:
            raise Refused(f"This session is already {session.status.value}.")
        if kind == "lock" and session.latest_draft is None:
            raise Refused("There is no draft to lock yet.")
        if (
            kind == "lock"
            and version is not None
            and version not in {d.version for d in session.drafts}
        ):
            raise Refused(f"There is no draft v{version} to lock.")
        if kind == "retry" and session.status != SessionStatus.PAUSED:
            raise Refused(f"The session is {session.status.value}, not paused: nothing to retry.")
        entry = InboxEntry(
            kind=kind,
            author=person.name,
            user_id=user_id,
            version=version if kind == "lock" else None,
        )
        result = await self.state.inbox.push(session_id, entry)
        if result == PushResult.FINISHED:
            raise Refused("This session has just finished.")
        if result == PushResult.NO_SESSION:
            raise Gone(GONE)
        if result == PushResult.FULL:
            raise Refused("This session has too many unread commands; try again after its turn.")
        await self.state.queue.enqueue(session_id, session.next_turn, session.origin.team_id)
        await self.state.audit.record(
            session.origin.team_id,
            kind,
            session=session_id,
            actor=user_id,
            actor_name=person.name,
            detail=f"v{version}" if kind == "lock" and version is not None else "",
        )
        if kind == "lock" and version is not None:
            return f"Lock requested: draft v{version} is locked before the next turn."
        return _CONTROL_DONE[kind]

    # -- the workspace ------------------------------------------------------------------

    async def uninstall(self, team_id: str | None, *, why: str) -> None:
        """The app was uninstalled from `team_id` (or its bot token revoked): delete its
        installation and everything kept for it (sessions, running ones included, which
        stops them; library entries; caps; budgets), with one log line of counts.

        An erased running session is stopped: its worker's fenced save finds nothing,
        and its queued job is acked as moot.
        """
        if not team_id:
            return
        had = await self.clients.uninstall(team_id) if self.clients is not None else False
        erased = await erase_workspace(self.state, team_id)
        log.info(
            json.dumps(
                {
                    "event": "uninstalled",
                    "why": why,
                    "team": team_id,
                    "installation_deleted": had,
                    "sessions_deleted": erased.sessions,
                    "library_entries_deleted": erased.library_entries,
                    "keys_deleted": erased.keys,
                }
            )
        )

    # -- deletion -------------------------------------------------------------------------

    async def delete(self, *, session_id: str, user_id: str, team_id: str | None = None) -> str:
        """Delete a session and its library entry for good: every key of it in Redis.

        Only its starter or a workspace admin may. Its thread root loses its buttons and
        says it was deleted; the messages in Slack are Slack's, and stay. Raises Refused
        (changing nothing) otherwise.
        """
        session = await self.state.sessions.load(session_id)
        if session is not None and team_id is not None and session.origin.team_id != team_id:
            session = None  # another workspace's: not one this person can name
        entry = await self.state.library.get(session_id, team=team_id) if session is None else None
        if session is None and entry is None:
            raise Refused(f"There is no session {session_id}: it expired or was deleted.")
        starter = session.origin.user_id if session is not None else entry and entry.user_id
        person = await (await self._people_of(team_id)).get(user_id)
        if starter != user_id and not person.is_admin:
            raise Refused(
                "Only the person who started this session, or a workspace admin, can delete it."
            )
        if session is not None:
            await self.state.eraser.erase(session)
            channel, root = session.origin.channel_id, session.origin.thread_ts
        else:
            assert entry is not None
            await self.state.library.delete(
                entry.id, channel=entry.channel_id, user=entry.user_id, team=entry.team_id
            )
            channel, root = entry.channel_id, entry.thread_ts
        log.info("session %s deleted by %s", session_id, user_id)
        await self.state.audit.record(
            team_id, "delete", session=session_id, actor=user_id, actor_name=person.name
        )
        if channel and root:
            await self.retire(channel, root, team_id, DELETED_LINE)
        return (
            f"Deleted session {session_id}: its transcript, its prompt in the library and "
            "every other record of it in the app's store. Its messages in Slack stay; "
            "delete them in Slack if they should go too."
        )

    async def lost_thread(
        self, channel_id: str, thread_ts: str, team_id: str | None = None
    ) -> bool:
        """A reply in a thread no session owns: True if it is one of this app's threads
        whose session was lost while running (its root is retired now). A thread found
        not to be one is remembered, so its replies cost no more Slack calls."""
        key = f"{channel_id}:{thread_ts}"
        if key in self._not_ours:
            return False
        client = await self._client(team_id)
        if await retire_if_live(client, channel_id, thread_ts, spend=self._spender(team_id)):
            return True
        if len(self._not_ours) >= NOT_OURS_MAX:
            self._not_ours.clear()
        self._not_ours.add(key)
        return False

    # -- the library --------------------------------------------------------------------

    async def recent_prompts(
        self, channel_id: str, *, team_id: str | None = None, limit: int = LIBRARY_LIMIT
    ) -> list[LibraryEntry]:
        """The newest locked prompts made in a channel of workspace `team_id`, newest
        first: a prompt is listed only where it was made, so one from a private place is
        never shown outside it."""
        entries = await self.state.library.recent(team=team_id, channel=channel_id, limit=limit)
        return [e for e in entries if e.channel_id == channel_id]


def _cap_message(cap: Cap, s: Settings) -> str:
    if cap == Cap.USER:
        return (
            f"You already have {s.max_running_per_user} sessions running, the most one "
            "person may have at once: stop one or wait for one to finish."
        )
    if cap == Cap.CHANNEL:
        return (
            f"This channel already has {s.max_running_per_channel} sessions running, the most "
            "at once in one channel: wait for one to finish, or start yours in another channel."
        )
    return (
        f"This workspace already has {s.max_running_per_team} sessions running, the most "
        "at once: wait for one to finish."
    )


__all__ = [
    "BadInput",
    "CommandRequest",
    "ControlKind",
    "Gone",
    "Invoker",
    "Refused",
    "Sessions",
    "field_errors",
    "new_session",
    "parse_command_text",
    "parse_rounds",
    "session_for",
    "validate_idea",
    "validate_rounds",
]
