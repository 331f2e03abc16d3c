"""Where OAuth installations live: an async installation store and OAuth state store on Redis.

slack_sdk ships no Redis installation store, and its File, S3 and SQLite stores
block the event loop inside their `async_*` methods
(slack_sdk/oauth/installation_store/{file,amazon_s3,sqlite3}); this one is
async end to end and implements `AsyncInstallationStore` as Bolt calls it
(slack_sdk/oauth/installation_store/async_installation_store.py).

Records are kept per workspace (team id), every key of one workspace under the
hash tag `{ws:<team id>}` (see `state.keys`), and every record is encrypted at
rest with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`): a dump of
Redis shows no token. The keys come from INSTALLATION_ENCRYPTION_KEYS, a
comma-separated list: the first encrypts, all of them decrypt (MultiFernet).
To rotate, put a new key first and keep the old one after it; each record is
re-encrypted under the new key the next time it is read, and
`reencrypt_all` (`sora-copilot installations reencrypt`) does all of them at
once, after which the old key can be dropped.

Enterprise Grid org-wide installs (no team id) are refused, never stored: the
app keys everything by workspace.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from redis.asyncio import Redis
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from state._text import text
from state.errors import StateError
from state.keys import OAUTH_STATE_TTL_S, TOKEN_REFRESH_LOCK_MS, Keys

log = logging.getLogger("sora.installations")


class OrgWideInstallRefused(StateError):
    """An Enterprise Grid org-wide install: this app is installed workspace by workspace."""


class UndecryptableInstallation(StateError):
    """A stored record that no key in INSTALLATION_ENCRYPTION_KEYS opens."""


def new_key() -> str:
    """A fresh Fernet key (what `sora-copilot installations new-key` prints)."""
    return Fernet.generate_key().decode()


class Cipher:
    """Fernet under a list of keys: the first encrypts, any decrypts."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("INSTALLATION_ENCRYPTION_KEYS is empty")
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError):
            raise ValueError(
                "INSTALLATION_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64 bytes), "
                "comma-separated; make one with `sora-copilot installations new-key`"
            ) from None
        self._primary = self._fernets[0]
        self._all = MultiFernet(self._fernets)

    @classmethod
    def from_setting(cls, value: str) -> Cipher:
        return cls([k for k in value.split(",") if k.strip()])

    def encrypt(self, text: str) -> str:
        return self._primary.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> tuple[str, bool]:
        """The plain text, and whether it was written under an older key (rewrite it)."""
        try:
            return self._primary.decrypt(token.encode()).decode(), False
        except InvalidToken:
            pass
        try:
            return self._all.decrypt(token.encode()).decode(), True
        except InvalidToken:
            raise UndecryptableInstallation(
                "a stored installation opens with none of INSTALLATION_ENCRYPTION_KEYS: "
                "keep the key it was written with in the list"
            ) from None


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    # slack_sdk's models take ISO 8601 strings back for their datetime fields.
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisInstallationStore(AsyncInstallationStore):
    """slack_sdk's async installation store, on Redis, encrypted, one workspace per hash tag."""

    def __init__(self, redis: Redis, keys: Keys, cipher: Cipher) -> None:
        self._redis = redis
        self._keys = keys
        self._cipher = cipher
        self._release = redis.register_script(_RELEASE)

    @property
    def logger(self) -> logging.Logger:
        return log

    # ---- records -----------------------------------------------------------------------

    def _seal(self, d: dict[str, Any]) -> str:
        return self._cipher.encrypt(json.dumps(_plain(d), separators=(",", ":")))

    async def _open(self, key: str) -> dict[str, Any] | None:
        token = await self._redis.get(key)
        if token is None:
            return None
        plain, stale = self._cipher.decrypt(text(token))
        record: dict[str, Any] = json.loads(plain)
        if stale:  # written under an older key: rewrite it under the current one
            await self._redis.set(key, self._cipher.encrypt(plain), xx=True, keepttl=True)
        return record

    @staticmethod
    def _team(team_id: str | None, is_enterprise_install: bool | None) -> str | None:
        if is_enterprise_install or not team_id:
            return None  # org-wide installs are never stored, so never found
        return team_id

    # ---- AsyncInstallationStore --------------------------------------------------------

    async def async_save(self, installation: Installation) -> None:
        team = installation.team_id
        if installation.is_enterprise_install or not team:
            raise OrgWideInstallRefused(
                "Enterprise Grid org-wide installs are not supported: install the app in each "
                "workspace that uses it."
            )
        k = self._keys
        async with self._redis.pipeline(transaction=True) as tx:
            tx.set(k.installation(team), self._seal(installation.to_dict_for_copying()))
            tx.set(
                k.installation_bot(team), self._seal(installation.to_bot().to_dict_for_copying())
            )
            if installation.user_id:
                user_key = k.installation_user(team, installation.user_id)
                tx.set(user_key, self._seal(installation.to_dict_for_copying()))
                tx.sadd(k.installation_users(team), installation.user_id)
            await tx.execute()
        await self._redis.sadd(k.installed_teams, team)  # another slot: its own command

    async def async_save_bot(self, bot: Bot) -> None:
        if bot.is_enterprise_install or not bot.team_id:
            raise OrgWideInstallRefused("Enterprise Grid org-wide installs are not supported.")
        await self._redis.set(
            self._keys.installation_bot(bot.team_id), self._seal(bot.to_dict_for_copying())
        )

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        team = self._team(team_id, is_enterprise_install)
        if team is None:
            return None
        record = await self._open(self._keys.installation_bot(team))
        return Bot(**record) if record is not None else None

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        team = self._team(team_id, is_enterprise_install)
        if team is None:
            return None
        key = (
            self._keys.installation_user(team, user_id)
            if user_id
            else self._keys.installation(team)
        )
        record = await self._open(key)
        if record is None:
            return None
        installation = Installation(**record)
        # The bot record holds the latest token (a refresh rewrites only it).
        bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team)
        if bot is not None:
            installation.bot_token = bot.bot_token
            installation.bot_refresh_token = bot.bot_refresh_token
            installation.bot_token_expires_at = bot.bot_token_expires_at
        return installation

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        if team_id:
            await self._redis.delete(self._keys.installation_bot(team_id))

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        if not team_id:
            return
        k = self._keys
        if user_id:
            async with self._redis.pipeline(transaction=True) as tx:
                tx.delete(k.installation_user(team_id, user_id))
                tx.srem(k.installation_users(team_id), user_id)
                await tx.execute()
            return
        users = await self._redis.smembers(k.installation_users(team_id))
        await self._redis.delete(
            k.installation(team_id),
            k.installation_users(team_id),
            *(k.installation_user(team_id, text(u)) for u in users),
        )

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Every record of the workspace: its bot, its installations, its refresh lock."""
        if not team_id:
            return
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)
        await self._redis.delete(
            self._keys.installation_bot(team_id), self._keys.token_refresh_lock(team_id)
        )
        await self._redis.srem(self._keys.installed_teams, team_id)

    # ---- beyond slack_sdk's interface --------------------------------------------------

    async def teams(self) -> list[str]:
        """Every installed team id, sorted."""
        return sorted(text(t) for t in await self._redis.smembers(self._keys.installed_teams))

    async def reencrypt_all(self) -> int:
        """Rewrite every record under the first key; the number of records rewritten."""
        count = 0
        for team in await self.teams():
            users = await self._redis.smembers(self._keys.installation_users(team))
            for key in (
                self._keys.installation(team),
                self._keys.installation_bot(team),
                *(self._keys.installation_user(team, text(u)) for u in users),
            ):
                token = await self._redis.get(key)
                if token is None:
                    continue
                plain, _ = self._cipher.decrypt(text(token))
                await self._redis.set(key, self._cipher.encrypt(plain), xx=True, keepttl=True)
                count += 1
        return count

    async def take_refresh_lock(self, team_id: str, owner: str) -> bool:
        """Become the one process refreshing `team_id`'s bot token, for TOKEN_REFRESH_LOCK_MS."""
        key = self._keys.token_refresh_lock(team_id)
        return bool(await self._redis.set(key, owner, nx=True, px=TOKEN_REFRESH_LOCK_MS))

    async def release_refresh_lock(self, team_id: str, owner: str) -> None:
        await self._release(keys=[self._keys.token_refresh_lock(team_id)], args=[owner])


class RedisOAuthStateStore(AsyncOAuthStateStore):
    """OAuth `state` values on Redis: issued by the install page, consumed once by the redirect.

    Shared by every web process (the redirect may reach another one than the
    install page did); slack_sdk's default FileOAuthStateStore keeps them on one
    machine's disk and blocks the loop.
    """

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int = OAUTH_STATE_TTL_S) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        await self._redis.set(self._keys.oauth_state(state), "1", ex=self._ttl_s)
        return state

    async def async_consume(self, state: str) -> bool:
        if not state or len(state) > 200:
            return False
        return bool(await self._redis.delete(self._keys.oauth_state(state)))
