"""Leases: which worker is working on a session right now.

A lease keeps two workers from running the same turn at once (wasting a model
call and racing to post). It is never the only guard: a worker that stalls past
its lease can still wake up and write, so `SessionStore.save` also checks the
turn (the fencing token) and refuses a stale write.

An owner id must be unique per worker and job attempt (e.g. f"{host}:{pid}:{job.id}").
"""

from __future__ import annotations

from redis.asyncio import Redis

from state._text import opt_text
from state.keys import LEASE_TTL_MS, Keys

# Re-entrant: the owner may acquire again (e.g. after a redelivery to itself).
ACQUIRE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_ms: int = LEASE_TTL_MS) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_ms = ttl_ms
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, sid: str, owner: str, ttl_ms: int | None = None) -> bool:
        """Take the lease if free (or already ours). 1 round trip.

        `SessionStore.snapshot(..., lease_owner=...)` does this and the read in one.
        """
        ok = await self._acquire(keys=[self._keys.lease(sid)], args=[owner, ttl_ms or self.ttl_ms])
        return bool(ok)

    async def renew(self, sid: str, owner: str, ttl_ms: int | None = None) -> bool:
        """Extend the lease only if `owner` still holds it. 1 round trip."""
        ok = await self._renew(keys=[self._keys.lease(sid)], args=[owner, ttl_ms or self.ttl_ms])
        return bool(ok)

    async def release(self, sid: str, owner: str) -> bool:
        """Drop the lease only if `owner` holds it. 1 round trip.

        `SessionStore.save(..., release_lease=owner)` does this in the same write.
        """
        ok = await self._release(keys=[self._keys.lease(sid)], args=[owner])
        return bool(ok)

    async def holder(self, sid: str) -> str | None:
        owner = await self._redis.get(self._keys.lease(sid))
        return opt_text(owner)
