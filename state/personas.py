"""A workspace's own personas: a name and a description, saved by `/sora persona save`.

Stored per workspace (a hash under the workspace's hash tag), so another workspace
never sees them. Used by name (`persona: <name>`), a team persona is the free-text
persona its description makes: its sheet is written before the session's first turn,
as for any free-text persona (`bot.dialogue.sheets`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from bot.dialogue.models import utcnow
from state._text import text
from state.errors import UnknownSchema
from state.keys import NO_TEAM, Keys


class TeamPersona(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    author_id: str
    author_name: str = ""
    updated_at: datetime = Field(default_factory=utcnow)


def _parse(raw: str) -> TeamPersona:
    try:
        return TeamPersona.model_validate_json(raw)
    except ValidationError as e:
        raise UnknownSchema(f"a team persona is not understood by this build: {e}") from e


class TeamPersonas:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def _key(self, team_id: str | None) -> str:
        return self._keys.team_personas(team_id or NO_TEAM)

    async def get(self, team_id: str | None, name: str) -> TeamPersona | None:
        raw = await self._redis.hget(self._key(team_id), name)
        return None if raw is None else _parse(text(raw))

    async def all(self, team_id: str | None) -> list[TeamPersona]:
        """The workspace's personas by name."""
        raw = await self._redis.hgetall(self._key(team_id))
        return sorted((_parse(text(v)) for v in raw.values()), key=lambda p: p.name)

    async def save(self, team_id: str | None, persona: TeamPersona) -> None:
        await self._redis.hset(self._key(team_id), persona.name, persona.model_dump_json())

    async def delete(self, team_id: str | None, name: str) -> bool:
        return bool(await self._redis.hdel(self._key(team_id), name))
