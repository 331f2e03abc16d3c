"""The turn queue: "advance session S to turn N" jobs on a Redis Stream.

Delivery is at-least-once through one consumer group: `take` reads new jobs
(XREADGROUP), `SessionStore.save` or `ack` acknowledges a job once its turn is
persisted, and `reclaim` takes over jobs a dead worker left pending
(XAUTOCLAIM). A job delivered more than `max_deliveries` times is moved to the
dead-letter stream instead of being handed out again: its session should be
paused with a Retry button, not retried forever.

A duplicate job is harmless: the worker holds a lease and the store writes only
if the session is still at the job's turn (the fencing token).

Acked jobs are deleted from the stream (XACK + XDEL), so the stream's length is
the backlog; MAXLEN ~ is only a safety net against unbounded growth.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from state._text import flat_map, text, text_map
from state.connection import is_embedded
from state.keys import (
    CONSUMER_GROUP,
    DEAD_LETTER_MAXLEN,
    JOBS_MAXLEN,
    MAX_DELIVERIES,
    NO_TEAM,
    RECLAIM_MIN_IDLE_MS,
    Keys,
)

EMBEDDED_POLL_S = 0.02

# Field names of a job entry; the store's save script writes the same ones. A render job
# (bot.render.jobs) carries `rid` too, and turn -1.
F_SID = "sid"
F_TURN = "turn"
F_RENDER = "rid"
# The workspace the job's session belongs to (NO_TEAM for a session with none): a worker
# sets aside a job of a workspace it has no installation for (bot.worker).
F_TEAM = "team"
RENDER_TURN = -1


def job_fields(sid: str, turn: int, team: str | None, rid: str = "") -> dict[str, str]:
    """The fields of a job entry (everything that enqueues writes these)."""
    fields = {F_SID: sid, F_TURN: str(turn), F_TEAM: team or NO_TEAM}
    if rid:
        fields[F_RENDER] = rid
    return fields


@dataclass(frozen=True, kw_only=True)
class Job:
    """One delivery of "advance `session_id` to turn `turn`"."""

    id: str  # stream entry id; what `ack` acknowledges
    session_id: str
    turn: int
    deliveries: int  # 1 on the first delivery, +1 per reclaim
    render: str = ""  # a render job: the render's id (the session's turn is not touched)
    team: str = ""  # the session's workspace as the job names it ("" from an older build)

    @property
    def lease_name(self) -> str:
        """What the job's lease is named after: its session, or its render."""
        return f"render-{self.render}" if self.render else self.session_id


@dataclass(frozen=True, kw_only=True)
class Reclaimed:
    """What `reclaim` took over.

    `jobs` now belong to the calling consumer: work on them like taken jobs.
    `dead` exceeded `max_deliveries`; they are already acked and copied to the
    dead-letter stream. Pause their sessions (failed, resumable with Retry).
    """

    jobs: list[Job]
    dead: list[Job]


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    id: str  # id in the dead-letter stream
    job: Job  # as it was when it died (`job.id` is its id in the jobs stream)
    reason: str
    consumer: str  # who found it dead


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    backlog: int  # entries in the jobs stream: not yet acked (new or pending)
    pending: int  # delivered, not yet acked
    dead: int


# XAUTOCLAIM scans at most COUNT*10 pending entries per call; loop a few times so
# idle jobs behind many busy ones are still found. For each claimed job, XPENDING
# on its own id gives the delivery count (XAUTOCLAIM has already incremented it).
_RECLAIM = """
local stream, dead = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local min_idle, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_deliveries, dead_maxlen = tonumber(ARGV[5]), ARGV[6]
local out = {}
local cursor = '0-0'
for _ = 1, 10 do
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor,
                         'COUNT', count - #out)
  cursor = res[1]
  for _, e in ipairs(res[2]) do
    local id, fields = e[1], e[2]
    if fields then
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local n = 1
      if p[1] then n = tonumber(p[1][4]) end
      if n > max_deliveries then
        local args = {'XADD', dead, 'MAXLEN', '~', dead_maxlen, '*'}
        for i = 1, #fields do args[#args + 1] = fields[i] end
        for _, v in ipairs({'job_id', id, 'deliveries', tostring(n),
                            'reason', 'max_deliveries', 'consumer', consumer}) do
          args[#args + 1] = v
        end
        redis.call(unpack(args))
        redis.call('XACK', stream, group, id)
        redis.call('XDEL', stream, id)
        out[#out + 1] = {id, fields, n, 1}
      else
        out[#out + 1] = {id, fields, n, 0}
      end
    end
  end
  if cursor == '0-0' or #out >= count then break end
end
return out
"""


