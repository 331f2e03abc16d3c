"""The prompt library: every locked prompt, kept for ever or as long as the operator chooses.

Each entry is one JSON string, indexed by creation time in three sorted sets
(all prompts, per channel, per user) so "recent prompts here" or "mine" is a
single range read. The entry id is the session id, so adding a session twice
overwrites rather than duplicates. With a TTL (LIBRARY_TTL_SECONDS) an entry's
JSON expires; its ids left in the indexes are dropped when a read meets them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from bot.dialogue.models import SCHEMA_VERSION, CleanModel, LockedPrompt, Session
from state._text import text
from state.errors import UnknownSchema
from state.keys import LIBRARY_DEFAULT_LIMIT, NO_TEAM, Keys

if TYPE_CHECKING:
    from state.search import LibraryIndex

KNOWN_LIBRARY_SCHEMAS = frozenset({SCHEMA_VERSION})


class RenderProvenance(CleanModel):
    """Where a clip of the prompt came from: renderer, model, tier, seconds, cost, the
    vendor's job id, and where it was posted."""

    model_config = ConfigDict(frozen=True)

    render_id: str
    renderer: str
    model: str
    tier: str
    seconds: int
    cost_usd: float | None
    vendor_job_id: str
    file_id: str | None = None
    rendered_at: datetime


