"""The per-channel post rate limiter, shared by every process of the app.

Slack allows about one post per second per channel for the whole app, so the
bucket lives in Redis and is refilled with Redis's own clock (`TIME` inside
the script): workers on different machines share one bucket and one clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from state.keys import NO_TEAM, POST_BURST, POST_RATE_PER_S, Keys

Sleep = Callable[[float], Awaitable[object]]

# Token bucket. State: tokens (float) and the refill time (µs). Returns 0 when a
# token was taken, else the µs until one is available (taking nothing). Numbers
# leave Lua as integers, hence µs. The key expires once the bucket would be full
# again anyway, so idle channels cost nothing.
_REFILL = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local st = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(st[1]), tonumber(st[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
"""

_ACQUIRE = (
    _REFILL
    + """
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens),
           'ts', string.format('%.0f', now))
-- Until the bucket is full again (longer while a Retry-After holds it below 0).
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return wait
"""
)


# Hold the bucket empty for ARGV[3] µs from now (a 429's Retry-After): the
# tokens drop to where the next one is that far away, unless already lower.
_HOLD = (
    _REFILL
    + """
local hold_us = tonumber(ARGV[3])
local floor = 1 - hold_us * rate / 1000000
if tokens > floor then tokens = floor end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens),
           'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(hold_us / 1000 + burst / rate * 1000) + 1000)
return 1
"""
)


class PostRateLimiter:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        rate_per_s: float = POST_RATE_PER_S,
        burst: int = POST_BURST,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self._keys = keys
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._sleep = sleep
        self._acquire = redis.register_script(_ACQUIRE)
        self._hold = redis.register_script(_HOLD)

    def _key(self, channel: str, team: str | None) -> str:
        # `team`: whose channel (the same id in two workspaces is two channels); a
        # single-token deployment names its one workspace (bot.slack.poster.WORKSPACE).
        return self._keys.ratelimit(team or NO_TEAM, channel)

    async def hold(self, channel: str, seconds: float, *, team: str | None = None) -> None:
        """Slack said to wait `seconds` before posting in `channel` (a 429's
        Retry-After): every process's next token there is that far away. 1 round trip.
        """
        await self._hold(
            keys=[self._key(channel, team)],
            args=[repr(self.rate_per_s), self.burst, int(max(seconds, 0.0) * 1_000_000)],
        )

    async def acquire(self, channel: str, *, team: str | None = None) -> float:
        """0.0 if a post token was taken, else the seconds to wait (nothing taken).

        1 round trip.
        """
        wait_us = await self._acquire(
            keys=[self._key(channel, team)], args=[repr(self.rate_per_s), self.burst]
        )
        return int(wait_us) / 1_000_000

    async def wait(self, channel: str, *, team: str | None = None) -> float:
        """Wait until a token is taken; returns the seconds spent waiting.

        1 round trip when a token is free, one more per wait.
        """
        waited = 0.0
        while (delay := await self.acquire(channel, team=team)) > 0:
            await self._sleep(delay)
            waited += delay
        return waited
