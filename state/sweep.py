"""The sweep: no session stays Running with nothing behind it.

A running session always has a job in the turn queue or a worker holding its
lease: `SessionStore.create` and `finish` write the session and its next job in
one step. Something outside the app can still break that: the jobs stream
deleted or trimmed by hand, a Redis that lost writes (no AOF, or `appendfsync
no`), keys evicted. Then nothing would ever move the session again.

Every `SWEEP_EVERY_SECONDS` one worker (whoever takes the sweep's lease) reads
the live index (`Keys.live`: every running or paused session and its thread)
and the jobs still in the stream, and for each live session:

* running, or with saved steps not yet shown, with no job and no worker holding
  its lease: its next turn is queued again (a job too many is harmless: a job
  for a turn already taken is acked as moot). A crash between two steps of a
  write (`SessionStore.create`, `save`, `finish`) can leave exactly this;
* its state is gone (no session hash), and its entry is older than
  `LIVE_GRACE_MS` (a session being created right now has its entry before its
  hash): it is reported as lost, with its thread, so the thread can say so, and
  dropped from the index;
* finished (written by a build before the index was kept in step): dropped.

A sweep reads the whole index and stream: O(live sessions + queued jobs),
a few milliseconds for thousands, once a sweep interval for one worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from state._text import text, text_map
from state.keys import Keys
from state.queue import F_RENDER, F_SID, TurnQueue

# Stream entries read per XRANGE call while collecting the queued sessions.
_PAGE = 1000
# A live entry with no session younger than this is a session being created (its
# entry is written first), not a lost one.
LIVE_GRACE_MS = 60_000

# KEYS: sweep lease. ARGV: owner. Drop the lease if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lost:
    """A session whose state is gone, and the Slack thread it lived in ("" if none)."""

    session_id: str
    channel: str
    thread_ts: str
    team_id: str | None = None


@dataclass
class SweepResult:
    requeued: list[str] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # finished sessions left in the index


class Sweeper:
    def __init__(self, redis: Redis, keys: Keys, queue: TurnQueue) -> None:
        self._redis = redis
        self._keys = keys
        self._queue = queue
        self._release = redis.register_script(_RELEASE)
        self.grace_ms = LIVE_GRACE_MS

    async def run(self, owner: str, *, lease_ms: int) -> SweepResult | None:
        """One sweep, if no other worker is sweeping (None then)."""
        if not await self._redis.set(self._keys.sweep_lease, owner, nx=True, px=lease_ms):
            return None
        try:
            return await self._sweep()
        finally:
            await self._release(keys=[self._keys.sweep_lease], args=[owner])

    async def _queued(self) -> set[str]:
        sids: set[str] = set()
        start = "-"
        while True:
            page = await self._redis.xrange(self._keys.jobs, min=start, count=_PAGE) or []
            for _id, fields in page:
                job = text_map(fields)
                sid = job.get(F_SID)
                if sid and not job.get(F_RENDER):
                    sids.add(sid)
            if len(page) < _PAGE:
                return sids
            start = "(" + text(page[-1][0])

    async def _sweep(self) -> SweepResult:
        result = SweepResult()
        live = {text(k): text(v) for k, v in (await self._redis.hgetall(self._keys.live)).items()}
        if not live:
            return result
        queued = await self._queued()
        sids = list(live)
        # One pipeline; on a Redis Cluster, redis-py sends each node its share.
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(self._keys.session(sid), ["status", "turn", "steps"])
                pipe.exists(self._keys.lease(sid))
            replies = await pipe.execute()
        now_ms = int(time.time() * 1000)
        for i, sid in enumerate(sids):
            (status, turn, steps), leased = replies[2 * i], replies[2 * i + 1]
            channel, thread_ts, team, since = ([*live[sid].split(" "), "", "", "", ""])[:4]
            if status is None:
                if since.isdigit() and now_ms - int(since) < self.grace_ms:
                    continue  # being created
                # Gone, job or not (a job of a missing session is acked as moot).
                result.lost.append(
                    Lost(
                        sid,
                        "" if channel == "-" else channel,
                        "" if thread_ts == "-" else thread_ts,
                        None if team in ("", "-") else team,
                    )
                )
            elif text(status) in ("locked", "stopped"):
                result.dropped.append(sid)
            elif (
                (text(status) == "running" or (steps is not None and text(steps) != "[]"))
                and sid not in queued
                and not int(leased)
                and turn is not None
            ):
                await self._queue.enqueue(sid, int(text(turn)), None if team in ("", "-") else team)
                result.requeued.append(sid)
        gone = [lost.session_id for lost in result.lost] + result.dropped
        if gone:
            await self._redis.hdel(self._keys.live, *gone)
        return result
