"""The session store: sessions as JSON in Redis, written by one worker at a time.

A session is a hash:

    json      the Session (pydantic JSON, carries schema_version)
    turn      Session.next_turn: the fencing token of "advance S to turn N" jobs
    rev       +1 on every write: an exact compare-and-set token for `save`
    messages  transcript length, so the store can refuse a shrinking transcript
    schema    schema version of `json`
    status    Session.status, readable without parsing the JSON

Web processes only `create` sessions; afterwards the worker holding the
session's lease is the single writer, through `save`, one Lua script that in
one atomic step:

  * refuses a stale write: the stored turn is not `expected_turn` (or the stored
    rev is not `expected_rev`), the session is finished (locked and stopped are
    terminal), the transcript would shrink (it is append-only), or the stored
    schema is newer than this build's;
  * writes the session and removes the first `consume_inbox` inbox entries,
    the ones the turn applied (entries pushed since stay);
  * gives the session and its inbox, post ledger and thread binding the
    finished TTL when the session is finished (the live TTL otherwise), and
    frees its running-session slots when it finishes;
  * optionally enqueues the next turn's job, acks the current job, and
    releases the lease, so a worker turn ends in one round trip, and a crash
    anywhere before it leaves the job pending and nothing half-written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
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
    Keys,
)
from state.posts import parse_ledger
from state.queue import F_SID, F_TURN, Job

log = logging.getLogger(__name__)

# Schema versions this build can read. A migration for an older version would go
# here; a newer version means a newer build wrote it, and we must not touch it.
KNOWN_SCHEMAS = frozenset({SCHEMA_VERSION})
_KNOWN_ARG = "," + ",".join(str(v) for v in sorted(KNOWN_SCHEMAS)) + ","

# KEYS: session, thread, jobs, live, the workspace's sessions.
# ARGV: json, turn, messages, schema, status, ttl s (0: none), has_thread, sid,
#       turn to enqueue ('' for none), jobs maxlen, where (the live index's value; ''
#       for a finished session, which is not indexed), now ms ('' for no workspace),
#       the oldest score the workspace's index keeps.
_CREATE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {{0, ''}} end
local job = ''
if ARGV[9] ~= '' then
  job = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*',
                   '{F_SID}', ARGV[8], '{F_TURN}', ARGV[9])
end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'turn', ARGV[2], 'rev', 1,
           'messages', ARGV[3], 'schema', ARGV[4], 'status', ARGV[5])
if ARGV[7] == '1' then redis.call('SET', KEYS[2], ARGV[8]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[4], ARGV[8], ARGV[11]) end
if ARGV[12] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[12], ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[13])
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  if ARGV[7] == '1' then redis.call('EXPIRE', KEYS[2], ttl) end
end
return {{1, job}}
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

# Ack (and delete) job `id` ('' for none) and drop the lease if `owner` ('' for
# none) holds it. pcall: a missing group must not fail a write already made.
_ACK_AND_RELEASE = """
local function ack_and_release(jobs, group, id, lease, owner)
  if id ~= '' then
    redis.pcall('XACK', jobs, group, id)
    redis.pcall('XDEL', jobs, id)
  end
  if owner ~= '' and redis.call('GET', lease) == owner then
    redis.call('DEL', lease)
  end
end
"""

# KEYS: 1 session, 2 inbox, 3 posts, 4 lease, 5 jobs, 6 thread, 7 running user,
#       8 running team, 9 live.
# ARGV: 1 json, 2 new turn, 3 expected turn, 4 expected rev (''), 5 messages,
#       6 schema, 7 status, 8 finished, 9 consume, 10 ttl s (0: none), 11 ack id (''),
#       12 group, 13 turn to enqueue (''), 14 sid, 15 jobs maxlen, 16 lease owner to
#       release (''), 17 has thread, 18 has user, 19 has team, 20 steps (JSON list),
#       21 inbox entries to read back (0: none).
# Returns {code, rev, enqueued job id}; code 1 ok, 0 stale, -1 no session,
# -2 transcript would shrink, -3 session already finished, -4 newer schema stored.
# Everything that can fail (XADD) runs before the first write: a script error
# does not roll back writes made before it.
_SAVE = (
    _ACK_AND_RELEASE
    + f"""
