"""Which token speaks for which workspace: one bot token, or one per OAuth installation.

`OneWorkspace` is the single-token mode (SLACK_BOT_TOKEN): one client for
everything. `Workspaces` is the OAuth mode: each workspace's bot token comes
from the installation store, and each workspace gets its own client (cached,
all on one connection pool). A workspace with no installation raises
`NotInstalled`: nothing is ever sent to Slack for it with another one's token.

Token rotation (the app's `token_rotation_enabled`): a rotating bot token
lasts 12 hours, and refreshing it revokes the refresh token used
(docs.slack.dev/authentication/using-token-rotation), so two processes that
refresh at once would leave one of them, and then the workspace, with a dead
refresh token. One process refreshes at a time, under a lock in Redis; the
others wait for its result and read the new token from the store.

`WorkspaceSurface` shows each session through its own workspace's client:
the worker's surface in OAuth mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from redis.asyncio import Redis
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Session, Speaker
from bot.slack.client import RATE_LIMIT_RETRIES, close_client, make_client
from bot.slack.steps import STEPS
from bot.surfaces.base import Step, Surface
from state.installations import Cipher, RedisInstallationStore
from state.keys import Keys

log = logging.getLogger("sora.workspaces")

# How long a process trusts a bot token it read without asking Redis again. An
# uninstall is seen by the other processes within this long (until then their
# calls fail with token_revoked, and change nothing).
BOT_CACHE_S = 10.0
REFRESH_POLL_S = 0.2
REFRESH_WAIT_S = 20.0  # longer than the lock (TOKEN_REFRESH_LOCK_MS): a dead holder's lapses


class NotInstalled(Exception):
    """The app has no installation (or no usable token) for this workspace."""

    def __init__(self, team_id: str | None, why: str = "is not installed") -> None:
        super().__init__(f"The app {why} in workspace {team_id or '(none)'}.")
        self.team_id = team_id


class Clients(Protocol):
    """A Slack client for a workspace."""

    async def for_team(self, team_id: str | None) -> AsyncWebClient:
        """The client speaking for `team_id`; raises NotInstalled."""
        ...

    def forget(self, team_id: str) -> None:
        """Drop what this process cached for `team_id` (its app was uninstalled)."""
        ...

    async def uninstall(self, team_id: str) -> bool:
        """Delete the workspace's installation (tokens included); whether there was one."""
        ...

    async def aclose(self) -> None: ...