def _job(entry_id: str, fields: dict[str, str], deliveries: int) -> Job | None:
    try:
        return Job(
            id=entry_id,
            session_id=fields[F_SID],
            turn=int(fields[F_TURN]),
            deliveries=deliveries,
            render=fields.get(F_RENDER, ""),
            team=fields.get(F_TEAM, ""),
        )
    except (KeyError, ValueError):
        return None


class TurnQueue:
    """Turn jobs on the stream `keys.jobs`, consumer group `group`."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        group: str = CONSUMER_GROUP,
        max_deliveries: int = MAX_DELIVERIES,
        maxlen: int = JOBS_MAXLEN,
        dead_maxlen: int = DEAD_LETTER_MAXLEN,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._redis = redis
        self._keys = keys
        self.group = group
        self.max_deliveries = max_deliveries
        self.maxlen = maxlen
        self._dead_maxlen = dead_maxlen
        self._reclaim = redis.register_script(_RECLAIM)
        # fakeredis answers a blocking XREADGROUP at once; poll instead so an
        # embedded worker's loop does not spin.
        self._poll_for_block = is_embedded(redis)

    async def ensure_group(self) -> None:
        """Create the stream and its group if missing. Idempotent; call at startup.

        The group starts at id 0, so jobs enqueued before it existed are not skipped.
        """
        try:
            await self._redis.xgroup_create(self._keys.jobs, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def enqueue(self, sid: str, turn: int, team: str | None = None) -> str:
        """Add "advance `sid` (of workspace `team`) to turn `turn`"; returns the job id.
        1 round trip."""
        job_id = await self._redis.xadd(
            self._keys.jobs,
            job_fields(sid, turn, team),  # type: ignore[arg-type]
            maxlen=self.maxlen,
            approximate=True,
        )
        return text(job_id)

    async def take(
        self, consumer: str, *, count: int = 1, block_ms: int | None = None
    ) -> list[Job]:
        """New jobs for `consumer` (XREADGROUP `>`). 1 round trip.

        `block_ms=None` returns at once; a positive value waits up to that long for
        a job. (Redis treats 0 as "wait forever".)
        """
        jobs = await self._take(consumer, count, block_ms)
        if jobs or block_ms is None or not self._poll_for_block:
            return jobs
        loop = asyncio.get_running_loop()
        deadline = math.inf if block_ms == 0 else loop.time() + block_ms / 1000
        while not jobs and (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(EMBEDDED_POLL_S, remaining))
            jobs = await self._take(consumer, count, None)
        return jobs

    async def _take(self, consumer: str, count: int, block_ms: int | None) -> list[Job]:
        try:
            reply = await self._read(consumer, count, block_ms)
        except ResponseError as e:
            # The group vanishes if Redis lost its data; recreate it rather than
            # letting every worker crash-loop.
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group()
            reply = await self._read(consumer, count, block_ms)
        jobs: list[Job] = []
        malformed: list[str] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                job = _job(text(entry_id), text_map(fields), 1)
                if job is None:
                    malformed.append(text(entry_id))
                else:
                    jobs.append(job)
        for entry_id in malformed:
            await self._bury(entry_id, consumer, "malformed")
        return jobs

    async def _read(self, consumer: str, count: int, block_ms: int | None) -> Any:
        return await self._redis.xreadgroup(
            self.group, consumer, {self._keys.jobs: ">"}, count=count, block=block_ms
        )

    async def ack(self, job: Job) -> bool:
        """Acknowledge and delete a job; False if it was already acked. 1 round trip.

        Prefer `SessionStore.save(..., ack=job)`, which acks in the same atomic
        write that persists the turn.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.jobs, self.group, job.id)
            pipe.xdel(self._keys.jobs, job.id)
            acked, _deleted = await pipe.execute()
        return int(acked) == 1

    async def reclaim(
        self,
        consumer: str,
        *,
        min_idle_ms: int = RECLAIM_MIN_IDLE_MS,
        count: int = 10,
    ) -> Reclaimed:
        """Take over jobs idle for `min_idle_ms` in any consumer's pending list.

        Jobs delivered more than `max_deliveries` times (counting this claim) are
        dead-lettered and acked instead. 1 round trip (one Lua script).
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        rows = await self._reclaim(
            keys=[self._keys.jobs, self._keys.dead_letter],
            args=[
                self.group,
                consumer,
                min_idle_ms,
                count,
                self.max_deliveries,
                self._dead_maxlen,
            ],
        )
        jobs: list[Job] = []
        dead: list[Job] = []
        for entry_id, flat, deliveries, is_dead in rows:
            job = _job(text(entry_id), flat_map(flat), int(deliveries))
            if job is None:
                if not int(is_dead):
                    await self._bury(text(entry_id), consumer, "malformed")
                continue
            (dead if int(is_dead) else jobs).append(job)
        return Reclaimed(jobs=jobs, dead=dead)

    async def touch(self, job: Job, consumer: str) -> bool:
        """Reset a job's idle time so `reclaim` leaves it alone while it is being worked.

        XCLAIM JUSTID does not count as a delivery. False if the job is no longer
        pending (acked, or dead-lettered). 1 round trip; `State.heartbeat` does
        this together with the lease renewal.
        """
        claimed = await self._redis.xclaim(
            self._keys.jobs, self.group, consumer, 0, [job.id], justid=True
        )
        return len(claimed) == 1

    async def dead_letters(self, *, count: int = 100) -> list[DeadLetter]:
        """Oldest first. 1 round trip."""
        entries = await self._redis.xrange(self._keys.dead_letter, count=count)
        out: list[DeadLetter] = []
        for entry_id, raw in entries or []:
            fields = text_map(raw)
            out.append(
                DeadLetter(
                    id=text(entry_id),
                    job=Job(
                        id=fields.get("job_id", ""),
                        session_id=fields.get(F_SID, ""),
                        turn=int(fields.get(F_TURN, "-1") or -1),
                        deliveries=int(fields.get("deliveries", "0") or 0),
                        render=fields.get(F_RENDER, ""),
                        team=fields.get(F_TEAM, ""),
                    ),
                    reason=fields.get("reason", ""),
                    consumer=fields.get("consumer", ""),
                )
            )
        return out

    async def stats(self) -> QueueStats:
        """Backlog, pending and dead counts (for /healthz and benchmarks). 1 round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self._keys.jobs)
            pipe.xpending(self._keys.jobs, self.group)
            pipe.xlen(self._keys.dead_letter)
            backlog, pending, dead = await pipe.execute(raise_on_error=False)
        n_pending = int(pending["pending"]) if isinstance(pending, dict) else 0
        return QueueStats(
            backlog=int(backlog) if isinstance(backlog, int) else 0,
            pending=n_pending,
            dead=int(dead) if isinstance(dead, int) else 0,
        )

    async def bury(self, job: Job, consumer: str, reason: str) -> None:
        """Dead-letter a job no worker may run (`reason` says why), and ack it. 1 round trip."""
        await self._bury(
            job.id, consumer, reason, job_fields(job.session_id, job.turn, job.team, job.render)
        )

    async def _bury(
        self, entry_id: str, consumer: str, reason: str, more: dict[str, str] | None = None
    ) -> None:
        """Move an entry nobody can run to the dead-letter stream (rare path)."""
        fields: dict[Any, Any] = {"job_id": entry_id, "reason": reason, "consumer": consumer}
        fields.update(more or {})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self._keys.dead_letter,
                fields,
                maxlen=self._dead_maxlen,
                approximate=True,
            )
            pipe.xack(self._keys.jobs, self.group, entry_id)
            pipe.xdel(self._keys.jobs, entry_id)
            await pipe.execute()
