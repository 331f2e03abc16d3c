"""Running sessions per Slack user, team and channel, for "at most N at once" caps.

Each is a sorted set of session ids scored by when the slot was reserved (ms).
`try_add` checks every cap and reserves in one Lua script, so two concurrent
/sora commands cannot both slip under a cap. A finishing `SessionStore.save`
frees the user and team slots in the same write; a channel's set is pruned of
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

from state.keys import LIVE_SESSION_TTL_S, RUNNING_GRACE_S, Keys

_PRUNE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(key, session_prefix, older_than)
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', older_than)
  for _, sid in ipairs(old) do
    if redis.call('EXISTS', session_prefix .. sid) == 0 then
      redis.call('ZREM', key, sid)
    end
  end
end
-- Members that take a slot: all but paused sessions (a reserved sid whose session
-- does not exist yet counts, within the grace period that prune applies).
local function active(key, session_prefix)
  local n = 0
  for _, sid in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if redis.call('HGET', session_prefix .. sid, 'status') ~= 'paused' then n = n + 1 end
  end
  return n
end
-- Also drops finished sessions: no save removes them from a channel's set.
local function prune_finished(key, session_prefix, older_than)
  prune(key, session_prefix, older_than)
  for _, sid in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local status = redis.call('HGET', session_prefix .. sid, 'status')
    if status == 'locked' or status == 'stopped' then redis.call('ZREM', key, sid) end
  end
end
"""

# KEYS: user set, team set, channel set. ARGV: sid, max_user, max_team (-1 = no cap),
# session key prefix, grace ms, has_user, has_team, ttl s, has_channel, max_channel.
# Returns 1 when reserved, else 0 - the number of the set at its cap (-1, -2, -3).
_TRY_ADD = (
    _PRUNE
    + """
local now = now_ms()
local sid, prefix = ARGV[1], ARGV[4]
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[10])}
local used = {ARGV[6] == '1', ARGV[7] == '1', ARGV[9] == '1'}
for i = 1, 3 do
  if used[i] then
    if i == 3 then
      prune_finished(KEYS[i], prefix, now - tonumber(ARGV[5]))
    else
      prune(KEYS[i], prefix, now - tonumber(ARGV[5]))
    end
    if limits[i] >= 0 and not redis.call('ZSCORE', KEYS[i], sid)
       and active(KEYS[i], prefix) >= limits[i] then
      return -i
    end
  end
end
for i = 1, 3 do
  if used[i] then
    redis.call('ZADD', KEYS[i], 'NX', now, sid)
    if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', KEYS[i], ARGV[8]) end
  end
end
return 1
"""
)

_COUNT = (
    _PRUNE
    + """
if ARGV[3] == '1' then
  prune_finished(KEYS[1], ARGV[1], now_ms() - tonumber(ARGV[2]))
else
  prune(KEYS[1], ARGV[1], now_ms() - tonumber(ARGV[2]))
end
return active(KEYS[1], ARGV[1])
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

    def _set_keys(self, user: str | None, team: str | None, channel: str | None) -> list[str]:
        return [
            self._keys.running_user(user or "-"),
            self._keys.running_team(team or "-"),
            self._keys.running_channel(channel or "-"),
        ]

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
        1 round trip. Idempotent for a sid already counted. `None` means no cap;
        a `None` user, team or channel is not counted at all.
        """
        code = await self._try_add(
            keys=self._set_keys(user, team, channel),
            args=[
                sid,
                -1 if max_user is None else max_user,
                -1 if max_team is None else max_team,
                self._keys.session(""),
                self._grace_ms,
                "1" if user else "0",
                "1" if team else "0",
                self._ttl_s,
                "1" if channel else "0",
                -1 if max_channel is None else max_channel,
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
        async with self._redis.pipeline(transaction=True) as pipe:
            if user:
                pipe.zrem(self._keys.running_user(user), sid)
            if team:
                pipe.zrem(self._keys.running_team(team), sid)
            if channel:
                pipe.zrem(self._keys.running_channel(channel), sid)
            await pipe.execute()

    async def count_user(self, user: str) -> int:
        return await self._count_key(self._keys.running_user(user))

    async def count_team(self, team: str) -> int:
        return await self._count_key(self._keys.running_team(team))

    async def count_channel(self, channel: str) -> int:
        return await self._count_key(self._keys.running_channel(channel), finished_too=True)

    async def _count_key(self, key: str, *, finished_too: bool = False) -> int:
        n = await self._count(
            keys=[key],
            args=[self._keys.session(""), self._grace_ms, "1" if finished_too else "0"],
        )
        return int(n)
