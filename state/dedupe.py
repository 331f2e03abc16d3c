"""Event dedupe: Slack delivers an event again when we answer late; act on it once."""

from __future__ import annotations

from redis.asyncio import Redis

from state.keys import EVENT_DEDUPE_TTL_S, NO_TEAM, Keys


class EventDedupe:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int = EVENT_DEDUPE_TTL_S) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s

    async def first_time(self, event_id: str, team_id: str | None = None) -> bool:
        """True the first time `event_id` is seen within the TTL (SET NX EX). 1 round trip.

        For interjections use `Inbox.push(..., event_id=...)`, which marks the
        event and queues the entry atomically.
        """
        key = self._keys.event(team_id or NO_TEAM, event_id)
        return bool(await self._redis.set(key, "1", nx=True, ex=self.ttl_s))
