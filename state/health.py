"""Is this Redis set up so that it keeps the app's data? Checked once at start.

Sessions, their jobs and the prompt library live only in Redis. A `maxmemory-policy`
that evicts (`allkeys-*` deletes any key; `volatile-*` deletes keys with a TTL, and
every session has one) deletes a running session's hash or a locked prompt's library
entry without a word when memory runs short. With `noeviction`, Redis refuses writes
instead, and the app says "Redis is full" (see `state.errors.describe`).

Managed services often hide `CONFIG` (redis.io/docs/latest/operate/rc/databases/
configuration/data-eviction-policies: the policy is a plan setting there), so an
operator may downgrade the refusal to a warning (`REDIS_EVICTION_CHECK=warn`).
"""

from __future__ import annotations

from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from state.errors import StateMisconfigured

SAFE_POLICY = "noeviction"
EvictionCheck = Literal["refuse", "warn"]

FIX = (
    f"set `maxmemory-policy {SAFE_POLICY}` (redis.conf, or `CONFIG SET maxmemory-policy "
    f"{SAFE_POLICY}`; on a managed Redis, the plan's eviction setting)"
)


async def eviction_policy(redis: Redis) -> str | None:
    """The server's maxmemory-policy, or None when it will not say (CONFIG is disabled
    or renamed, or the user lacks the permission)."""
    try:
        reply = await redis.config_get("maxmemory-policy")
    except RedisError:
        return None
    value = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    return str(value) if value else None


async def check_eviction(redis: Redis, *, mode: EvictionCheck = "refuse") -> str | None:
    """Refuse (raise `StateMisconfigured`) a Redis that may evict the app's keys.

    Returns a one-line warning to print instead when `mode` is "warn" and the policy
    is unsafe or cannot be read, else None. A policy that cannot be read is refused
    in "refuse" mode too: nothing says the data is safe.
    """
    policy = await eviction_policy(redis)
    if policy == SAFE_POLICY:
        return None
    if policy is None:
        problem = (
            "Redis does not let this app read its maxmemory-policy (CONFIG GET is "
            "disabled, as on many managed plans), so nothing shows it keeps sessions "
            "under memory pressure"
        )
        hint = "; if the plan's policy is noeviction, set REDIS_EVICTION_CHECK=warn"
    else:
        problem = (
            f"Redis's maxmemory-policy is {policy}: under memory pressure it deletes "
            "sessions and locked prompts without a word"
        )
        hint = ", or REDIS_EVICTION_CHECK=warn to run anyway"
    if mode == "warn":
        return f"Warning: {problem}; {FIX}."
    raise StateMisconfigured(f"{problem}. Fix: {FIX}{hint}.")