class LibraryEntry(CleanModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    id: str
    session_id: str
    channel_id: str | None = None
    thread_ts: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    # Where it was made (see Origin.place): anything but "public" is listed only there.
    place: str | None = None
    persona: str  # display name
    target: str
    locked: LockedPrompt
    idea: str
    created_at: datetime
    team_id: str | None = None
    persona_key: str | None = None  # the persona's name in `persona: <name>`
    # The library entry this prompt was remixed from (its id), when it was.
    remixed_from: str | None = None
    remixed_from_title: str | None = None
    renders: list[RenderProvenance] = Field(default_factory=list)

    @classmethod
    def from_session(cls, session: Session) -> LibraryEntry:
        """The library entry of a locked session (id = session id)."""
        if session.locked is None:
            raise ValueError(f"session {session.id} has no locked prompt")
        return cls(
            id=session.id,
            session_id=session.id,
            channel_id=session.origin.channel_id,
            thread_ts=session.origin.thread_ts,
            user_id=session.origin.user_id,
            user_name=session.origin.user_name,
            place=session.origin.place,
            persona=session.persona.display_name,
            target=session.target.name,
            locked=session.locked,
            idea=session.idea,
            created_at=session.locked.locked_at,
            team_id=session.origin.team_id,
            persona_key=session.persona.name,
            remixed_from=session.remixed_from,
            remixed_from_title=session.source_draft.title if session.source_draft else None,
        )


# KEYS: prompt, all, channel, user. ARGV: id, json, score, has_channel, has_user, ttl s
# (0: for ever).
_ADD = """
local new = redis.call('EXISTS', KEYS[1]) == 0
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[6])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
if ARGV[5] == '1' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
if new then return 1 end
return 0
"""

# KEYS: index to walk (newest first), index to filter by. ARGV: limit, whether to
# filter, prompt key prefix. Walks in pages so a filter that matches rarely still
# finds `limit` entries without reading the whole index at once.
_RECENT = """
local limit = tonumber(ARGV[1])
local out = {}
local start = 0
local page = math.max(limit * 2, 20)
local gone = {}
while #out < limit do
  local ids = redis.call('ZREVRANGE', KEYS[1], start, start + page - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if ARGV[2] == '0' or redis.call('ZSCORE', KEYS[2], id) then
      local json = redis.call('GET', ARGV[3] .. id)
      if json then
        out[#out + 1] = json
        if #out >= limit then break end
      else
        gone[#gone + 1] = id
      end
    end
  end
  start = start + page
end
-- Expired or deleted entries: dropped from the walked index (the others drop them
-- when they are walked).
for _, id in ipairs(gone) do redis.call('ZREM', KEYS[1], id) end
return out
"""

# KEYS: prompt, all, channel, user. ARGV: id. Returns 1 if the entry existed.
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
for i = 2, 4 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return existed
"""


def parse_entry(raw: str) -> LibraryEntry:
    try:
        entry = LibraryEntry.model_validate_json(raw)
    except ValidationError as e:
        raise UnknownSchema(f"a library entry is not understood by this build: {e}") from e
    if entry.schema_version not in KNOWN_LIBRARY_SCHEMAS:
        raise UnknownSchema(
            f"library entry {entry.id} has schema_version {entry.schema_version}; "
            f"this build reads {sorted(KNOWN_LIBRARY_SCHEMAS)}"
        )
    return entry


class PromptLibrary:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int = 0) -> None:
        """`ttl_s`: how long an entry is kept after it is added (0: for ever)."""
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s
        self._add = redis.register_script(_ADD)
        self._recent = redis.register_script(_RECENT)
        self._delete = redis.register_script(_DELETE)
        # The workspace's search index (state.search), kept beside the library when set.
        self.index: LibraryIndex | None = None

    def _entry_keys(
        self, team: str | None, pid: str, channel: str | None, user: str | None
    ) -> list[str]:
        # One workspace's library shares its hash tag: each script touches one slot, and
        # the same channel or user id in two workspaces is two indexes.
        t = team or NO_TEAM
        return [
            self._keys.library_prompt(t, pid),
            self._keys.library_all(t),
            self._keys.library_channel(t, channel or "-"),
            self._keys.library_user(t, user or "-"),
        ]

    async def add(self, entry: LibraryEntry) -> bool:
        """Store (or overwrite) an entry; True if it was new. 1 round trip."""
        score = int(entry.created_at.timestamp() * 1000)
        new = await self._add(
            keys=self._entry_keys(entry.team_id, entry.id, entry.channel_id, entry.user_id),
            args=[
                entry.id,
                entry.model_dump_json(),
                score,
                "1" if entry.channel_id else "0",
                "1" if entry.user_id else "0",
                self.ttl_s,
            ],
        )
        if self.index is not None:
            await self.index.add(entry)
        return bool(new)

    async def add_render(self, pid: str, render: RenderProvenance, *, team: str | None) -> bool:
        """Record a clip's provenance on the entry `pid` of workspace `team` (once per
        render id); False when the entry is gone. A read and a write: renders of one prompt
        finish far apart."""
        entry = await self.get(pid, team=team)
        if entry is None:
            return False
        if any(r.render_id == render.render_id for r in entry.renders):
            return True
        await self.add(entry.model_copy(update={"renders": [*entry.renders, render]}))
        return True

    async def delete(
        self, pid: str, *, channel: str | None, user: str | None, team: str | None = None
    ) -> bool:
        """Remove an entry of workspace `team` (None: of no workspace) and its ids from
        every index, the workspace's search index too; True if it existed. 1 round trip,
        3 or 4 with the search index."""
        existed = await self._delete(keys=self._entry_keys(team, pid, channel, user), args=[pid])
        if self.index is not None:
            await self.index.delete(pid, team_id=team)
        return bool(int(existed))

    async def get(self, pid: str, *, team: str | None) -> LibraryEntry | None:
        """The entry `pid` of workspace `team` (None: of no workspace). 1 round trip."""
        raw = await self._redis.get(self._keys.library_prompt(team or NO_TEAM, pid))
        return None if raw is None else parse_entry(text(raw))

    async def recent(
        self,
        *,
        team: str | None,
        channel: str | None = None,
        user: str | None = None,
        limit: int = LIBRARY_DEFAULT_LIMIT,
    ) -> list[LibraryEntry]:
        """Workspace `team`'s entries, newest first; with both `channel` and `user`, that
        user's prompts in that channel. 1 round trip."""
        if limit <= 0:
            return []
        k, t = self._keys, team or NO_TEAM
        if channel is not None:
            walk = k.library_channel(t, channel)
            only = k.library_user(t, user) if user is not None else walk
        elif user is not None:
            walk, only = k.library_user(t, user), k.library_user(t, user)
        else:
            walk, only = k.library_all(t), k.library_all(t)
        rows = await self._recent(
            keys=[walk, only],
            args=[
                limit,
                "1" if channel is not None and user is not None else "0",
                k.library_prompt(t, ""),
            ],
        )
        return [parse_entry(text(r)) for r in rows]
