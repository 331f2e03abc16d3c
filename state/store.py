"""The session store: sessions as JSON in Redis, written by one worker at a time.

A session is a hash:

    json      the Session (pydantic JSON, carries schema_version)
    turn      Session.next_turn: the fencing token of "advance S to turn N" jobs
    rev       +1 on every write: an exact compare-and-set token for `save`
    messages  transcript length, so the store can refuse a shrinking transcript
    schema    schema version of `json`
    status    Session.status, readable without parsing the JSON

Web processes only `create` sessions; afterwards the worker holding the
session's lease is the single writer, through `save`, one Lua script over the
session's own keys (one hash tag, one Redis Cluster slot) that in one atomic step:

  * refuses a stale write: the stored turn is not `expected_turn` (or the stored
    rev is not `expected_rev`), the session is finished (locked and stopped are
    terminal), the transcript would shrink (it is append-only), or the stored
    schema is newer than this build's;
  * writes the session and removes the first `consume_inbox` inbox entries,
    the ones the turn applied (entries pushed since stay);
  * gives the session and its inbox and post ledger the finished TTL when the
    session is finished (the live TTL otherwise), and releases the lease.

What lives in other slots follows as steps of their own, in an order that makes
a crash between any two safe: a finished session leaves its workspace's sets
(`settle`: idempotent, redone by whoever meets the session finished), then one
MULTI in the queue's slot enqueues the next job (a duplicate is harmless: a job
whose turn is no longer the session's is acked as moot under the lease), drops
a finished session from the live index and acks the current job. A crash before
that MULTI leaves the current job pending for another worker; what a crash can
leave besides is a running session with no job and no lease, which the sweep
(state.sweep) queues again. Every step's order is tested by stopping a write
after it (tests/test_state_split.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from redis.asyncio import Redis

from bot.dialogue.models import SCHEMA_VERSION, Session, SessionStatus
from state._text import flat_map, opt_text, text
from state.errors import SessionExists, UnknownSchema
from state.inbox import InboxEntry, parse_entries
from state.keys import (
    CONSUMER_GROUP,
    FINISHED_SESSION_TTL_S,
    INBOX_MAX_ENTRIES,
    JOBS_MAXLEN,
    LEASE_TTL_MS,
    LIVE_SESSION_TTL_S,
    NO_TEAM,
    Keys,
)
from state.posts import parse_ledger
from state.queue import Job, job_fields

log = logging.getLogger(__name__)

# Schema versions this build can read. A migration for an older version would go
# here; a newer version means a newer build wrote it, and we must not touch it.
KNOWN_SCHEMAS = frozenset({SCHEMA_VERSION})
_KNOWN_ARG = "," + ",".join(str(v) for v in sorted(KNOWN_SCHEMAS)) + ","

# KEYS: session. ARGV: json, turn, messages, schema, status, ttl s (0: none).
# Returns 1, or 0 when the id is taken (nothing written).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'turn', ARGV[2], 'rev', 1,
           'messages', ARGV[3], 'schema', ARGV[4], 'status', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
return 1
"""

# The workspace's part of a new session, in its slot. KEYS: thread, the workspace's
# sessions. ARGV: sid, ttl s (0: none), has thread, now ms ('' for no workspace), the
# oldest score the workspace's index keeps.
_FILE = """
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1])
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
end
return 1
"""

# KEYS: session, inbox, posts, lease.  ARGV: lease owner ('' for none), lease ms,
# max inbox entries, known schemas as ",1,2,". Returns {} for no session, else
# {leased, hash, inbox, posts} with leased -1 when no lease was asked for (or the
# schema is unknown: no point holding a session this build cannot read). The
# lease is taken as in `state.lease.ACQUIRE_LUA` (free or already ours).
_SNAPSHOT = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {} end
local schema = redis.call('HGET', KEYS[1], 'schema') or '?'
local leased = -1
if ARGV[1] ~= '' and string.find(ARGV[4], ',' .. schema .. ',', 1, true) then
  local cur = redis.call('GET', KEYS[4])
  if cur == ARGV[1] then
    redis.call('PEXPIRE', KEYS[4], ARGV[2])
    leased = 1
  elseif cur then
    leased = 0
  else
    redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
    leased = 1
  end
