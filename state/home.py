"""What a person's Home tab reads besides the library: the sessions they started.

The running-session sets (`state.running`) drop a paused session, and the live index
is every workspace's; so each person's newest sessions are kept in a short sorted set
of their workspace, and the Home tab loads those still running or paused.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bot.dialogue.models import Session
from state._text import text
from state.keys import HOME_SESSIONS_KEPT, NO_TEAM, Keys


class HomeSessions:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int | None) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def remember(self, session: Session) -> None:
        """File `session` under the person who started it. 1 round trip."""
        user = session.origin.user_id
        if not user:
            return
        key = self._keys.home_sessions(session.origin.team_id or NO_TEAM, user)
        score = int(session.created_at.timestamp() * 1000)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {session.id: score})
        pipe.zremrangebyrank(key, 0, -HOME_SESSIONS_KEPT - 1)
        if self._ttl_s:
            pipe.expire(key, self._ttl_s)
        await pipe.execute()

    async def recent(self, team_id: str | None, user_id: str) -> list[str]:
        """The ids of the person's newest sessions, newest first."""
        key = self._keys.home_sessions(team_id or NO_TEAM, user_id)
        return [text(s) for s in await self._redis.zrevrange(key, 0, HOME_SESSIONS_KEPT - 1)]

    async def forget(self, session: Session) -> None:
        """Drop an erased session from its starter's Home list. 1 round trip."""
        if session.origin.user_id:
            key = self._keys.home_sessions(
                session.origin.team_id or NO_TEAM, session.origin.user_id
            )
            await self._redis.zrem(key, session.id)


async def erase_team_home(redis: Redis, keys: Keys, team_id: str) -> int:
    """Delete a workspace's search index, Home lists, team personas and defaults (its
    uninstall). Returns how many keys went."""
    found = [keys.team_personas(team_id), keys.workspace_defaults(team_id)]
    for pattern in keys.team_home_patterns(team_id):
        found += [text(k) async for k in redis.scan_iter(match=pattern, count=1000)]
    return int(await redis.delete(*found)) if found else 0
