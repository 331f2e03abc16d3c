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

A render's record and budgets are its workspace's keys (hash tag `{ws:<team>}`, one
Redis Cluster slot): the save script reads the budget keys from the record's hash, in
that slot. Its schedule and jobs are the queue's (`{q}`): a save is two steps, the fenced
write (and refund) first, then the schedule, the next job and the ack. A crash between
them leaves the job pending: whoever takes it over finds the saved record and goes on
from it (a check repeated, never a resubmission). A render's jobs and due entries name
its workspace, so it is found without another read.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from state._text import opt_text, text
from state.keys import (
    CONSUMER_GROUP,
    JOBS_MAXLEN,
    NO_TEAM,
    RENDER_BUDGET_TTL_S,
    RENDER_TTL_S,
    Keys,
)
from state.queue import F_RENDER, F_SID, F_TEAM, F_TURN, RENDER_TURN, job_fields

# The workspace's slot. KEYS: render, team budget, user budget.
# ARGV: json, sid, seconds, team limit, user limit, budget ttl, render ttl.
# Returns {code, team left, user left}: 1 created, 0 the team's budget is spent,
# 2 the person's, -1 the render exists.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0, 0} end
local s = tonumber(ARGV[3])
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local u = tonumber(redis.call('GET', KEYS[3]) or '0')
local tl, ul = tonumber(ARGV[4]), tonumber(ARGV[5])
if t + s > tl then return {0, tl - t, ul - u} end
if u + s > ul then return {2, tl - t, ul - u} end
redis.call('INCRBY', KEYS[2], s)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('INCRBY', KEYS[3], s)
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'rev', 1, 'sid', ARGV[2],
           'team_key', KEYS[2], 'user_key', KEYS[3], 'seconds', s)
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {1, tl - t - s, ul - u - s}
"""

# The workspace's slot: the fenced write and the refund. KEYS: render.
# ARGV: json, expected rev, refund ('1'). The budget keys are read from the render's hash:
# the create wrote them, in this same slot.
_SAVE = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev or rev ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'rev', tonumber(rev) + 1)
if ARGV[3] == '1' then
  local s = tonumber(redis.call('HGET', KEYS[1], 'seconds') or '0')
  if s > 0 then
    for _, field in ipairs({'team_key', 'user_key'}) do
      local k = redis.call('HGET', KEYS[1], field)
      if k and redis.call('DECRBY', k, s) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
    end
    redis.call('HSET', KEYS[1], 'seconds', 0)
  end
end
return 1
"""

# The queue's slot: what follows a saved render. KEYS: jobs, due.
# ARGV: 1 due member ("<rid> <team> <sid>"), 2 due ms ('' none), 3 enqueue ('1'), 4 ack id
# (''), 5 group, 6 maxlen, 7 sid, 8 team, 9 rid.
_QUEUE = f"""
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[3] == '1' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', '{F_SID}', ARGV[7],
             '{F_TURN}', '{RENDER_TURN}', '{F_TEAM}', ARGV[8], '{F_RENDER}', ARGV[9])
end
if ARGV[4] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[5], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[4])
end
return 1
"""

# KEYS: due, jobs. ARGV: now ms, count, maxlen. Each member names its render's session
# and workspace, so the job is built without reading the render (another slot).
_PROMOTE = f"""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(ids) do
  redis.call('ZREM', KEYS[1], member)
  local rid, team, sid = string.match(member, '^(%S+) (%S+) (%S+)$')
  if rid then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
               '{F_SID}', sid, '{F_TURN}', '{RENDER_TURN}', '{F_TEAM}', team, '{F_RENDER}', rid)
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
        self._queue = redis.register_script(_QUEUE)
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
        """Reserve `seconds` of both budgets and create the render in one step (or, over
        either budget, change nothing); then queue its first job. 2 round trips. A crash
        in between leaves a render with no job: its seconds are refunded by nobody
        (they come back at midnight UTC), and nothing was submitted."""
        code, team_left, user_left = await self._create(
            keys=[
                self._keys.render(team, rid),
                self._keys.render_budget_team(team, day),
                self._keys.render_budget_user(team, user, day),
            ],
            args=[
                record_json,
                session_id,
                seconds,
                team_limit,
                user_limit,
                RENDER_BUDGET_TTL_S,
                self.ttl_s,
            ],
        )
        over = {1: "", 0: "team", 2: "user", -1: "exists"}[int(code)]
        if int(code) == 1:
            await self._redis.xadd(
                self._keys.jobs,
                job_fields(session_id, RENDER_TURN, team, rid),  # type: ignore[arg-type]
                maxlen=JOBS_MAXLEN,
                approximate=True,
            )
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

    async def load(self, rid: str, *, team: str | None) -> tuple[str, int] | None:
        """The record's JSON and rev, or None. 1 round trip."""
        raw, rev = await self._redis.hmget(self._keys.render(team or NO_TEAM, rid), ["json", "rev"])
        if raw is None or rev is None:
            return None
        return text(raw), int(text(rev))

    async def save(
        self,
        rid: str,
        record_json: str,
        *,
        team: str | None,
        session_id: str,
        expected_rev: int,
        due_ms: int | None = None,
        enqueue: bool = False,
        ack: str = "",
        refund: bool = False,
    ) -> bool:
        """Write the record if it is still at `expected_rev`, giving back its budget
        (`refund`); then schedule its next check at `due_ms` (else take it off the
        schedule), queue a job now (`enqueue`) and ack the job `ack`. False, and nothing
        written, when someone else wrote it first. 2 round trips (one slot each)."""
        t = team or NO_TEAM
        ok = await self._save(
            keys=[self._keys.render(t, rid)],
            args=[record_json, str(expected_rev), "1" if refund else ""],
        )
        if not int(ok):
            return False
        await self._queue(
            keys=[self._keys.jobs, self._keys.render_due],
            args=[
                f"{rid} {t} {session_id}",
                "" if due_ms is None else str(due_ms),
                "1" if enqueue else "",
                ack,
                self.group,
                JOBS_MAXLEN,
                session_id,
                t,
                rid,
            ],
        )
        return True

    async def promote(self, now_ms: int, *, count: int = 100) -> int:
        """Move renders whose check is due onto the jobs stream; how many. 1 round trip."""
        moved = await self._promote(
            keys=[self._keys.render_due, self._keys.jobs], args=[now_ms, count, JOBS_MAXLEN]
        )
        return int(moved)

    async def due(self) -> int:
        """Renders waiting for a check (for tests and benchmarks)."""
        return int(await self._redis.zcard(self._keys.render_due))

    async def session_of(self, rid: str, *, team: str | None) -> str | None:
        return opt_text(await self._redis.hget(self._keys.render(team or NO_TEAM, rid), "sid"))
