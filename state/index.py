"""Thread index: which session lives in a Slack thread (channel, thread_ts)."""

from __future__ import annotations

from redis.asyncio import Redis

from state._text import opt_text
from state.keys import LIVE_SESSION_TTL_S, NO_TEAM, Keys


class ThreadIndex:
    """`SessionStore.create` binds the session's origin thread itself, and a
    finishing save gives the binding the finished-session TTL; `bind` is for
    threads bound some other way."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int | None = LIVE_SESSION_TTL_S) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s

    async def bind(self, team_id: str | None, channel: str, thread_ts: str, sid: str) -> None:
        """1 round trip."""
        key = self._keys.thread(team_id or NO_TEAM, channel, thread_ts)
        await self._redis.set(key, sid, ex=self.ttl_s)

    async def lookup(self, team_id: str | None, channel: str, thread_ts: str) -> str | None:
        """The session in a thread of workspace `team_id` (the same channel id in another
        workspace is another channel). 1 round trip."""
        sid = await self._redis.get(self._keys.thread(team_id or NO_TEAM, channel, thread_ts))
        return opt_text(sid)
