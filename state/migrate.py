"""`sora-copilot migrate-keys`: data written by the key layout before workspaces and
hash tags (issue 19), moved to the current one. One Redis only (the old layout never ran
on a Redis Cluster); idempotent: a second run, or a run after a crash, moves what is left
and finds nothing else.

What moves, to its workspace (its session's `Origin.team_id`, the entry's or render's
own; `team_for_unknown` for what names none, else no workspace):

* each session's hash, inbox, post ledger and recorded posts (RENAME keeps their TTL);
  its thread binding; its live-index entry; a running or paused session's place in its
  workspace's running-session sets;
* the jobs and dead-letter streams' entries, each given its workspace (pending jobs
  become new ones: a job run twice is acked as moot);
* library entries (their TTL kept) and their indexes;
* render records (with the names of the budgets they reserved), their budgets and
  scheduled checks (a clip kept in Redis by an older build is dropped: its delivery
  downloads it from the vendor again).

What is not moved, and so lost at the upgrade: leases (a worker running then takes its
session again after LEASE_TTL_MS), an hour of Slack event dedupe (a retry Slack sends
across the upgrade may be acted on twice), per-channel post buckets and the chat.update
budget's last minute (both refill within a minute), and the sweep's lease.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bot.dialogue.models import SessionStatus
from state._text import text, text_map
from state.connection import is_cluster
from state.container import State
from state.errors import StateMisconfigured
from state.keys import NO_TEAM
from state.library import parse_entry
from state.queue import F_RENDER, F_SID, F_TURN, RENDER_TURN, job_fields


@dataclass
class Migrated:
    sessions: int = 0
    jobs: int = 0
    library_entries: int = 0
    renders: int = 0
    dropped: int = 0  # transient keys deleted (leases, dedupe marks, rate buckets)
    teams: set[str] = field(default_factory=set)

    def line(self) -> str:
        return (
            f"Moved {self.sessions} sessions, {self.jobs} jobs, {self.library_entries} library "
            f"entries and {self.renders} renders to the per-workspace key layout "
            f"({len(self.teams)} workspaces); deleted {self.dropped} short-lived keys."
        )


async def _scan(redis: Redis, pattern: str) -> list[str]:
    return [text(k) async for k in redis.scan_iter(match=pattern, count=1000)]


async def _move(redis: Redis, old: str, new: str) -> None:
    """RENAME, unless the new key exists already (a run cut short): then the old goes."""
    if not await redis.renamenx(old, new):
        await redis.delete(old)


async def migrate_keys(state: State, *, team_for_unknown: str | None = None) -> Migrated:
    """Move every key of the old layout under `state.keys.prefix`; what moved."""
    redis, k = state.redis, state.keys
    if is_cluster(redis):
        raise StateMisconfigured(
            "migrate-keys runs on the single Redis the old layout lived on, not on a cluster."
        )
    old = f"{k.prefix}:"
    done = Migrated()
    teams: dict[str, str] = {}  # sid -> its workspace

    def team_of(value: str | None) -> str:
        team = value or team_for_unknown or NO_TEAM
        done.teams.add(team)
        return team

    # ---- sessions, and what names them --------------------------------------------------
    for key in await _scan(redis, f"{old}session:*"):
        sid = key[len(f"{old}session:") :]
        raw = await redis.hget(key, "json")
        origin = json.loads(text(raw)).get("origin", {}) if raw is not None else {}
        status = text(await redis.hget(key, "status") or "")
        team = teams[sid] = team_of(origin.get("team_id"))
        for part, new in (
            ("inbox", k.inbox(sid)),
            ("posts", k.posts(sid)),
            ("recorded", k.recorded(sid)),
        ):
            if await redis.exists(f"{old}{part}:{sid}"):
                await _move(redis, f"{old}{part}:{sid}", new)
        channel, thread_ts = origin.get("channel_id"), origin.get("thread_ts")
        if channel and thread_ts and await redis.exists(f"{old}thread:{channel}:{thread_ts}"):
            await _move(
                redis, f"{old}thread:{channel}:{thread_ts}", k.thread(team, channel, thread_ts)
            )
        if status in (SessionStatus.RUNNING.value, SessionStatus.PAUSED.value):
            where = await redis.hget(f"{old}live", sid)
            if where is not None:
                await redis.hsetnx(k.live, sid, text(where))
            score = _ms(json.loads(text(raw)).get("created_at")) if raw is not None else 0
            sets = [k.running_team(team)]
            if origin.get("user_id"):
                sets.append(k.running_user(team, origin["user_id"]))
            if channel:
                sets.append(k.running_channel(team, channel))
            for s in sets:
                await redis.zadd(s, {sid: score}, nx=True)
        if origin.get("team_id") or team_for_unknown:
            await redis.zadd(k.workspace_sessions(team), {sid: _ms(None)}, nx=True)
        await _move(redis, key, k.session(sid))
        done.sessions += 1
    # Old keys naming no session that still exists: nothing would read them.
    for pattern in ("inbox:*", "posts:*", "recorded:*", "thread:*", "running:*"):
        for key in await _scan(redis, old + pattern):
            done.dropped += int(await redis.delete(key))

    # ---- the queue --------------------------------------------------------------------
    for stream, new in ((f"{old}jobs", k.jobs), (f"{old}jobs:dead", k.dead_letter)):
        if await redis.type(stream) != "stream":
            continue
        for _id, raw_fields in await redis.xrange(stream) or []:
            fields = text_map(raw_fields)
            sid = fields.get(F_SID, "")
            moved = dict(fields)
            if new == k.jobs:
                moved = job_fields(
                    sid,
                    int(fields.get(F_TURN, RENDER_TURN)),
                    teams.get(sid) or await _stored_team(state, sid, team_for_unknown),
                    fields.get(F_RENDER, ""),
                )
            else:
                moved["team"] = teams.get(sid, team_for_unknown or NO_TEAM)
            await redis.xadd(new, moved)  # type: ignore[arg-type]
            done.jobs += new == k.jobs
        await redis.delete(stream)
    await state.queue.ensure_group()

    # ---- the library ------------------------------------------------------------------
    for key in await _scan(redis, f"{old}library:prompt:*"):
        raw = await redis.get(key)
        if raw is not None:
            entry = parse_entry(text(raw))
            team = team_of(entry.team_id)
            if entry.team_id is None and team != NO_TEAM:
                entry = entry.model_copy(update={"team_id": team})
            ttl_ms = int(await redis.pttl(key))
            await state.library.add(entry)
            if ttl_ms > 0:
                await redis.pexpire(k.library_prompt(team, entry.id), ttl_ms)
            done.library_entries += 1
        await redis.delete(key)
    for pattern in ("library:all", "library:channel:*", "library:user:*"):
        for key in await _scan(redis, old + pattern):
            await redis.delete(key)

    # ---- renders ----------------------------------------------------------------------
    scheduled: list[Any] = await redis.zrange(f"{old}render:due", 0, -1, withscores=True)
    due = {text(m): float(s) for m, s in scheduled}
    for key in await _scan(redis, f"{old}render:*"):
        rest = key[len(f"{old}render:") :]
        if rest == "due" or ":" in rest or await redis.type(key) != "hash":
            continue
        h = {text(a): text(b) for a, b in (await redis.hgetall(key)).items()}
        record = json.loads(h.get("json", "{}"))
        team = team_of(record.get("team_id"))
        for name in ("team_key", "user_key"):
            budget = h.get(name, "")
            if budget.startswith(f"{old}render:budget:"):
                new_budget = _budget_key(state, budget[len(f"{old}render:budget:") :])
                if await redis.exists(budget):
                    await _move(redis, budget, new_budget)
                await redis.hset(key, name, new_budget)
        if rest in due:
            member = f"{rest} {team} {h.get('sid', '-')}"
            await redis.zadd(k.render_due, {member: due[rest]}, nx=True)
        await _move(redis, key, k.render(team, rest))
        done.renders += 1
    for key in await _scan(redis, f"{old}render:budget:*"):  # budgets of no render left
        await _move(redis, key, _budget_key(state, key[len(f"{old}render:budget:") :]))
    await redis.delete(f"{old}render:due")
    # Clips no longer sit in Redis (bot.render.jobs): a worker that finds none downloads
    # the clip from its vendor again.
    for key in await _scan(redis, f"{old}render:clip:*"):
        done.dropped += int(await redis.delete(key))

    # ---- short-lived keys: not moved (see the module's docstring) -----------------------
    for pattern in ("lease:*", "event:*", "ratelimit:*", "updates:*", "sweep", "live"):
        for key in await _scan(redis, old + pattern):
            done.dropped += int(await redis.delete(key))
    return done


def _budget_key(state: State, rest: str) -> str:
    """The new name of an old budget key's tail: team:<team>:<day> or
    user:<team>:<user>:<day>."""
    kind, _, tail = rest.partition(":")
    parts = tail.split(":")
    if kind == "user" and len(parts) == 3:
        return state.keys.render_budget_user(parts[0], parts[1], parts[2])
    return state.keys.render_budget_team(parts[0], parts[-1])


async def _stored_team(state: State, sid: str, team_for_unknown: str | None) -> str:
    session = await state.sessions.load(sid) if sid else None
    team = session.origin.team_id if session is not None else None
    return team or team_for_unknown or NO_TEAM


def _ms(iso: str | None) -> int:
    from datetime import UTC, datetime

    if not iso:
        return int(datetime.now(UTC).timestamp() * 1000)
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