end
return {leased, h, redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1),
        redis.call('HGETALL', KEYS[3])}
"""

# Drop the lease if `owner` ('' for none) holds it.
_RELEASE = """
local function release(lease, owner)
  if owner ~= '' and redis.call('GET', lease) == owner then
    redis.call('DEL', lease)
  end
end
"""

# The session's slot only. KEYS: 1 session, 2 inbox, 3 posts, 4 lease.
# ARGV: 1 json, 2 new turn, 3 expected turn, 4 expected rev (''), 5 messages,
#       6 schema, 7 status, 8 consume, 9 ttl s (0: none), 10 lease owner to release
#       (''), 11 steps (JSON list), 12 inbox entries to read back (0: none).
# Returns {code, rev, inbox, previous status}; code 1 ok, 0 stale, -1 no session,
# -2 transcript would shrink, -3 session already finished, -4 newer schema stored.
_SAVE = (
    _RELEASE
    + """
local cur = redis.call('HMGET', KEYS[1], 'turn', 'rev', 'messages', 'schema', 'status')
if not cur[1] then return {-1, 0, {}, ''} end
if tonumber(cur[1]) ~= tonumber(ARGV[3]) then return {0, 0, {}, ''} end
if ARGV[4] ~= '' and tonumber(cur[2]) ~= tonumber(ARGV[4]) then return {0, 0, {}, ''} end
if cur[5] == 'locked' or cur[5] == 'stopped' then return {-3, 0, {}, ''} end
if tonumber(ARGV[5]) < tonumber(cur[3]) or tonumber(ARGV[2]) < tonumber(cur[1]) then
  return {-2, 0, {}, ''}
end
if tonumber(ARGV[6]) < tonumber(cur[4]) then return {-4, 0, {}, ''} end
local rev = tonumber(cur[2]) + 1
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'turn', ARGV[2], 'rev', rev,
           'messages', ARGV[5], 'schema', ARGV[6], 'status', ARGV[7], 'steps', ARGV[11])
local n = tonumber(ARGV[8])
if n > 0 then redis.call('LTRIM', KEYS[2], n, -1) end
local ttl = tonumber(ARGV[9])
for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  if ttl > 0 then redis.call('EXPIRE', k, ttl) else redis.call('PERSIST', k) end
end
release(KEYS[4], ARGV[10])
local inbox = {}
if tonumber(ARGV[12]) > 0 then inbox = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[12]) - 1) end
return {1, rev, inbox, cur[5]}
"""
)

# KEYS: 1 session, 2 lease. ARGV: 1 steps shown (JSON, as saved), 2 lease owner ('').
# The steps are cleared only if the stored steps are still the ones shown: a second
# finisher (a stalled worker waking up) clears nothing and so enqueues nothing.
# Returns 1 if this call cleared them, 0 if they were already cleared or replaced.
_FINISH = (
    _RELEASE
    + """
local cur = redis.call('HGET', KEYS[1], 'steps')
local cleared = 0
if cur and cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'steps', '[]')
  cleared = 1
end
release(KEYS[2], ARGV[2])
return cleared
"""
)

# A finished session leaves its workspace's sets, in the workspace's slot. KEYS: thread,
# running user, team and channel sets. ARGV: sid, has thread, finished ttl s (0: none).
_SETTLE = """
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3])
  else redis.call('PERSIST', KEYS[1]) end
end
for i = 2, 4 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""

_REFUSALS = {
    0: "stale (stored turn or rev differs from the expected one)",
    -1: "no such session (expired or never created)",
    -2: "the transcript would shrink (it is append-only)",
    -3: "the session is already finished",
    -4: "a newer schema version is stored",
}


