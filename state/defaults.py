"""A workspace's own defaults, set by its admins on the Home tab.

The prompts channel, the default target and persona, and who may press a session's
controls. Each unset field falls back to the deployment's setting (environment), so
the environment stays the default of every workspace.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from bot.config import Settings
from state._text import text
from state.errors import UnknownSchema
from state.keys import NO_TEAM, Keys


class WorkspaceDefaults(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompts_channel: str | None = None
    default_target: str | None = None
    default_persona: str | None = None
    controls_allowed: Literal["starter_or_admin", "anyone"] | None = None

    def applied_to(self, settings: Settings) -> Settings:
        """`settings` with this workspace's choices in place of the deployment's."""
        chosen = self.model_dump(exclude_none=True)
        return settings.model_copy(update=chosen) if chosen else settings


class DefaultsStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, team_id: str | None) -> WorkspaceDefaults:
        raw = await self._redis.get(self._keys.workspace_defaults(team_id or NO_TEAM))
        if raw is None:
            return WorkspaceDefaults()
        try:
            return WorkspaceDefaults.model_validate_json(text(raw))
        except ValidationError as e:
            raise UnknownSchema(f"workspace defaults not understood by this build: {e}") from e

    async def save(self, team_id: str | None, defaults: WorkspaceDefaults) -> None:
        key = self._keys.workspace_defaults(team_id or NO_TEAM)
        await self._redis.set(key, defaults.model_dump_json())
