"""Writes that span several Redis Cluster slots are ordered steps, each in one slot: a
process stopped between any two of them loses no turn, shows nothing twice, and leaves
nothing that holds a slot or a running session for good.

A stop is simulated where `SessionStore.after_step` names the step just done: the
hook raises CancelledError, which no `except Exception` in the worker catches, so its
task ends there as if the process had died (the lease stays held until it lapses, the
job stays pending until another worker reclaims it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bot.dialogue.models import Session, SessionStatus
from bot.surfaces.recording import recorded
from bot.worker import Worker, WorkerConfig
from state import State
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, make_session
from tests.support import wait_until
from tests.test_worker import started  # noqa: F401  (the fixture)

ON_CLUSTER_TOO = True  # each test on one Redis, then on the Redis Cluster

FAST = WorkerConfig(
    concurrency=10,
    lease_ttl_ms=600,
    reclaim_idle_ms=900,
    reclaim_every_s=0.2,
    block_ms=50,
    drain_s=0.5,
    sweep_every_s=0.3,
)


class Stopped:
    """An `after_step` hook that stops the writer once, after the named step."""

    def __init__(self, step: str, *, nth: int = 1) -> None:
        self.step, self.left, self.hit = step, nth, False

    async def __call__(self, step: str) -> None:
        if step != self.step or self.hit:
            return
        self.left -= 1
        if self.left == 0:
            self.hit = True
            raise asyncio.CancelledError(f"stopped after {step}")


@pytest.fixture
def workers(started: Callable[..., Worker]) -> Callable[[], Worker]:  # noqa: F811
    return lambda: started(config=FAST)


async def locked_in_the_end(state: State, sid: str) -> Session:
    async def done() -> Session | None:
        s = await state.sessions.load(sid)
        return s if s is not None and s.status == SessionStatus.LOCKED else None

    session: Session = await wait_until(done, "the session to lock", within=40)
    return session


async def nothing_left_behind(state: State, session: Session) -> None:
    """No job, no live entry, no running slot: the session is done everywhere."""
    k, o = state.keys, session.origin
    assert o.team_id and o.user_id and o.channel_id

    async def clean() -> bool:
        stats = await state.queue.stats()
        return (
            stats.backlog == 0
            and not await state.redis.hexists(k.live, session.id)
            and await state.running.count_user(o.user_id or "", o.team_id) == 0
        )

    await wait_until(clean, "the jobs acked and the sets emptied", within=20)
    assert await state.running.count_team(o.team_id) == 0
    assert await state.running.count_channel(o.channel_id, o.team_id) == 0


def each_turn_once(session: Session, events: list[dict[str, Any]]) -> None:
    assert [t.index for t in session.turns] == list(range(len(session.turns)))
    posts = [e["turn"] for e in events if e["kind"] == "post"]
    assert sorted(posts) == list(range(len(session.agent_turns))), posts


async def started_session(state: State) -> Session:
    session = make_session(max_rounds=2)
    o = session.origin
    assert await state.running.try_add(session.id, o.user_id, o.team_id, max_user=5, max_team=5)
    return session


@pytest.mark.parametrize("step", ["live", "filed"])
async def test_a_create_stopped_before_the_session_is_written_is_reported_lost(
    real_state: State, step: str
) -> None:
    session = await started_session(real_state)
    real_state.sessions.after_step = Stopped(step)
    with pytest.raises(asyncio.CancelledError):
        await real_state.sessions.create(session, enqueue=True)
    assert await real_state.sessions.load(session.id) is None
    assert (await real_state.queue.stats()).backlog == 0  # no job for a session not written
    young = await real_state.sweeper.run("w", lease_ms=5000)
    assert young is not None and young.lost == []  # within the grace: maybe being created
    real_state.sweeper.grace_ms = 0
    swept = await real_state.sweeper.run("w", lease_ms=5000)
    assert swept is not None and [lost.session_id for lost in swept.lost] == [session.id]
    assert not await real_state.redis.hexists(real_state.keys.live, session.id)


async def test_a_create_stopped_before_its_job_is_queued_by_the_sweep(
    real_state: State, workers: Callable[..., Worker]
) -> None:
    session = await started_session(real_state)
    real_state.sessions.after_step = Stopped("session")
    with pytest.raises(asyncio.CancelledError):
        await real_state.sessions.create(session, enqueue=True)
    assert (await real_state.queue.stats()).backlog == 0
    workers()
    done = await locked_in_the_end(real_state, session.id)
    each_turn_once(done, await recorded(real_state.redis, real_state.keys, session.id))
    await nothing_left_behind(real_state, done)


@pytest.mark.parametrize(
    "step",
    [
        "saved",  # the finishing turn saved; its workspace's sets not yet left
        "cleared",  # its steps shown and cleared; sets, live index and job not yet done
        "settled",  # the sets left; the live index and the job's ack not yet done
    ],
)
async def test_a_worker_stopped_between_the_steps_of_a_write_loses_and_repeats_nothing(
    real_state: State, workers: Callable[..., Worker], step: str
) -> None:
    session = await started_session(real_state)
    await real_state.sessions.create(session, enqueue=True)
    stop = Stopped(step)
    real_state.sessions.after_step = stop
    workers()
    await wait_until(lambda: stop.hit, f"a write stopped after {step}", within=40)
    done = await locked_in_the_end(real_state, session.id)
    each_turn_once(done, await recorded(real_state.redis, real_state.keys, session.id))
    await nothing_left_behind(real_state, done)


@pytest.mark.parametrize("step", ["saved", "settled"])
async def test_a_one_turn_save_stopped_before_its_queue_step_is_carried_on(
    real_state: State, workers: Callable[..., Worker], step: str
) -> None:
    """`save(..., enqueue_next=True, ack=job)` stopped before the MULTI that enqueues the
    next turn and acks this one: the job comes back as moot, the sweep queues the turn."""
    session = await started_session(real_state)
    await real_state.sessions.create(session, enqueue=True)
    await real_state.queue.ensure_group()
    [job] = await real_state.queue.take("manual")
    owner = f"manual:{job.id}"
    snap = await real_state.sessions.snapshot(session.id, lease_owner=owner)
    assert snap is not None and snap.leased
    turn = agent_turn(snap.session)
    if step == "settled":  # this write finishes the session: it has a settle step
        from tests.redis_fixtures import locked

        turn = locked(turn)
    real_state.sessions.after_step = Stopped(step)
    with pytest.raises(asyncio.CancelledError):
        await real_state.sessions.save(
            turn,
            expected_turn=job.turn,
            expected_rev=snap.rev,
            ack=job,
            enqueue_next=not turn.finished,
            release_lease=owner,
        )
    real_state.sessions.after_step = None
    assert (await real_state.queue.stats()).pending == 1  # not acked: nothing was lost
    workers()
    done = await locked_in_the_end(real_state, session.id)
    assert [t.index for t in done.turns] == list(range(len(done.turns)))
    await nothing_left_behind(real_state, done)
