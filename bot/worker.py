"""The worker: takes turn jobs from the queue and drives the engine.

A job says "advance session S to turn N". The worker takes S's lease and a
snapshot in one step, applies what humans did (interjections, stop, lock,
retry), takes the turn through a surface, and persists it in one atomic save
that also acks the job and enqueues the next. The turn number fences every
write: a worker that lost the race writes nothing. A worker that dies leaves
its job pending; another takes it over (`reclaim`) and redoes the turn, and the
post ledger makes the surface update the earlier post instead of posting twice.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
from bot.driver import drive_turn
from bot.surfaces.base import Surface
from state import InboxEntry, Job, LibraryEntry, State

log = logging.getLogger("sora.worker")
RETRY_TAKE_S = 1.0


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 50
    lease_ttl_ms: int = 30_000
    reclaim_idle_ms: int = 60_000
    reclaim_every_s: float = 5.0
    block_ms: int = 1_000
    drain_s: float = 20.0  # on shutdown, how long in-flight turns may finish

    @classmethod
    def from_settings(cls, settings: Settings, *, concurrency: int | None = None) -> WorkerConfig:
        return cls(
            concurrency=concurrency or settings.worker_concurrency,
            lease_ttl_ms=settings.lease_ttl_ms,
            reclaim_idle_ms=settings.reclaim_idle_ms,
            reclaim_every_s=settings.reclaim_every_seconds,
            drain_s=settings.drain_seconds,
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
    ):
        self.state = state
        self.engine = engine
        self.surface = surface
        self.config = config
        self.name = name or worker_name()
        self.on_finished = on_finished
        self._tasks: set[asyncio.Task[None]] = set()
        self._working: dict[str, tuple[Job, str]] = {}  # job id -> (job, lease owner)

    # ---- the loop --------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Work until `stopping` is set; then stop taking jobs and drain."""
        await self.state.queue.ensure_group()
        heartbeat = asyncio.create_task(self._heartbeat())
        last_reclaim = 0.0
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
            except Exception:
                # A Redis blip must not end the worker: whatever it had not taken
                # stays in the queue. Back off a little and go on.
                log.exception("taking jobs failed; retrying in %.1f s", RETRY_TAKE_S)
                await asyncio.sleep(RETRY_TAKE_S)
            for job in jobs:
                task = asyncio.create_task(self.handle(job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await self._drain()
        heartbeat.cancel()

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
        for job in reclaimed.dead:
            await self._pause_dead(job)
        return list(reclaimed.jobs)

    # ---- one job -------------------------------------------------------------------------

    async def handle(self, job: Job) -> None:
        """Advance the job's session by one turn, or find that the job is moot."""
        owner = f"{self.name}:{job.id}"
        started = time.perf_counter()
        try:
            snap = await self.state.sessions.snapshot(
                job.session_id, lease_owner=owner, lease_ttl_ms=self.config.lease_ttl_ms
            )
        except Exception:
            log.exception("cannot read session %s; leaving job %s pending", job.session_id, job.id)
            return
        if snap is None:
            await self.state.queue.ack(job)  # the session expired or never existed
            return
        if not snap.leased:
            return  # another worker is on it; the job stays pending and comes back if needed
        session = snap.session
        if session.finished or session.next_turn != job.turn:
            await self._moot(job, owner)
            return

        self._working[job.id] = (job, owner)
        try:
            result = await self._advance(
                session, snap.inbox, snap.posts_for(job.turn), redo=job.deliveries > 1
            )
            saved = await self.state.sessions.save(
                session,
                expected_turn=job.turn,
                expected_rev=snap.rev,
                consume_inbox=len(snap.inbox),
                ack=job,
                enqueue_next=session.status == SessionStatus.RUNNING,
                release_lease=owner,
            )
        except Exception:
            # Slack or Redis failed past their retries: leave the job pending, so the
            # turn is redone (and, after MAX_DELIVERIES, set aside) instead of lost.
            log.exception(
                "session %s turn %s failed; job %s stays pending", job.session_id, job.turn, job.id
            )
            with contextlib.suppress(Exception):
                await self.state.leases.release(job.session_id, owner)
            return
        finally:
            self._working.pop(job.id, None)
        if not saved:
            await self._moot(job, owner)
            return
        if session.status != SessionStatus.RUNNING and self.on_finished is not None:
            self.on_finished(session)
        self._log_turn(session, job, result, time.perf_counter() - started)

    async def _advance(
        self,
        session: Session,
        inbox: list[InboxEntry],
        posted: Mapping[int, str],
        *,
        redo: bool,
    ) -> TurnResult | None:
        """Apply the inbox, take the turn if the session still runs, show the outcome."""
        before = len(session.turns)
        self._apply_inbox(session, inbox)
        for turn in session.turns[before:]:
            await self.surface.interjection_heard(session, turn)
        result = None
        if session.status == SessionStatus.RUNNING:
            result = await drive_turn(self.engine, session, self.surface, posted=posted, redo=redo)
        elif session.status == SessionStatus.LOCKED:
            await self.surface.session_locked(session)
        elif session.status == SessionStatus.STOPPED:
            await self.surface.session_stopped(session)
        if session.status == SessionStatus.LOCKED:
            # Before the save: a locked session refuses every later write.
            await self.state.library.add(LibraryEntry.from_session(session))
        return result

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
                    await self.state.heartbeat(job.session_id, owner, job=job, consumer=self.name)

    async def _pause_dead(self, job: Job) -> None:
        """A job that failed too often: pause its session so a human can Retry."""
        owner = f"{self.name}:{job.id}"
        snap = await self.state.sessions.snapshot(
            job.session_id, lease_owner=owner, lease_ttl_ms=self.config.lease_ttl_ms
        )
        if snap is None or not snap.leased:
            return
        session = snap.session
        if session.status == SessionStatus.RUNNING and session.next_turn == job.turn:
            session.status = SessionStatus.PAUSED
            session.error = (
                f"Turn {job.turn} failed {self.state.queue.max_deliveries} times in a row; "
                "it was set aside. Retry resumes it."
            )
            if await self.state.sessions.save(
                session, expected_turn=job.turn, expected_rev=snap.rev, release_lease=owner
            ):
                try:
                    await self.surface.session_paused(session)
                except Exception:
                    # The pause is saved; only its notice failed. The root shows it next time.
                    log.exception("session %s paused, but the notice failed", session.id)
                return
        await self.state.leases.release(job.session_id, owner)

    def _log_turn(
        self, session: Session, job: Job, result: TurnResult | None, seconds: float
    ) -> None:
        line: dict[str, object] = {
            "event": "turn",
            "worker": self.name,
            "session": session.id,
            "turn": job.turn,
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
                    "cache_read": u.cache_read_tokens,
                    "cache_write": u.cache_write_tokens,
                },
            )
        log.info(json.dumps(line))
