"""Running sessions per Slack user, team and channel, for "at most N at once" caps.

Each is a sorted set of session ids scored by when the slot was reserved (ms).
The sets are the workspace's (one hash tag, one slot). `try_add` checks every cap
and reserves in one Lua script, so two concurrent /sora commands cannot both slip
under a cap; what the members' sessions are (gone, paused, finished) is read just
before it, since each session lives in a slot of its own. A finishing save frees
the session's slots (`SessionStore.settle`); a channel's set is also pruned of
finished (locked or stopped) sessions whenever it is read. Slots whose session
no longer exists (it expired, or the web process died between `try_add` and
`create`) are pruned lazily once older than a grace period, so a crash never
leaks a slot for good. A paused session keeps its place in the sets but is not
counted while it is paused: nothing of it is running, so it takes no slot from a
new /sora (a set-aside job's session is paused, never left "running"). Retried,
it counts again; a Retry is never refused for a cap, so a retry may take a user
or team briefly past its cap.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from state._text import text
from state.keys import LIVE_SESSION_TTL_S, NO_TEAM, RUNNING_GRACE_S, Keys

# What the sets' members' sessions are, read before the script (each session lives in a
# slot of its own, so the script over the workspace's sets cannot read them itself):
# ARGV from `first` on is "<sid> <g|p|f>" per member that is gone (no session), paused
# or finished (locked or stopped). A member reserved since that read is in no list and
# counts, as it should.
_PRUNE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function known(first)
  local what = {}
  for i = first, #ARGV do
    local sid, kind = string.match(ARGV[i], '^(%S+) (%a)$')
    if sid then what[sid] = kind end
  end
  return what
end

-- Drop members with no session once older than the grace period (the web process died
-- between reserving and creating), and, with `finished_too`, finished sessions (no
-- save removes them from a channel's set). Returns the members that take a slot: all
-- but paused sessions.
local function prune_count(key, what, older_than, finished_too)
  local n = 0
  local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local sid, score = members[i], tonumber(members[i + 1])
    local kind = what[sid]
    if (kind == 'g' and score <= older_than) or (kind == 'f' and finished_too) then
      redis.call('ZREM', key, sid)
    elseif kind ~= 'p' then
      n = n + 1
    end
  end
  return n
end
"""

# KEYS: user set, team set, channel set. ARGV: sid, max_user, max_team (-1 = no cap),
# grace ms, has_user, has_team, ttl s, has_channel, max_channel, then the members'
# states from ARGV[10] (see _PRUNE).
# Returns 1 when reserved, else 0 - the number of the set at its cap (-1, -2, -3).
_TRY_ADD = (
    _PRUNE
    + """
local now = now_ms()
local sid = ARGV[1]
local what = known(10)
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[9])}
local used = {ARGV[5] == '1', ARGV[6] == '1', ARGV[8] == '1'}
for i = 1, 3 do
  if used[i] then
    local active = prune_count(KEYS[i], what, now - tonumber(ARGV[4]), i == 3)
    if limits[i] >= 0 and not redis.call('ZSCORE', KEYS[i], sid) and active >= limits[i] then
      return -i
    end
  end
end
for i = 1, 3 do
  if used[i] then
    redis.call('ZADD', KEYS[i], 'NX', now, sid)
    if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[i], ARGV[7]) end
  end
end
return 1
"""
)

# KEYS: the set. ARGV: grace ms, finished too ('1'), then the members' states.
_COUNT = (
    _PRUNE
    + """
return prune_count(KEYS[1], known(3), now_ms() - tonumber(ARGV[1]), ARGV[2] == '1')
"""
)


class Cap(StrEnum):
    """Which cap refused a reservation."""

    USER = "user"
    TEAM = "team"
    CHANNEL = "channel"


_CAPS = {-1: Cap.USER, -2: Cap.TEAM, -3: Cap.CHANNEL}


