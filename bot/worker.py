"""The worker: takes turn jobs from the queue and drives the engine.

A job says "advance session S from turn N". The worker takes S's lease and a
snapshot in one step, applies what humans did (interjections, stop, lock,
retry), takes the turn (DECIDE), saves it in one fenced write together with
what is left to show of it (SAVE), then runs those steps through a surface
(SHOW). The save reads back the session's inbox, so the worker goes straight
on to the next turn under the same job and lease; when the session ends or
waits for a person, one last write clears the steps, acks the job and
releases the lease. The turn number fences every write: a worker that lost
the race writes nothing. A worker that dies before a save leaves its job
pending; another takes it over (`reclaim`) and redoes that turn, and the post
ledger and the posts' tags make the surface update the earlier post instead
of posting twice. One that dies after a save leaves the steps: the next one
shows them, and the model is not called again for that turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import metrics
from bot.config import Settings
from bot.dialogue.engine import (
    Engine,
    SessionError,
    TurnResult,
    add_interjection,
    lock,
    resume,
    stop,
)
from bot.dialogue.models import LockReason, Session, SessionStatus
from bot.driver import show, steps_after, take_turn
from bot.render.jobs import RenderRunner
from bot.sessions import BadInput
from bot.surfaces.base import Surface
from state import InboxEntry, Job, State, describe, is_full
from state.keys import NO_TEAM
from state.sweep import Lost

log = logging.getLogger("sora.worker")
RETRY_TAKE_S = 1.0
MAX_RETRY_TAKE_S = 8.0
# A job whose Redis command failed for want of a connection (Redis restarting, a failover)
# is tried again here, after 1, 2, 3... s, this many times, rather than left for
# RECLAIM_IDLE_MS: a restart then costs seconds. After that, reclaim takes it over.
LOCAL_RETRIES = 5
PROMOTE_EVERY_S = 0.5
# Redis out of reach for a moment: a read that timed out under load, a restart, a failover
# (redis-py's BusyLoadingError, a replica still loading, is a ConnectionError too).
TRANSIENT = (RedisConnectionError, RedisTimeoutError)


def log_failure(e: Exception, msg: str, *args: object) -> None:
    """Log a failure: one line for Redis out of reach for a moment (a read that timed out
    under load, a restart; the caller retries), a traceback for anything else (a bug)."""
    if isinstance(e, TRANSIENT):
        log.warning(msg + " (%s)", *args, describe(e))
    else:
        log.exception(msg, *args)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 50
    lease_ttl_ms: int = 30_000
    reclaim_idle_ms: int = 60_000
    reclaim_every_s: float = 5.0
    block_ms: int = 1_000
    drain_s: float = 20.0  # on shutdown, how long in-flight turns may finish
    sweep_every_s: float = 30.0  # see state.sweep; one worker at a time sweeps

    def __post_init__(self) -> None:
        if self.reclaim_idle_ms <= self.lease_ttl_ms:
            # A dead worker's job would be taken over while its lease still holds:
            # every take-over would find the session busy, count a delivery, and
            # dead-letter a job nobody ever ran.
            raise ValueError(
                f"RECLAIM_IDLE_MS ({self.reclaim_idle_ms}) must be longer than "
                f"LEASE_TTL_MS ({self.lease_ttl_ms}): a dead worker's job is taken "
                "over only once its lease has expired."
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, concurrency: int | None = None) -> WorkerConfig:
        """The worker's settings; raises BadInput, in one line, for settings that
        cannot work together."""
        try:
            return cls._from_settings(settings, concurrency)
        except ValueError as e:
            raise BadInput(str(e)) from None

    @classmethod
    def _from_settings(cls, settings: Settings, concurrency: int | None) -> WorkerConfig:
        return cls(
            concurrency=concurrency or settings.worker_concurrency,
            lease_ttl_ms=settings.lease_ttl_ms,
            reclaim_idle_ms=settings.reclaim_idle_ms,
            reclaim_every_s=settings.reclaim_every_seconds,
            drain_s=settings.drain_seconds,
            sweep_every_s=settings.sweep_every_seconds,
        )

    @property
    def heartbeat_every_s(self) -> float:
        return self.lease_ttl_ms / 3000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        *,
        state: State,
        engine: Engine,
        surface: Surface,
        config: WorkerConfig = WorkerConfig(),
        name: str | None = None,
        on_finished: Callable[[Session], None] | None = None,
        on_lost: Callable[[Lost], Awaitable[None]] | None = None,
        on_store_full: Callable[[Session, str], Awaitable[None]] | None = None,
        admit: Callable[[Session], Awaitable[str | None]] | None = None,
        renders: RenderRunner | None = None,
    ):
        """`on_lost`: how to tell a thread that its session's state is gone (the
        sweep finds those); without it they are only logged. `on_store_full`: how to
        tell a session's thread that its turn could not be saved because Redis is full."""
        self.state = state
        self.engine = engine
        self.surface = surface
        self.config = config
        self.name = name or worker_name()
        self.on_finished = on_finished
        self.on_lost = on_lost
        self.on_store_full = on_store_full
        # Whether this worker may run a session at all (OAuth mode: only sessions of a
        # workspace it has an installation for); the reason it may not, or None.
        self.admit = admit
        self.renders = renders
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: dict[str, tuple[Job, str]] = {}  # job id -> (job, lease owner)
        self._retries: dict[str, int] = {}  # job id -> local retries after Redis was away
        self._stopping = asyncio.Event()

    # ---- the loop --------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Work until `stopping` is set; then stop taking jobs and drain."""
        self._stopping = stopping
        await self.state.queue.ensure_group()
        heartbeat = asyncio.create_task(self._heartbeat())
        sweeping = asyncio.create_task(self._sweeping(stopping))
        promoting = asyncio.create_task(self._promoting(stopping))
        last_reclaim = 0.0
        failures = 0  # taking jobs failed this many times in a row
        while not stopping.is_set():
            free = self.config.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            jobs: list[Job] = []
            try:
                if time.monotonic() - last_reclaim >= self.config.reclaim_every_s:
                    last_reclaim = time.monotonic()
                    jobs += await self._reclaim(free)
                if free - len(jobs) > 0:
                    jobs += await self.state.queue.take(
                        self.name, count=free - len(jobs), block_ms=self.config.block_ms
                    )
                failures = 0
            except Exception as e:
                # A Redis blip must not end the worker: whatever it had not taken
                # stays in the queue. Back off (doubling, up to MAX_RETRY_TAKE_S) and go
                # on. A read that timed out under load is one line, not a traceback.
                failures += 1
                wait = min(RETRY_TAKE_S * 2 ** (failures - 1), MAX_RETRY_TAKE_S)
                metrics.redis_error("take_jobs")
                log_failure(e, "taking jobs failed; retrying in %.1f s", wait)
                await asyncio.sleep(wait)
            for job in jobs:
                task = asyncio.create_task(self.handle(job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await self._drain()
        heartbeat.cancel()
        sweeping.cancel()
        promoting.cancel()
        await asyncio.gather(sweeping, promoting, return_exceptions=True)
        if self.renders is not None:
            await self.renders.aclose()

    async def _promoting(self, stopping: asyncio.Event) -> None:
        """Put renders whose next check is due back on the queue (state.renders): a render
        waiting for its vendor holds no task and no slot in the meantime."""
        if self.renders is None:
            return
        while not stopping.is_set():
            try:
                await self.renders.promote()
            except Exception as e:
                log.warning("moving due renders failed (%s); trying again", describe(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PROMOTE_EVERY_S)

    async def _sweeping(self, stopping: asyncio.Event) -> None:
        """Sweep every `sweep_every_s` (the first one at start, so that a Redis that
        came back without the stream moves again at once)."""
        while not stopping.is_set():
            await self.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.config.sweep_every_s)

    async def sweep(self) -> None:
        """One sweep (`state.sweep`), unless another worker is sweeping now."""
        try:
            result = await self.state.sweeper.run(
                self.name, lease_ms=int(self.config.sweep_every_s * 1000)
            )
        except Exception as e:
            log.warning("the sweep failed (%s); it runs again later", describe(e))
            return
        if result is None:
            return
        for sid in result.requeued:
            log.warning("session %s was running with no job and no worker: re-queued", sid)
        for lost in result.lost:
            log.warning("session %s: its state is gone (lost by Redis)", lost.session_id)
            if self.on_lost is not None and lost.channel:
                try:
                    await self.on_lost(lost)
                except Exception as e:
                    log.warning("session %s: could not tell its thread: %r", lost.session_id, e)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.config.drain_s)
        for task in pending:
            task.cancel()  # its job stays unacknowledged for another worker
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _reclaim(self, count: int) -> list[Job]:
        reclaimed = await self.state.queue.reclaim(
            self.name, min_idle_ms=self.config.reclaim_idle_ms, count=count
        )
        metrics.leases_reclaimed(len(reclaimed.jobs))
        metrics.jobs_dead_lettered(len(reclaimed.dead))
        for job in reclaimed.dead:
            if job.render:
                if self.renders is not None:
                    await self.renders.fail_dead(job)
                continue
            await self._pause_dead(job)
        return list(reclaimed.jobs)

    # ---- one job -------------------------------------------------------------------------

    async def handle(self, job: Job) -> None:
        """Advance the job's session turn after turn, or find that the job is moot.

        Decide, save, then show: each turn is saved (with what is left to show of
        it) before any Slack step, so no Slack failure can make the model speak
        a saved turn twice. The job then carries the session on: the worker
        holds the lease and takes the next turn at once, with the rev and the
        inbox its save read back, until the session ends or waits for a person;
        then one last write clears the steps, acks the job and releases the
        lease. A worker that dies leaves the job pending and the last saved
        steps in the store: whoever takes the job over shows them (no model
        call) and carries on from the saved turn.
        """
        if job.render:
            await self._render(job)
            return
        owner = f"{self.name}:{job.id}"
        started = time.perf_counter()
        try:
            snap = await self.state.sessions.snapshot(
                job.session_id, lease_owner=owner, lease_ttl_ms=self.config.lease_ttl_ms
            )
        except Exception as e:
            metrics.redis_error_if(e, "read_session")
            if is_full(e):
                # The snapshot takes the lease, a write. A plain read still works: tell.
                log.error("cannot take session %s: %s", job.session_id, describe(e))
                with contextlib.suppress(Exception):
                    stored = await self.state.sessions.load(job.session_id)
                    if stored is not None:
                        await self._tell_full(stored, e)
            elif not self._again(job, e):
                log_failure(
                    e, "cannot read session %s; leaving job %s pending", job.session_id, job.id
                )
            return
        if snap is None:
            await self.state.queue.ack(job)  # the session expired or never existed
            return
        if not snap.leased:
            return  # another worker is on it; the job stays pending and comes back if needed
        session = snap.session
        refused = self._not_its_job(job, session)
        if refused is None and self.admit is not None:
            refused = await self.admit(session)
        if refused is not None:
            # Never run a session with another workspace's token: set the job aside.
            log.warning("session %s: job %s dead-lettered: %s", session.id, job.id, refused)
            await self.state.queue.bury(job, self.name, refused)
            await self.state.leases.release(job.session_id, owner)
            return
        if not snap.steps and (session.finished or session.next_turn != job.turn):
            if session.finished:
                # Its finishing writes may have been cut short by a crash: redo the last.
                await self.state.sessions.settle(session)
            await self._moot(job, owner)  # a duplicate, or a job already done
            return
        self._working[job.id] = (job, owner)
        steps, rev, inbox = snap.steps, snap.rev, snap.inbox
        posted, redo = snap.posts_for(session.next_turn), job.deliveries > 1
        phase = "show the saved steps of"
        try:
            while True:
                await show(self.surface, session, steps, library=self.state.library)
                if session.finished or (session.status != SessionStatus.RUNNING and not inbox):
                    break
                if self._stopping.is_set() and rev != snap.rev:
                    # Draining, after a turn saved here: hand the session on (the
                    # finish enqueues its next turn for another worker).
                    break
                phase = "take"
                turn, before = session.next_turn, session.status
                result, steps = await self._decide(session, inbox, posted, redo=redo)
                phase = "save"
                saved = await self.state.sessions.save_and_read(
                    session,
                    expected_turn=turn,
                    expected_rev=rev,
                    consume_inbox=len(inbox),
                    steps=steps,
                )
                if saved is None:
                    await self._moot(job, owner)  # someone else advanced it (a stalled lease)
                    return
                self._log_turn(session, job, turn, result, time.perf_counter() - started)
                await self._changed(before, session)
                started = time.perf_counter()
                rev, inbox, posted, redo = saved.rev, saved.inbox, {}, False
                phase = "show"
            phase = "finish"
            await self.state.sessions.finish(
                session,
                steps=steps,
                ack=job,
                enqueue_next=session.status == SessionStatus.RUNNING,
                release_lease=owner,
            )
        except Exception as e:
            # Left pending: whoever takes the job over shows a saved turn from its
            # steps (no model call), or takes an unsaved one again.
            metrics.redis_error_if(e, phase)
            if is_full(e):
                log.error(
                    "session %s: could not %s turn %s: %s; job %s stays pending",
                    job.session_id,
                    phase,
                    session.next_turn,
                    describe(e),
                    job.id,
                )
                with contextlib.suppress(Exception):
                    await self.state.leases.release(job.session_id, owner)
                await self._tell_full(session, e)
                return
            if self._again(job, e):
                return  # the lease stays ours: the retry (same owner) takes it back at once
            log_failure(
                e,
                "session %s: could not %s turn %s; job %s stays pending%s",
                job.session_id,
                phase,
                session.next_turn,
                job.id,
                " (the save may have landed: then it is shown, not redone)"
                if phase == "save"
                else "",
            )
            with contextlib.suppress(Exception):
                await self.state.leases.release(job.session_id, owner)
            return
        finally:
            self._working.pop(job.id, None)
        self._retries.pop(job.id, None)
        self._finished(session)

    @staticmethod
    def _not_its_job(job: Job, session: Session) -> str | None:
        """Why `job` must not run `session`: the job names another workspace than the
        session's own (a job written by hand, or by another deployment sharing the Redis)."""
        team = session.origin.team_id or NO_TEAM
        # A job naming no workspace (an older build's, or one queued by hand) is judged
        # by `admit` alone.
        if job.team not in ("", NO_TEAM) and job.team != team:
            return f"the job names workspace {job.team}, the session is of workspace {team}"
        return None

    async def _changed(self, before: SessionStatus, session: Session) -> None:
        """A saved turn moved the session: count it, and put every lock in the audit trail."""
        metrics.session_changed(before, session)
        locked = session.locked
        if (
            before != SessionStatus.LOCKED
            and locked is not None
            and session.status == SessionStatus.LOCKED
            and session.origin.surface == "slack"
        ):
            await self.state.audit.record(
                session.origin.team_id,
                "locked",
                session=session.id,
                actor_name=locked.locked_by,
                detail=f"v{locked.draft.version}, {locked.reason.value}",
            )

    async def _tell_full(self, session: Session, e: Exception) -> None:
        if self.on_store_full is None:
            return
        try:
            await self.on_store_full(session, describe(e))
        except Exception as err:
            log.warning("session %s: cannot say that Redis is full: %r", session.id, err)

    def _again(self, job: Job, e: Exception) -> bool:
        """Try `job` again soon if `e` is Redis out of reach (a restart, a failover: the
        pool reconnects once Redis is back); False if it is not, or tried enough."""
        if not isinstance(e, TRANSIENT):
            return False
        n = self._retries.get(job.id, 0) + 1
        if n > LOCAL_RETRIES or self._stopping.is_set():
            self._retries.pop(job.id, None)
            return False
        self._retries[job.id] = n
        log.warning(
            "session %s: Redis out of reach (%s); job %s tried again in %.0f s",
            job.session_id,
            describe(e),
            job.id,
            RETRY_TAKE_S * n,
        )

        async def later() -> None:
            try:
                await asyncio.sleep(RETRY_TAKE_S * n)
                if not self._stopping.is_set():
                    await self.handle(job)
            finally:
                if self._retries.get(job.id) == n:  # not failed again: done with it
                    self._retries.pop(job.id, None)

        task = asyncio.create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _render(self, job: Job) -> None:
        """One step of a render (bot.render.jobs); the job stays pending if it fails."""
        if self.renders is None:
            log.warning("render job %s: this worker does not render; left for another", job.id)
            return
        owner = f"{self.name}:{job.id}"
        self._working[job.id] = (job, owner)
        try:
            await self.renders.handle(job, owner)
        except Exception as e:
            log_failure(e, "render %s: step failed; job %s stays pending", job.render, job.id)
        finally:
            self._working.pop(job.id, None)

    def _finished(self, session: Session) -> None:
        if session.status != SessionStatus.RUNNING and self.on_finished is not None:
            self.on_finished(session)

    async def _decide(
        self,
        session: Session,
        inbox: list[InboxEntry],
        posted: Mapping[int, str],
        *,
        redo: bool,
    ) -> tuple[TurnResult | None, list[str]]:
        """Apply the inbox and take the turn if the session still runs; what to show after."""
        before = len(session.turns)
        self._apply_inbox(session, inbox)
        heard = session.turns[before:]
        result = None
        if session.status == SessionStatus.RUNNING:
            result = await take_turn(self.engine, session, self.surface, posted=posted, redo=redo)
        return result, steps_after(session, heard=heard, result=result)

    def _apply_inbox(self, session: Session, entries: list[InboxEntry]) -> None:
        """What humans did since the last turn, in arrival order. Refusals change nothing."""
        for e in entries:
            try:
                if e.kind == "interjection":
                    add_interjection(
                        session, author=e.author, text=e.text, source_id=e.source_id, at=e.at
                    )
                elif e.kind == "stop":
                    stop(session, by=e.author)
                elif e.kind == "lock":
                    lock(session, by=e.author, reason=LockReason.HUMAN, at=e.at, version=e.version)
                elif e.kind == "retry":
                    resume(session)
            except SessionError as err:
                log.info("session %s: ignored %s from %s: %s", session.id, e.kind, e.author, err)

    async def _moot(self, job: Job, owner: str) -> None:
        await self.state.queue.ack(job)
        await self.state.leases.release(job.session_id, owner)

    async def _heartbeat(self) -> None:
        """Keep every turn in flight claimed: its lease renewed, its job not idle.

        One loop for the whole worker rather than a task per turn: most turns end
        long before their first heartbeat is due.
        """
        while True:
            await asyncio.sleep(self.config.heartbeat_every_s)
            for job, owner in list(self._working.values()):
                with contextlib.suppress(Exception):
                    await self.state.heartbeat(
                        job.lease_name,
                        owner,
                        job=job,
                        consumer=self.name,
                        ttl_ms=self.config.lease_ttl_ms,
                    )

    async def _pause_dead(self, job: Job) -> None:
        """A job that failed too often: pause its session so a human can Retry.

        Whoever holds the lease, if the job's turn is the session's: the write is
        fenced by the session's rev, so a worker still on the turn (its save
        refused) cannot undo the pause. The pause is saved with its steps and a
        job that shows them.
        """
        owner = f"{self.name}:{job.id}"
        snap = await self.state.sessions.snapshot(
            job.session_id, lease_owner=owner, lease_ttl_ms=self.config.lease_ttl_ms
        )
        if snap is None:
            return
        session = snap.session
        if session.status != SessionStatus.RUNNING or (
            session.next_turn != job.turn and (not snap.steps or not snap.leased)
        ):
            # Finished or paused already, or carried on by a later job or by a live
            # worker (its own job holds the lease): nothing is stuck.
            await self.state.leases.release(job.session_id, owner)
            return
        session.status = SessionStatus.PAUSED
        session.error = (
            f"Turn {job.turn} failed {self.state.queue.max_deliveries} times in a row; "
            "it was set aside. Retry resumes it."
        )
        steps = [*snap.steps, *steps_after(session)]
        if not await self.state.sessions.save(
            session,
            expected_turn=session.next_turn,
            expected_rev=snap.rev,
            steps=steps,
            enqueue_next=True,
            release_lease=owner,
        ):
            log.warning("session %s changed while its dead job was set aside", session.id)
            await self.state.leases.release(job.session_id, owner)

    def _log_turn(
        self, session: Session, job: Job, turn: int, result: TurnResult | None, seconds: float
    ) -> None:
        line: dict[str, object] = {
            "event": "turn",
            "worker": self.name,
            "session": session.id,
            "turn": turn,
            "job": job.id,
            "status": session.status.value,
            "latency_ms": round(seconds * 1000, 1),
        }
        if result is not None:
            u = result.turn.usage
            line.update(
                speaker=result.turn.speaker.value,
                round=result.turn.round,
                model=result.turn.model,
                tokens={
                    "input": u.input_tokens,
                    "output": u.output_tokens,
                    "thinking": u.thinking_tokens,
                    "cache_read": u.cache_read_tokens,
                    "cache_write": u.cache_write_tokens,
                },
            )
        log.info(json.dumps(line))