@dataclass(frozen=True, kw_only=True)
class Saved:
    """What `save_and_read` gives back: the session's new rev and its unapplied inbox."""

    rev: int
    inbox: list[InboxEntry]
    status_was: str = ""  # the stored status the write replaced


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything a worker reads to start a turn, read in one round trip."""

    session: Session
    rev: int  # pass as `save(..., expected_rev=)` for an exact compare-and-set
    inbox: list[InboxEntry]  # unapplied, oldest first
    posts: dict[int, dict[int, str]]  # post ledger: {turn: {part: message id}}
    leased: bool | None  # None when no lease was asked for
    # The outbox: what an earlier save left to show (see `save`).
    steps: list[str] = field(default_factory=list)

    def posts_for(self, turn: int) -> dict[int, str]:
        return self.posts.get(turn, {})


def _decode(sid: str, schema: str | None, raw: str | None) -> Session:
    try:
        version = int(schema) if schema is not None else -1
    except ValueError:
        version = -1
    if version not in KNOWN_SCHEMAS or raw is None:
        raise UnknownSchema(
            f"session {sid} is stored with schema_version {schema!r}; this build reads "
            f"only {sorted(KNOWN_SCHEMAS)}. A newer release probably wrote it: upgrade "
            "this process rather than overwrite it."
        )
    try:
        return Session.model_validate_json(raw)
    except ValidationError as e:
        raise UnknownSchema(
            f"session {sid} (schema_version {version}) does not match this build's "
            f"Session model: {e.errors()[0]['msg']}"
        ) from e


def live_where(session: Session) -> str:
    """Where to tell people if a session's state is lost, as the live index keeps it
    ("<channel> <thread ts> <team>"; "- - <team>" for a session with no Slack thread)."""
    o = session.origin
    if not (o.channel_id and o.thread_ts):
        return f"- - {o.team_id or NO_TEAM}"
    return f"{o.channel_id} {o.thread_ts} {o.team_id or NO_TEAM}"


def _steps(raw: str | None) -> list[str]:
    try:
        steps = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(x) for x in steps] if isinstance(steps, list) else []


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        finished_ttl: int = FINISHED_SESSION_TTL_S,
        live_ttl: int | None = LIVE_SESSION_TTL_S,
        group: str = CONSUMER_GROUP,
        jobs_maxlen: int = JOBS_MAXLEN,
        inbox_max: int = 2 * INBOX_MAX_ENTRIES,
    ) -> None:
        """`finished_ttl` (s) applies once a session is locked or stopped;
        `live_ttl` (s, None: never) to running and paused ones, from their last
        write. `group` must be the turn queue's consumer group."""
        self._redis = redis
        self._keys = keys
        self.finished_ttl = finished_ttl
        self.live_ttl = live_ttl
        self._group = group
        self._jobs_maxlen = jobs_maxlen
        self._inbox_max = inbox_max
        self._create = redis.register_script(_CREATE)
        self._file = redis.register_script(_FILE)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._save = redis.register_script(_SAVE)
        self._finish = redis.register_script(_FINISH)
        self._settle = redis.register_script(_SETTLE)
        # Called with each step's name once it is done (tests stop a write there, as a
        # crash would, to prove that every point between two steps is safe).
        self.after_step: Callable[[str], Awaitable[None]] | None = None

    async def _done(self, step: str) -> None:
        if self.after_step is not None:
            await self.after_step(step)

    def _ttl_for(self, status: SessionStatus) -> int:
        return self.finished_ttl if status.finished else (self.live_ttl or 0)

    async def _enqueue(self, session: Session) -> str:
        job = await self._redis.xadd(
            self._keys.jobs,
            job_fields(session.id, session.next_turn, session.origin.team_id),  # type: ignore[arg-type]
            maxlen=self._jobs_maxlen,
            approximate=True,
        )
        return text(job)

    async def _queue_step(
        self, session: Session, *, enqueue: bool, unlive: bool, ack: Job | None
    ) -> None:
        """The queue's slot, in one MULTI: enqueue the session's next job, drop it from the
        live index, ack the current job; in that order, all or nothing. 1 round trip."""
        if not (enqueue or unlive or ack is not None):
            return
        async with self._redis.pipeline(transaction=True) as tx:
            if enqueue:
                tx.xadd(
                    self._keys.jobs,
                    job_fields(session.id, session.next_turn, session.origin.team_id),  # type: ignore[arg-type]
                    maxlen=self._jobs_maxlen,
                    approximate=True,
                )
            if unlive:
                tx.hdel(self._keys.live, session.id)
            if ack is not None:
                tx.xack(self._keys.jobs, self._group, ack.id)
                tx.xdel(self._keys.jobs, ack.id)
            await tx.execute()

    async def create(self, session: Session, *, enqueue: bool = False) -> str | None:
        """Store a new session; raises `SessionExists` if the id is taken.

        Also binds the session's origin thread (if it has one) in the thread index,
        files it in its workspace's index and the live index and, with `enqueue`,
        adds the job for its next turn. Returns the job id when one was enqueued.

        Four single-slot steps (4 round trips), ordered so that a crash between any
        two is safe: (1) the live index (HSETNX: a live id taken is refused before
        anything is written), (2) the workspace's thread binding and session index,
        (3) the session, (4) its job. A crash after (1) or (2) leaves an entry naming
        no session: the sweep reports it lost once `LIVE_GRACE_MS` has passed, the
        uninstall skips it. A crash after (3) leaves a running session with no job,
        which the sweep queues again.
        """
        origin = session.origin
        thread = bool(origin.channel_id and origin.thread_ts)
        now_ms = int(time.time() * 1000)
        sid, team = session.id, origin.team_id or NO_TEAM
        indexed = not session.finished
        if indexed and not await self._redis.hsetnx(
            self._keys.live, sid, f"{live_where(session)} {now_ms}"
        ):
            raise SessionExists(f"session {sid} already exists; sessions are create-only")
        await self._done("live")
        if thread or origin.team_id:
            await self._file(
                keys=[
                    self._keys.thread(team, origin.channel_id or "-", origin.thread_ts or "-"),
                    self._keys.workspace_sessions(team),
                ],
                args=[
                    sid,
                    self._ttl_for(session.status),
                    "1" if thread else "0",
                    # The workspace's index of its sessions (for uninstalling), pruned of
                    # ids older than any session can live.
                    str(now_ms) if origin.team_id else "",
                    str(now_ms - 1000 * max(self.finished_ttl, self.live_ttl or 0)),
                ],
            )
        await self._done("filed")
        created = await self._create(
            keys=[self._keys.session(sid)],
            args=[
                session.model_dump_json(),
                session.next_turn,
                len(session.turns),
                session.schema_version,
                session.status.value,
                self._ttl_for(session.status),
            ],
        )
        if not int(created):
            if indexed:
                await self._redis.hdel(self._keys.live, sid)
            raise SessionExists(f"session {sid} already exists; sessions are create-only")
        await self._done("session")
        return await self._enqueue(session) if enqueue else None

    async def load(self, sid: str) -> Session | None:
        """The stored session, or None. Raises `UnknownSchema`. 1 round trip."""
        raw, schema = await self._redis.hmget(self._keys.session(sid), ["json", "schema"])
        if raw is None and schema is None:
            return None
        return _decode(sid, opt_text(schema), opt_text(raw))

    async def status(self, sid: str) -> SessionStatus | None:
        """The status without reading the transcript (for handlers). 1 round trip."""
        raw = await self._redis.hget(self._keys.session(sid), "status")
        return None if raw is None else SessionStatus(text(raw))

    async def snapshot(
        self,
        sid: str,
        *,
        lease_owner: str | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
    ) -> Snapshot | None:
        """Session, rev, unapplied inbox and post ledger, and optionally the lease.

        With `lease_owner`, the lease is acquired in the same step (if free or
        already ours); check `snapshot.leased` before working. Returns None if
        the session does not exist (and then takes no lease). Raises
        `UnknownSchema`, without taking the lease, for a session a newer build
        wrote: leave its job pending for a newer worker. 1 round trip.
        """
        reply = await self._snapshot(
            keys=[
                self._keys.session(sid),
                self._keys.inbox(sid),
                self._keys.posts(sid),
                self._keys.lease(sid),
            ],
            args=[lease_owner or "", lease_ttl_ms, self._inbox_max, _KNOWN_ARG],
        )
        if not reply:
            return None
        leased, flat, inbox, posts = reply
        h = flat_map(flat)
        return Snapshot(
            session=_decode(sid, h.get("schema"), h.get("json")),
            rev=int(h.get("rev", "0")),
            inbox=parse_entries(sid, (text(e) for e in inbox)),
            posts=parse_ledger(flat_map(posts)),
            leased=None if int(leased) < 0 else bool(int(leased)),
            steps=_steps(h.get("steps")),
        )

    async def save(
        self,
        session: Session,
        *,
        expected_turn: int,
        consume_inbox: int = 0,
        expected_rev: int | None = None,
        ack: Job | None = None,
        enqueue_next: bool = False,
        release_lease: str | None = None,
        steps: Sequence[str] = (),
    ) -> bool:
        """Write `session` if the stored one is still at `expected_turn`.

        Returns False, writing nothing at all, on a refusal (see the module
        docstring; the reason is logged). `expected_rev` (from `snapshot`) makes
        it an exact compare-and-set, which also fences saves that do not advance
        the turn (pause, resume, stop): pass it whenever you have it.

        With the write, in the session's slot: remove the first `consume_inbox`
        inbox entries and, with `release_lease`, drop the lease if that owner holds
        it. Then, each a step of its own, in this order: a session this write
        finished leaves its workspace's sets (`settle`); then, in one MULTI in the
        queue's slot, with `enqueue_next` the job "advance to session.next_turn" is
        added, a finished session leaves the live index, and `ack`'s job is acked. A
        crash between two steps leaves `ack`'s job pending (redone as moot, or, with
        steps, shown) or a session the sweep queues again: never a lost turn. On a
        refusal none of these happen: ack the (moot) job and release the lease
        yourself. 1 round trip; 2 with `enqueue_next` or `ack`; 1 more when the write
        finishes the session.

        `steps` are what is left to show of this write (the outbox): they are
        stored with it and replace any earlier ones, so save only once the
        earlier steps are done. Then show them and call `finish`, which acks and
        enqueues in their stead: a crash in between leaves the job pending, and
        whoever takes it over finds the steps in its snapshot.
        """
        saved = await self._write(
            session,
            expected_turn=expected_turn,
            consume_inbox=consume_inbox,
            expected_rev=expected_rev,
            release_lease=release_lease,
            steps=steps,
        )
        if saved is None:
            return False
        await self._done("saved")
        finished_now = saved.status_was != session.status.value and session.finished
        if finished_now:
            await self._settle_workspace(session)
            await self._done("settled")
        await self._queue_step(session, enqueue=enqueue_next, unlive=finished_now, ack=ack)
        return True

    async def save_and_read(
        self,
        session: Session,
        *,
        expected_turn: int,
        expected_rev: int,
        consume_inbox: int,
        steps: Sequence[str],
    ) -> Saved | None:
        """`save` (keeping the job and the lease), then read what a worker needs to take
        the next turn at once: the new rev and the inbox left. None on a refusal.
        1 round trip (2 when the turn finished the session: it leaves its workspace's
        sets): a worker that goes on with the session needs no snapshot.
        """
        saved = await self._write(
            session,
            expected_turn=expected_turn,
            consume_inbox=consume_inbox,
            expected_rev=expected_rev,
            steps=steps,
            _read_inbox=True,
        )
        if saved is not None and saved.status_was != session.status.value and session.finished:
            await self._done("saved")
            await self.settle(session)
        return saved

    async def _write(
        self,
        session: Session,
        *,
        expected_turn: int,
        consume_inbox: int = 0,
        expected_rev: int | None = None,
        release_lease: str | None = None,
        steps: Sequence[str] = (),
        _read_inbox: bool = False,
    ) -> Saved | None:
        """The fenced write, in the session's slot; with `_read_inbox`, also the inbox
        left after it."""
        if consume_inbox < 0:
            raise ValueError("consume_inbox must be >= 0")
        reply = await self._save(
            keys=[
                self._keys.session(session.id),
                self._keys.inbox(session.id),
                self._keys.posts(session.id),
                self._keys.lease(session.id),
            ],
            args=[
                session.model_dump_json(),
                session.next_turn,
                expected_turn,
                "" if expected_rev is None else expected_rev,
                len(session.turns),
                session.schema_version,
                session.status.value,
                consume_inbox,
                self._ttl_for(session.status),
                release_lease or "",
                json.dumps(list(steps)),
                self._inbox_max if _read_inbox else 0,
            ],
        )
        code = int(reply[0])
        if code != 1:
            log.info(
                "refused save of session %s at turn %s: %s",
                session.id,
                expected_turn,
                _REFUSALS.get(code, str(code)),
            )
            return None
        return Saved(
            rev=int(reply[1]),
            inbox=parse_entries(session.id, (text(e) for e in reply[2])),
            status_was=text(reply[3]),
        )

    async def settle(self, session: Session) -> None:
        """A finished session leaves the running-session sets and the live index, and its
        thread binding takes the finished TTL. Idempotent: whoever meets a finished
        session with this undone (a worker that died in between) does it again.
        2 round trips (the workspace's slot, then the live index's)."""
        await self._settle_workspace(session)
        await self._redis.hdel(self._keys.live, session.id)

    async def _settle_workspace(self, session: Session) -> None:
        o = session.origin
        team = o.team_id or NO_TEAM
        await self._settle(
            keys=[
                self._keys.thread(team, o.channel_id or "-", o.thread_ts or "-"),
                self._keys.running_user(team, o.user_id or "-"),
                self._keys.running_team(team),
                self._keys.running_channel(team, o.channel_id or "-"),
            ],
            args=[session.id, "1" if o.channel_id and o.thread_ts else "0", self.finished_ttl],
        )

    async def finish(
        self,
        session: Session,
        *,
        steps: Sequence[str],
        ack: Job | None = None,
        enqueue_next: bool = False,
        release_lease: str | None = None,
    ) -> bool:
        """The saved `steps` are shown: clear them, release the lease, then enqueue the
        session's next turn (`enqueue_next`, only if this call cleared them) and ack the
        job. 2 round trips (3 for a finished session), each in one slot.

        True if this call cleared them. False if they were no longer stored as
        given (another worker finished them): then nothing is enqueued, but the
        job is still acked and the lease released. A crash after the clear and
        before the enqueue leaves a running session with no job and no lease:
        the sweep queues it again.
        """
        if enqueue_next and session.finished:
            raise ValueError(f"session {session.id} is finished: it has no next turn")
        cleared = bool(
            int(
                await self._finish(
                    keys=[self._keys.session(session.id), self._keys.lease(session.id)],
                    args=[json.dumps(list(steps)), release_lease or ""],
                )
            )
        )
        await self._done("cleared")
        if session.finished:
            await self._settle_workspace(session)  # again: a crash may have cut the save's
            await self._done("settled")
        await self._queue_step(
            session, enqueue=cleared and enqueue_next, unlive=session.finished, ack=ack
        )
        return cleared