class RunningSessions:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        grace_s: int = RUNNING_GRACE_S,
        ttl_s: int | None = LIVE_SESSION_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._grace_ms = grace_s * 1000
        self._ttl_s = ttl_s or 0
        self._try_add = redis.register_script(_TRY_ADD)
        self._count = redis.register_script(_COUNT)

    def _set_keys(self, team: str | None, user: str | None, channel: str | None) -> list[str]:
        t = team or NO_TEAM
        return [
            self._keys.running_user(t, user or "-"),
            self._keys.running_team(t),
            self._keys.running_channel(t, channel or "-"),
        ]

    async def _states(self, sets: list[str]) -> list[str]:
        """ "<sid> <g|p|f>" for each member of `sets` whose session is gone, paused or
        finished. 2 round trips: the members (one slot), then their sessions' statuses
        (one pipeline; on a Redis Cluster each node gets its share)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in sets:
                pipe.zrange(key, 0, -1)
            found = await pipe.execute()
        sids = sorted({text(m) for members in found for m in members})
        if not sids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hget(self._keys.session(sid), "status")
            statuses = await pipe.execute()
        out = []
        for sid, raw in zip(sids, statuses, strict=True):
            status = None if raw is None else text(raw)
            kind = {None: "g", "paused": "p", "locked": "f", "stopped": "f"}.get(status)
            if kind:
                out.append(f"{sid} {kind}")
        return out

    async def try_add(self, sid: str, user: str | None, team: str | None, **caps: Any) -> bool:
        """`reserve` with the same caps (`max_user=`, `max_team=`, …); True when reserved."""
        return await self.reserve(sid, user, team, **caps) is None

    async def reserve(
        self,
        sid: str,
        user: str | None,
        team: str | None,
        *,
        max_user: int | None,
        max_team: int | None,
        channel: str | None = None,
        max_channel: int | None = None,
    ) -> Cap | None:
        """Reserve a slot unless the user, the team or the channel is at its cap.

        None when reserved, else the cap that refused (nothing is reserved then).
        3 round trips (the sets' members' sessions are read first: each lives in its
        own slot). Idempotent for a sid already counted. `None` means no cap;
        a `None` user, team or channel is not counted at all.
        """
        sets = self._set_keys(team, user, channel)
        used = [k for k, on in zip(sets, (user, team, channel), strict=True) if on]
        code = await self._try_add(
            keys=sets,
            args=[
                sid,
                -1 if max_user is None else max_user,
                -1 if max_team is None else max_team,
                self._grace_ms,
                "1" if user else "0",
                "1" if team else "0",
                self._ttl_s,
                "1" if channel else "0",
                -1 if max_channel is None else max_channel,
                *await self._states(used),
            ],
        )
        return None if int(code) == 1 else _CAPS[int(code)]

    async def add(self, sid: str, user: str | None, team: str | None) -> None:
        """Count a session without checking caps. 1 round trip."""
        await self.try_add(sid, user, team, max_user=None, max_team=None)

    async def remove(
        self, sid: str, user: str | None, team: str | None, channel: str | None = None
    ) -> None:
        """Free a slot (a finishing save does this itself). 1 round trip."""
        t = team or NO_TEAM
        async with self._redis.pipeline(transaction=True) as pipe:  # one slot
            if user:
                pipe.zrem(self._keys.running_user(t, user), sid)
            if team:
                pipe.zrem(self._keys.running_team(t), sid)
            if channel:
                pipe.zrem(self._keys.running_channel(t, channel), sid)
            await pipe.execute()

    async def count_user(self, user: str, team: str | None) -> int:
        return await self._count_key(self._keys.running_user(team or NO_TEAM, user))

    async def count_team(self, team: str) -> int:
        return await self._count_key(self._keys.running_team(team))

    async def count_channel(self, channel: str, team: str | None) -> int:
        key = self._keys.running_channel(team or NO_TEAM, channel)
        return await self._count_key(key, finished_too=True)

    async def _count_key(self, key: str, *, finished_too: bool = False) -> int:
        n = await self._count(
            keys=[key],
            args=[self._grace_ms, "1" if finished_too else "0", *await self._states([key])],
        )
        return int(n)