local cur = redis.call('HMGET', KEYS[1], 'turn', 'rev', 'messages', 'schema', 'status')
if not cur[1] then return {{-1, 0, ''}} end
if tonumber(cur[1]) ~= tonumber(ARGV[3]) then return {{0, 0, ''}} end
if ARGV[4] ~= '' and tonumber(cur[2]) ~= tonumber(ARGV[4]) then return {{0, 0, ''}} end
if cur[5] == 'locked' or cur[5] == 'stopped' then return {{-3, 0, ''}} end
if tonumber(ARGV[5]) < tonumber(cur[3]) or tonumber(ARGV[2]) < tonumber(cur[1]) then
  return {{-2, 0, ''}}
end
if tonumber(ARGV[6]) < tonumber(cur[4]) then return {{-4, 0, ''}} end
local job = ''
if ARGV[13] ~= '' then
  job = redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[15], '*',
                   '{F_SID}', ARGV[14], '{F_TURN}', ARGV[13])
end
local rev = tonumber(cur[2]) + 1
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'turn', ARGV[2], 'rev', rev,
           'messages', ARGV[5], 'schema', ARGV[6], 'status', ARGV[7], 'steps', ARGV[20])
local n = tonumber(ARGV[9])
if n > 0 then redis.call('LTRIM', KEYS[2], n, -1) end
local ttl = tonumber(ARGV[10])
local owned = {{KEYS[1], KEYS[2], KEYS[3]}}
if ARGV[17] == '1' then owned[#owned + 1] = KEYS[6] end
for _, k in ipairs(owned) do
  if ttl > 0 then redis.call('EXPIRE', k, ttl) else redis.call('PERSIST', k) end
end
if ARGV[8] == '1' then
  redis.call('HDEL', KEYS[9], ARGV[14])
  if ARGV[18] == '1' then redis.call('ZREM', KEYS[7], ARGV[14]) end
  if ARGV[19] == '1' then redis.call('ZREM', KEYS[8], ARGV[14]) end
end
ack_and_release(KEYS[5], ARGV[12], ARGV[11], KEYS[4], ARGV[16])
local inbox = {{}}
if tonumber(ARGV[21]) > 0 then inbox = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[21]) - 1) end
return {{1, rev, job, inbox}}
"""
)

# KEYS: 1 session, 2 jobs, 3 lease. ARGV: 1 steps shown (JSON, as saved), 2 ack id
# (''), 3 group, 4 turn to enqueue (''), 5 sid, 6 jobs maxlen, 7 lease owner ('').
# The steps are cleared, and the next job enqueued, only if the stored steps are
# still the ones shown: a second finisher (a stalled worker waking up) adds no job.
# Returns 1 if this call cleared them, 0 if they were already cleared or replaced.
_FINISH = (
    _ACK_AND_RELEASE
    + f"""
local cur = redis.call('HGET', KEYS[1], 'steps')
local cleared = 0
if cur and cur == ARGV[1] then
  if ARGV[4] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
               '{F_SID}', ARGV[5], '{F_TURN}', ARGV[4])
  end
  redis.call('HSET', KEYS[1], 'steps', '[]')
  cleared = 1
