"""The workspace's chat.update budget, shared by every process of the app.

Slack rates `chat.update` at Tier 3: about 50 calls a minute per method, per
app, per workspace (api.slack.com/apis/rate-limits), whatever the number of
workers. So the budget lives in Redis: a sliding window of the calls made in
the last minute (Redis's own clock, `TIME` inside the scripts, and a margin
for the time a request takes to reach Slack), so that no 60-second window ever
holds more than `per_minute` calls, not even at a burst's start.

Three kinds of call draw from it:

- Interim updates (a turn's text while it is written) are best effort: `take`
  never waits, and they may use only the budget's first `per_minute - reserve`
  calls of any window, so the last `reserve` stay free for what must land.
- What must land and may wait (the root's final status): `wait_for` waits for
  a free call of the whole budget, and while it waits no interim update takes
  one, on any worker: what must land goes first.
- What must land but has another way (a turn's final render over its
  placeholder, which can also be posted as a new message): `take_now` takes a
  call of the whole budget if one is free and nothing waits, and never waits.

A turn decides at its start whether to stream (`start_streaming`): only while
the window has room for every turn streaming now to finish over its
placeholder, this one too, and a few interim updates besides. Otherwise it is
written quietly and posted when it is saved, which costs no chat.update at all.

`streaming` counts the turns being written at once across the workspace, so
each can stretch the interval of its interim updates (`interval`) and the
whole workspace stays inside the budget however many turns stream.

`RootWindows` coalesces a running session's root updates: at most one every few
seconds, whichever worker runs its turns.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from state.keys import Keys

Sleep = Callable[[float], Awaitable[object]]

# Slack counts its minute when a request arrives, and a request arrives a little after
# its call was taken here (more so on a busy machine): the window is longer than a
# minute by that margin, so late arrivals never crowd one of Slack's minutes.
WINDOW_US = 62_000_000
DEFAULT_PER_MINUTE = 40  # under Tier 3's ~50, for other apps' nothing and Slack's "50+"
MIN_INTERVAL_S = 1.0  # a message is updated at most once a second, however idle the budget

# KEYS: window, must-land waiting flag. ARGV: member, limit, '1' for a must-land call,
# window µs, '1' for a call that waits: it raises the flag while it does, and while the
# flag is up only such calls take one.
# Returns 0 when a call was taken, else the µs until the oldest call in the window
# leaves it (taking nothing). While a must-land call waits (the flag is set), interim
# calls take nothing: what must land goes first, on every worker.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
local must = ARGV[3] == '1'
local waits = ARGV[5] == '1'
if (waits or redis.call('EXISTS', KEYS[2]) == 0)
   and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) / 1000) + 1000)
  if waits then redis.call('DEL', KEYS[2]) end
  return 0
end
local wait = 1000000
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then wait = tonumber(oldest[2]) + tonumber(ARGV[4]) - now end
if wait < 1 then wait = 1 end
if waits then redis.call('SET', KEYS[2], '1', 'PX', math.ceil(wait / 1000) + 1000) end
return wait
"""

# KEYS: window, must-land waiting flag, streaming set. ARGV: member, claim µs, interim
# limit, spare interim calls, window µs. Returns 1 when the turn may stream (and counts it
# among the streams), else 0.
_START_STREAMING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[5]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local used = redis.call('ZCARD', KEYS[1])
local streams = redis.call('ZCARD', KEYS[3])
if used + streams + 1 + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
return 1
"""

# KEYS: streaming set. ARGV: member ('' to count only), claim µs (0: drop the member).
# Returns how many turns stream now.
_STREAMING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then
  if tonumber(ARGV[2]) > 0 then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
  else
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
end
return redis.call('ZCARD', KEYS[1])
"""


