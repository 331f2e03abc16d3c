"""`State`: every state object for one Redis and one key prefix, so callers pass one thing."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.config import Settings
from state.audit import AuditTrail
from state.dedupe import EventDedupe
from state.defaults import DefaultsStore
from state.erase import Eraser
from state.home import HomeSessions
from state.inbox import Inbox
from state.index import ThreadIndex
from state.keys import (
    AUDIT_MAXLEN,
    CONSUMER_GROUP,
    DEFAULT_PREFIX,
    EVENT_DEDUPE_TTL_S,
    FINISHED_SESSION_TTL_S,
    LEASE_TTL_MS,
    LIVE_SESSION_TTL_S,
    MAX_DELIVERIES,
    POST_BURST,
    POST_RATE_PER_S,
    Keys,
)
from state.lease import Lease
from state.library import PromptLibrary
from state.personas import TeamPersonas
from state.posts import PostLedger
from state.queue import Job, TurnQueue
from state.ratelimit import PostRateLimiter, Sleep
from state.renders import RenderStore
from state.running import RunningSessions
from state.search import LibraryIndex
from state.store import SessionStore
from state.sweep import Sweeper


@dataclass(frozen=True, kw_only=True)
class State:
    redis: Redis
    keys: Keys
    sessions: SessionStore
    threads: ThreadIndex
    inbox: Inbox
    dedupe: EventDedupe
    queue: TurnQueue
    leases: Lease
    ratelimit: PostRateLimiter
    library: PromptLibrary
    posts: PostLedger
    running: RunningSessions
    eraser: Eraser
    sweeper: Sweeper
    audit: AuditTrail
    index: LibraryIndex
    home: HomeSessions
    personas: TeamPersonas
    defaults: DefaultsStore
    renders: RenderStore

    def __post_init__(self) -> None:
        self.library.index = self.index
        self.eraser.index = self.index
        self.eraser.home = self.home

    @classmethod
    def create(
        cls,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        settings: Settings | None = None,
        finished_ttl_s: int | None = None,
        live_ttl_s: int | None = LIVE_SESSION_TTL_S,
        dedupe_ttl_s: int | None = None,
        library_ttl_s: int | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
        max_deliveries: int = MAX_DELIVERIES,
        post_rate_per_s: float = POST_RATE_PER_S,
        post_burst: int = POST_BURST,
        sleep: Sleep = asyncio.sleep,
    ) -> State:
        """Build everything. TTLs not given come from `settings`, then the defaults
        in `state.keys`. No I/O: call `await state.queue.ensure_group()` at startup."""
        if finished_ttl_s is None:
            finished_ttl_s = settings.session_ttl_seconds if settings else FINISHED_SESSION_TTL_S
        if dedupe_ttl_s is None:
            dedupe_ttl_s = settings.event_dedupe_ttl_seconds if settings else EVENT_DEDUPE_TTL_S
        keys = Keys(prefix=prefix)
        queue = TurnQueue(redis, keys, group=CONSUMER_GROUP, max_deliveries=max_deliveries)
        return cls(
            redis=redis,
            keys=keys,
            sessions=SessionStore(
                redis,
                keys,
                finished_ttl=finished_ttl_s,
                live_ttl=live_ttl_s,
                group=CONSUMER_GROUP,
            ),
            threads=ThreadIndex(redis, keys, ttl_s=live_ttl_s),
            inbox=Inbox(redis, keys, dedupe_ttl_s=dedupe_ttl_s),
            dedupe=EventDedupe(redis, keys, ttl_s=dedupe_ttl_s),
            queue=queue,
            leases=Lease(redis, keys, ttl_ms=lease_ttl_ms),
            ratelimit=PostRateLimiter(
                redis, keys, rate_per_s=post_rate_per_s, burst=post_burst, sleep=sleep
            ),
            library=PromptLibrary(
                redis,
                keys,
                ttl_s=library_ttl_s
                if library_ttl_s is not None
                else (settings.library_ttl_seconds if settings else 0),
            ),
            posts=PostLedger(redis, keys, default_ttl_s=live_ttl_s),
            running=RunningSessions(redis, keys, ttl_s=live_ttl_s),
            eraser=Eraser(redis, keys),
            sweeper=Sweeper(redis, keys, queue),
            audit=AuditTrail(
                redis, keys, maxlen=settings.audit_max_entries if settings else AUDIT_MAXLEN
            ),
            index=LibraryIndex(redis, keys),
            home=HomeSessions(redis, keys, ttl_s=live_ttl_s),
            personas=TeamPersonas(redis, keys),
            defaults=DefaultsStore(redis, keys),
            renders=RenderStore(redis, keys, group=CONSUMER_GROUP),
        )

    async def heartbeat(
        self,
        sid: str,
        owner: str,
        *,
        job: Job | None = None,
        consumer: str | None = None,
        ttl_ms: int | None = None,
    ) -> bool:
        """Keep a long turn's claims alive: renew the lease and, with `job` and
        `consumer`, reset the job's idle time so no other worker reclaims it.

        False when the lease is lost: stop working on the turn (its save would be
        refused anyway). Call every `lease ttl / 3` or so. 2 round trips (the lease is
        the session's slot, the job the queue's): the lease first, so a job is kept from
        reclaim only while its lease holds.
        """
        if not await self.leases.renew(sid, owner, ttl_ms or self.leases.ttl_ms):
            return False
        if job is not None and consumer:
            with contextlib.suppress(ResponseError):  # a missing group: nothing to keep
                await self.queue.touch(job, consumer)
        return True