end
ack_and_release(KEYS[2], ARGV[3], ARGV[2], KEYS[3], ARGV[7])
return cleared
"""
)

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
    """The live index's value of a session: where to tell people if its state is lost
    ("<channel> <thread ts> <team>"; "-" for a session with no Slack thread)."""
    o = session.origin
    if not (o.channel_id and o.thread_ts):
        return "-"
    return f"{o.channel_id} {o.thread_ts} {o.team_id or '-'}"


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
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._save = redis.register_script(_SAVE)
        self._finish = redis.register_script(_FINISH)

    def _ttl_for(self, status: SessionStatus) -> int:
        return self.finished_ttl if status.finished else (self.live_ttl or 0)

    async def create(self, session: Session, *, enqueue: bool = False) -> str | None:
        """Store a new session; raises `SessionExists` if the id is taken. 1 round trip.

        Also binds the session's origin thread (if it has one) in the thread
        index and, with `enqueue`, adds the job for its next turn, atomically:
        no session without its job. Returns the job id when one was enqueued.
        """
        origin = session.origin
        thread = origin.channel_id and origin.thread_ts
        now_ms = int(time.time() * 1000)
        code, job = await self._create(
            keys=[
                self._keys.session(session.id),
                self._keys.thread(origin.channel_id or "-", origin.thread_ts or "-"),
                self._keys.jobs,
                self._keys.live,
                self._keys.workspace_sessions(origin.team_id or "-"),
            ],
            args=[
                session.model_dump_json(),
                session.next_turn,
                len(session.turns),
                session.schema_version,
                session.status.value,
                self._ttl_for(session.status),
                "1" if thread else "0",
                session.id,
                str(session.next_turn) if enqueue else "",
                self._jobs_maxlen,
                "" if session.finished else live_where(session),
                # The workspace's index of its sessions (for uninstalling), pruned of ids
                # older than any session can live.
                str(now_ms) if origin.team_id else "",
                str(now_ms - 1000 * max(self.finished_ttl, self.live_ttl or 0)),
            ],
        )
        if not int(code):
            raise SessionExists(f"session {session.id} already exists; sessions are create-only")
        return text(job) or None

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
        """Write `session` if the stored one is still at `expected_turn`. 1 round trip.

        Returns False, writing nothing at all, on a refusal (see the module
        docstring; the reason is logged). `expected_rev` (from `snapshot`) makes
        it an exact compare-and-set, which also fences saves that do not advance
        the turn (pause, resume, stop): pass it whenever you have it.

        In the same atomic step: remove the first `consume_inbox` inbox entries,
        `ack` the job, with `enqueue_next` add the job "advance to
        session.next_turn", and with `release_lease` drop the lease if that
        owner holds it. On a refusal none of these happen: ack the (moot) job and
        release the lease yourself.

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
            ack=ack,
            enqueue_next=enqueue_next,
            release_lease=release_lease,
            steps=steps,
        )
        return saved is not None

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
        1 round trip: a worker that goes on with the session needs no snapshot.
        """
        return await self._write(
            session,
            expected_turn=expected_turn,
            consume_inbox=consume_inbox,
            expected_rev=expected_rev,
            steps=steps,
            _read_inbox=True,
        )

    async def _write(
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
        _read_inbox: bool = False,
    ) -> Saved | None:
        """`save`; with `_read_inbox`, also the inbox left after the write."""
        if consume_inbox < 0:
            raise ValueError("consume_inbox must be >= 0")
        if enqueue_next and session.finished:
            raise ValueError(f"session {session.id} is finished: it has no next turn")
        origin = session.origin
        thread = origin.channel_id and origin.thread_ts
        reply = await self._save(
            keys=[
                self._keys.session(session.id),
                self._keys.inbox(session.id),
                self._keys.posts(session.id),
                self._keys.lease(session.id),
                self._keys.jobs,
                self._keys.thread(origin.channel_id or "-", origin.thread_ts or "-"),
                self._keys.running_user(origin.user_id or "-"),
                self._keys.running_team(origin.team_id or "-"),
                self._keys.live,
            ],
            args=[
                session.model_dump_json(),
                session.next_turn,
                expected_turn,
                "" if expected_rev is None else expected_rev,
                len(session.turns),
                session.schema_version,
                session.status.value,
                "1" if session.finished else "0",
                consume_inbox,
                self._ttl_for(session.status),
                ack.id if ack is not None else "",
                self._group,
                str(session.next_turn) if enqueue_next else "",
                session.id,
                self._jobs_maxlen,
                release_lease or "",
                "1" if thread else "0",
                "1" if origin.user_id else "0",
                "1" if origin.team_id else "0",
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
        inbox = reply[3] if len(reply) > 3 else []
        return Saved(rev=int(reply[1]), inbox=parse_entries(session.id, (text(e) for e in inbox)))

    async def finish(
        self,
        session: Session,
        *,
        steps: Sequence[str],
        ack: Job | None = None,
        enqueue_next: bool = False,
        release_lease: str | None = None,
    ) -> bool:
        """The saved `steps` are shown: clear them, and in the same step ack the job,
        enqueue the session's next turn (`enqueue_next`) and release the lease.
        1 round trip.

        True if this call cleared them. False if they were no longer stored as
        given (another worker finished them): then nothing is enqueued, but the
        job is still acked and the lease released.
        """
        if enqueue_next and session.finished:
            raise ValueError(f"session {session.id} is finished: it has no next turn")
        cleared = await self._finish(
            keys=[self._keys.session(session.id), self._keys.jobs, self._keys.lease(session.id)],
            args=[
                json.dumps(list(steps)),
                ack.id if ack is not None else "",
                self._group,
                str(session.next_turn) if enqueue_next else "",
                session.id,
                self._jobs_maxlen,
                release_lease or "",
            ],
        )
        return bool(int(cleared))