class UpdateBudget:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        per_minute: int = DEFAULT_PER_MINUTE,
        reserve: int | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute < 2:
            raise ValueError("per_minute must be at least 2")
        self._keys = keys
        self.per_minute = per_minute
        # What only must-land updates may use: a quarter, at least one call.
        self.reserve = max(1, per_minute // 4) if reserve is None else reserve
        if not 0 < self.reserve < per_minute:
            raise ValueError("reserve must be between 1 and per_minute - 1")
        self._sleep = sleep
        self._take = redis.register_script(_TAKE)
        self._streaming = redis.register_script(_STREAMING)
        self._start_streaming = redis.register_script(_START_STREAMING)

    async def _try(self, team: str, limit: int, *, must: bool, waits: bool = False) -> float:
        wait_us = await self._take(
            keys=[self._keys.update_budget(team), self._keys.update_budget_waiting(team)],
            args=[
                secrets.token_hex(8),
                limit,
                "1" if must else "0",
                WINDOW_US,
                "1" if waits else "0",
            ],
        )
        return int(wait_us) / 1_000_000

    async def take(self, team: str) -> bool:
        """An interim update's call, if the budget has one to spare now. Never waits.

        None while a must-land update waits for one, nor from the last `reserve`.
        """
        return await self._try(team, self.per_minute - self.reserve, must=False) == 0

    async def wait_for(self, team: str) -> float:
        """A call for an update that must land: waits until the window has room.

        Returns the seconds waited. Call it outside any model stream.
        """
        waited = 0.0
        while (delay := await self._try(team, self.per_minute, must=True, waits=True)) > 0:
            await self._sleep(delay)
            waited += delay
        return waited

    async def take_now(self, team: str) -> bool:
        """A call for an update that must land but has another way, if the whole budget has
        one free now and no update that must land waits for one. Never waits."""
        return await self._try(team, self.per_minute, must=True) == 0

    async def start_streaming(self, team: str, turn: str, *, for_s: float, spare: int) -> bool:
        """Whether `turn` may stream now: the window has room for the final render of every
        turn streaming, this one's, and `spare` interim updates, and nothing that must land
        waits. If so, `turn` counts among the streams for `for_s` s (see `streaming`)."""
        return bool(
            await self._start_streaming(
                keys=[
                    self._keys.update_budget(team),
                    self._keys.update_budget_waiting(team),
                    self._keys.streaming(team),
                ],
                args=[
                    turn,
                    max(1, int(for_s * 1_000_000)),
                    self.per_minute - self.reserve,
                    spare,
                    WINDOW_US,
                ],
            )
        )

    async def streaming(self, team: str, turn: str, *, for_s: float) -> int:
        """Count `turn` as being written for the next `for_s` s (renew it while it is);
        returns how many turns stream in the workspace now, this one included."""
        return int(
            await self._streaming(
                keys=[self._keys.streaming(team)], args=[turn, max(1, int(for_s * 1_000_000))]
            )
        )

    async def done_streaming(self, team: str, turn: str) -> None:
        await self._streaming(keys=[self._keys.streaming(team)], args=[turn, 0])

    def interval(self, streams: int) -> float:
        """Seconds between one message's interim updates when `streams` turns are written
        at once: together they then stay within the interim share of the budget."""
        share = (self.per_minute - self.reserve) / 60.0  # interim calls a second
        return max(MIN_INTERVAL_S, max(1, streams) / share)


# KEYS: the session's root window. ARGV: now (wall-clock s), every (s), expiry (ms).
# Returns 1 (and records now) when the last claim is at least `every` old, or in the
# future (a clock set back), or gone; else 0.
_CLAIM_ROOT = """
local last = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
if last ~= nil and now >= last and now - last < tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
# A window's record outlives its window by far: it only has to go eventually.
ROOT_WINDOW_EXPIRY_MS = 120_000


class RootWindows:
    """When each running session's root may next be updated, shared by every worker.

    A session's turns may run on one worker, then another (each job hands the session
    on), so the "at most one root update every few seconds" memory is kept in Redis,
    not in a process. Times are wall-clock seconds from the caller (`time.time` across
    machines; a test's own clock), compared in the script.
    """

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._claim = redis.register_script(_CLAIM_ROOT)

    async def claim(self, sid: str, *, now: float, every_s: float) -> bool:
        """True, and the window is this call's, if `sid`'s root was not updated in the
        last `every_s` s; False otherwise. 1 round trip."""
        return bool(
            await self._claim(
                keys=[self._keys.root_shown(sid)],
                args=[repr(now), repr(every_s), ROOT_WINDOW_EXPIRY_MS],
            )
        )
