"""Render records, their daily budgets and their delayed re-checks (never their clips).

A render is a hash `render:<rid>` (`json`: the record bot.render.jobs reads and writes,
`rev`: +1 per write, the fencing token every save checks). Its jobs ride the turn queue's
stream with a `rid` field (state.queue), so the same workers, leases and take-over of a
dead worker's job apply to it.

Waiting for a vendor holds no worker: a save with `due_ms` puts the render in the sorted
set `render:due`, and `promote` (every worker calls it now and then) moves the due ones onto
the stream as new jobs, in one script, so each is moved once.

Budgets are seconds of video a day (UTC), per workspace and per person: `create` reserves
both and creates the render and its first job in one script, or does nothing at all;
a save with `refund` gives back exactly what the render reserved, once.

The scripts read a render's budget keys and session id from its hash rather than taking
them as KEYS: fine on one Redis; a Redis Cluster would need them hash-tagged together.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from state._text import opt_text, text
from state.keys import (
    CONSUMER_GROUP,
    JOBS_MAXLEN,
    RENDER_BUDGET_TTL_S,
    RENDER_TTL_S,
    Keys,
)
from state.queue import F_RENDER, F_SID, F_TURN, RENDER_TURN

# KEYS: render, team budget, user budget, jobs.
# ARGV: json, sid, seconds, team limit, user limit, budget ttl, render ttl, maxlen, rid.
# Returns {code, team left, user left}: 1 created, 0 the team's budget is spent,
# 2 the person's, -1 the render exists.
_CREATE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {{-1, 0, 0}} end
local s = tonumber(ARGV[3])
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local u = tonumber(redis.call('GET', KEYS[3]) or '0')
local tl, ul = tonumber(ARGV[4]), tonumber(ARGV[5])
if t + s > tl then return {{0, tl - t, ul - u}} end
if u + s > ul then return {{2, tl - t, ul - u}} end
redis.call('INCRBY', KEYS[2], s)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('INCRBY', KEYS[3], s)
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'rev', 1, 'sid', ARGV[2],
           'team_key', KEYS[2], 'user_key', KEYS[3], 'seconds', s)
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*',
           '{F_SID}', ARGV[2], '{F_TURN}', '{RENDER_TURN}', '{F_RENDER}', ARGV[9])
return {{1, tl - t - s, ul - u - s}}
"""

# KEYS: render, jobs, due.
# ARGV: json, expected rev, due ms ('' none), enqueue ('1'), ack id (''), group, refund
#       ('1'), rid, maxlen.
_SAVE = f"""
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev or rev ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'rev', tonumber(rev) + 1)
if ARGV[7] == '1' then
  local s = tonumber(redis.call('HGET', KEYS[1], 'seconds') or '0')
  if s > 0 then
    for _, field in ipairs({{'team_key', 'user_key'}}) do
      local k = redis.call('HGET', KEYS[1], field)
      if k and redis.call('DECRBY', k, s) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
    end
    redis.call('HSET', KEYS[1], 'seconds', 0)
  end
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[8])
else
  redis.call('ZREM', KEYS[3], ARGV[8])
end
if ARGV[4] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', '{F_SID}',
             redis.call('HGET', KEYS[1], 'sid'), '{F_TURN}', '{RENDER_TURN}', '{F_RENDER}', ARGV[8])
end
if ARGV[5] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[6], ARGV[5])
  redis.call('XDEL', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: due, jobs. ARGV: now ms, count, maxlen, the render key's prefix.
_PROMOTE = f"""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, rid in ipairs(ids) do
  redis.call('ZREM', KEYS[1], rid)
  local sid = redis.call('HGET', ARGV[4] .. rid, 'sid')
  if sid then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
               '{F_SID}', sid, '{F_TURN}', '{RENDER_TURN}', '{F_RENDER}', rid)
  end
end
return #ids
"""


# KEYS: slot. ARGV: rid, a rid it may replace ('' for none), ttl s. Returns the rid in it.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return ARGV[1]
end
return cur
"""


@dataclass(frozen=True)
class Reserved:
    """What `create` did: `created`, or which budget said no; the seconds left in each."""

    created: bool
    team_left: int
    user_left: int
    over: str = ""  # "team" or "user" when not created for the budget; "exists" otherwise


class RenderStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        group: str = CONSUMER_GROUP,
        ttl_s: int = RENDER_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.group = group
        self.ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._save = redis.register_script(_SAVE)
        self._promote = redis.register_script(_PROMOTE)
        self._claim = redis.register_script(_CLAIM)

    async def create(
        self,
        rid: str,
        record_json: str,
        *,
        session_id: str,
        team: str,
        user: str,
        day: str,
        seconds: int,
        team_limit: int,
        user_limit: int,
    ) -> Reserved:
        """Reserve `seconds` of both budgets, create the render and queue its first job, in
        one step; or, over either budget, change nothing. 1 round trip."""
        code, team_left, user_left = await self._create(
            keys=[
                self._keys.render(rid),
                self._keys.render_budget_team(team, day),
                self._keys.render_budget_user(team, user, day),
                self._keys.jobs,
            ],
            args=[
                record_json,
                session_id,
                seconds,
                team_limit,
                user_limit,
                RENDER_BUDGET_TTL_S,
                self.ttl_s,
                JOBS_MAXLEN,
                rid,
            ],
        )
        over = {1: "", 0: "team", 2: "user", -1: "exists"}[int(code)]
        return Reserved(int(code) == 1, int(team_left), int(user_left), over)

    async def claim_slot(
        self, *, team: str, session_id: str, tier: str, rid: str, replacing: str = ""
    ) -> str:
        """Put `rid` in the entry's render slot for `tier` if it is empty, holds `rid`, or
        holds `replacing` (a render known finished or never confirmed); the rid the slot
        holds afterwards. 1 round trip."""
        held = await self._claim(
            keys=[self._keys.render_slot(team, session_id, tier)],
            args=[rid, replacing, self.ttl_s],
        )
        return text(held)

    async def budget_left(
        self, *, team: str, user: str, day: str, team_limit: int, user_limit: int
    ) -> tuple[int, int]:
        """Seconds left today for the workspace and for the person. 1 round trip."""
        t, u = await self._redis.mget(
            [
                self._keys.render_budget_team(team, day),
                self._keys.render_budget_user(team, user, day),
            ]
        )
        return team_limit - int(text(t) if t else 0), user_limit - int(text(u) if u else 0)

    async def load(self, rid: str) -> tuple[str, int] | None:
        """The record's JSON and rev, or None. 1 round trip."""
        raw, rev = await self._redis.hmget(self._keys.render(rid), ["json", "rev"])
        if raw is None or rev is None:
            return None
        return text(raw), int(text(rev))

    async def save(
        self,
        rid: str,
        record_json: str,
        *,
        expected_rev: int,
        due_ms: int | None = None,
        enqueue: bool = False,
        ack: str = "",
        refund: bool = False,
    ) -> bool:
        """Write the record if it is still at `expected_rev`; in the same step schedule its
        next check at `due_ms` (else take it off the schedule), queue a job now
        (`enqueue`), ack the job `ack`, give back its budget (`refund`). False, and nothing
        written, when someone else wrote it first. 1 round trip."""
        ok = await self._save(
            keys=[self._keys.render(rid), self._keys.jobs, self._keys.render_due],
            args=[
                record_json,
                str(expected_rev),
                "" if due_ms is None else str(due_ms),
                "1" if enqueue else "",
                ack,
                self.group,
                "1" if refund else "",
                rid,
                JOBS_MAXLEN,
            ],
        )
        return bool(ok)

    async def promote(self, now_ms: int, *, count: int = 100) -> int:
        """Move renders whose check is due onto the jobs stream; how many. 1 round trip."""
        moved = await self._promote(
            keys=[self._keys.render_due, self._keys.jobs],
            args=[now_ms, count, JOBS_MAXLEN, self._keys.render("")],
        )
        return int(moved)

    async def due(self) -> int:
        """Renders waiting for a check (for tests and benchmarks)."""
        return int(await self._redis.zcard(self._keys.render_due))

    async def session_of(self, rid: str) -> str | None:
        return opt_text(await self._redis.hget(self._keys.render(rid), "sid"))