class OneWorkspace:
    """Single-token mode: the same client (SLACK_BOT_TOKEN) for every workspace."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def for_team(self, team_id: str | None) -> AsyncWebClient:
        return self.client

    def forget(self, team_id: str) -> None:
        pass

    async def uninstall(self, team_id: str) -> bool:
        return False  # the one token is in the environment: nothing stored to delete

    async def aclose(self) -> None:
        await close_client(self.client)


class Workspaces:
    """OAuth mode: each workspace's client, with its bot token from the installation store."""

    def __init__(
        self,
        *,
        store: RedisInstallationStore,
        settings: Settings,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache_s: float = BOT_CACHE_S,
    ) -> None:
        if not settings.slack_client_id or settings.slack_client_secret is None:
            raise ValueError("OAuth mode needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        self.store = store
        self.settings = settings
        self._retries = rate_limit_retries
        self._clock = clock
        self._sleep = sleep
        self._cache_s = cache_s
        self._minutes = settings.slack_token_refresh_minutes
        # The token-less client: oauth.v2.access (install, refresh) through SLACK_API_URL.
        self.base = make_client(settings, token="", rate_limit_retries=rate_limit_retries)
        self._rotator = AsyncTokenRotator(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret.get_secret_value(),
            client=self.base,
        )
        self._bots: dict[str, tuple[Bot, float]] = {}
        self._clients: dict[str, AsyncWebClient] = {}

    # ---- tokens ----------------------------------------------------------------------

    def _expiring(self, bot: Bot) -> bool:
        expires = bot.bot_token_expires_at
        return (
            bot.bot_refresh_token is not None
            and expires is not None
            and expires <= self._clock() + self._minutes * 60
        )

    async def _find(self, team_id: str) -> Bot:
        bot = await self.store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None or not bot.bot_token:
            self.forget(team_id)
            raise NotInstalled(team_id)
        return bot

    async def bot(self, team_id: str | None) -> Bot:
        """The workspace's bot, its token refreshed first if it expires soon."""
        if not team_id:
            raise NotInstalled(team_id)
        cached = self._bots.get(team_id)
        now = self._clock()
        if cached is not None and now - cached[1] < self._cache_s and not self._expiring(cached[0]):
            return cached[0]
        bot = await self._find(team_id)
        if self._expiring(bot):
            bot = await self._refresh(team_id)
        self._bots[team_id] = (bot, now)
        return bot

    async def _refresh(self, team_id: str) -> Bot:
        """Refresh the bot token, one process at a time; the others read its result."""
        owner = uuid.uuid4().hex
        deadline = self._clock() + REFRESH_WAIT_S
        while True:
            if await self.store.take_refresh_lock(team_id, owner):
                try:
                    bot = await self._find(team_id)  # someone may have refreshed it meanwhile
                    if not self._expiring(bot):
                        return bot
                    refreshed = await self._rotator.perform_bot_token_rotation(
                        bot=bot, minutes_before_expiration=self._minutes
                    )
                    if refreshed is None:
                        return bot
                    await self.store.async_save_bot(refreshed)
                    log.info(json.dumps({"event": "token_refreshed", "team": team_id}))
                    return refreshed
                except SlackTokenRotationError as e:
                    error = e.api_error.response.get("error")
                    log.error("team %s: refreshing its bot token failed (%s)", team_id, error)
                    raise NotInstalled(team_id, f"could not refresh its token ({error})") from None
                finally:
                    await self.store.release_refresh_lock(team_id, owner)
            await self._sleep(REFRESH_POLL_S)
            bot = await self._find(team_id)
            if not self._expiring(bot):
                return bot
            if self._clock() >= deadline:
                expires = bot.bot_token_expires_at or 0
                if expires > self._clock():
                    return bot  # still valid: use it, and refresh on a later call
                raise NotInstalled(team_id, "could not refresh its token (timed out)")

    # ---- clients ---------------------------------------------------------------------

    async def for_team(self, team_id: str | None) -> AsyncWebClient:
        bot = await self.bot(team_id)
        assert team_id is not None and bot.bot_token is not None  # bot() checked both
        client = self._clients.get(team_id)
        if client is None or client.token != bot.bot_token:
            client = make_client(
                self.settings,
                token=bot.bot_token,
                session=self.base.session,
                rate_limit_retries=self._retries,
            )
            self._clients[team_id] = client
        return client

    def forget(self, team_id: str) -> None:
        self._bots.pop(team_id, None)
        self._clients.pop(team_id, None)

    async def uninstall(self, team_id: str) -> bool:
        self.forget(team_id)
        had = await self.store.async_find_bot(enterprise_id=None, team_id=team_id) is not None
        await self.store.async_delete_all(enterprise_id=None, team_id=team_id)
        return had

    async def aclose(self) -> None:
        await close_client(self.base)  # every workspace's client shares its session


class SurfaceFactory(Protocol):
    def __call__(self, client: AsyncWebClient, team_id: str) -> Surface: ...


class WorkspaceSurface:
    """A surface that shows each session through its own workspace's Slack surface.

    One Slack surface per workspace and token (made by `make`, cached): a
    refreshed token gets a new one. A session whose workspace has no
    installation raises NotInstalled, and nothing is posted.
    """

    def __init__(self, *, clients: Clients, make: SurfaceFactory) -> None:
        self.clients = clients
        self._make = make
        self._surfaces: dict[str, tuple[AsyncWebClient, Surface]] = {}
        self.steps: Mapping[str, Step] = {name: self._route(name) for name in STEPS}

    async def _for(self, session: Session) -> Surface:
        return await self.for_team(session.origin.team_id)

    async def for_team(self, team: str | None) -> Surface:
        """The surface of workspace `team` (its renders are shown through it too)."""
        client = await self.clients.for_team(team)
        assert team is not None
        cached = self._surfaces.get(team)
        if cached is None or cached[0] is not client:
            cached = (client, self._make(client, team))
            self._surfaces[team] = cached
        return cached[1]

    def forget(self, team_id: str) -> None:
        self._surfaces.pop(team_id, None)
        self.clients.forget(team_id)

    async def admit(self, session: Session) -> str | None:
        """Why a worker must not run `session` (its workspace has no installation), or None."""
        try:
            await self.clients.for_team(session.origin.team_id)
        except NotInstalled as e:
            return f"no installation: {e}"
        return None

    async def turn_started(
        self,
        session: Session,
        *,
        speaker: Speaker,
        author: str,
        turn: int,
        round: int,
        posted: Mapping[int, str],
        redo: bool = False,
    ) -> TurnSink:
        surface = await self._for(session)
        return await surface.turn_started(
            session,
            speaker=speaker,
            author=author,
            turn=turn,
            round=round,
            posted=posted,
            redo=redo,
        )

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        await (await self._for(session)).model_waiting(session, seconds, reason, status)

    def _route(self, name: str) -> Step:
        """Step `name`, run by the session's own workspace's surface."""

        async def run(session: Session, arg: str) -> None:
            try:
                surface = await self._for(session)
            except NotInstalled as e:
                # Uninstalled while its steps were due: nothing can be shown there any
                # more, and the uninstall erases the session.
                log.warning("session %s: step %s not shown: %s", session.id, name, e)
                return
            step = surface.steps.get(name)
            if step is not None:
                await step(session, arg)

        return run


def open_workspaces(
    settings: Settings, redis: Redis, keys: Keys, *, rate_limit_retries: int = RATE_LIMIT_RETRIES
) -> Workspaces:
    """OAuth mode's workspaces over the installation store; ValueError, in one line, for a
    missing or malformed INSTALLATION_ENCRYPTION_KEYS."""
    raw = settings.installation_encryption_keys
    if raw is None or not raw.get_secret_value().strip():
        raise ValueError(
            "OAuth mode (SLACK_CLIENT_ID) needs INSTALLATION_ENCRYPTION_KEYS to encrypt the "
            "workspaces' tokens: make one with `sora-copilot installations new-key`"
        )
    store = RedisInstallationStore(redis, keys, Cipher.from_setting(raw.get_secret_value()))
    return Workspaces(store=store, settings=settings, rate_limit_retries=rate_limit_retries)
