"""AfterAck: work handed off after a Slack ack, a bounded amount in progress at once."""

from __future__ import annotations

import asyncio

import pytest

from bot.background import AfterAck


class Gate:
    """Work that records its start and runs until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def work(self, i: int) -> None:
        self.started.append(i)
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.release.wait()
        self.running -= 1


async def test_below_the_limit_work_is_taken_at_once() -> None:
    after_ack, gate = AfterAck(limit=3), Gate()
    for i in range(3):
        await asyncio.wait_for(after_ack.submit(gate.work(i)), timeout=0.5)
    await asyncio.sleep(0)
    assert gate.started == [0, 1, 2] and after_ack.in_progress == 3
    gate.release.set()
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    assert after_ack.in_progress == 0


async def test_at_the_limit_submitters_wait_for_room_first_come_first_served() -> None:
    after_ack, gate = AfterAck(limit=2, max_wait_s=30), Gate()
    for i in range(2):
        await after_ack.submit(gate.work(i))
    # Five more listeners hand off work: none returns (so none acks) while two are in progress.
    waiting = [asyncio.create_task(after_ack.submit(gate.work(i))) for i in range(2, 7)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    assert gate.started == [0, 1]
    gate.release.set()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    assert gate.started == list(range(7))  # in arrival order
    assert gate.peak == 2


async def test_a_submitter_waits_at_most_max_wait_then_the_work_is_taken_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after_ack, gate = AfterAck(limit=1, max_wait_s=0.05), Gate()
    await after_ack.submit(gate.work(0))
    # Slack needs the ack within 3 s: a stuck piece of work must not hold every ack.
    await asyncio.wait_for(after_ack.submit(gate.work(1)), timeout=1)
    await asyncio.sleep(0)
    assert gate.started == [0, 1] and after_ack.in_progress == 2
    assert "overloaded: 1 handed off after Slack acks and still in progress" in caplog.text
    gate.release.set()
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    # The overflow held no permit, so the limit is whole again afterwards.
    after_ack.max_wait_s = 30
    second = Gate()
    await asyncio.wait_for(after_ack.submit(second.work(2)), timeout=0.5)
    waiting = asyncio.create_task(after_ack.submit(second.work(3)))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    second.release.set()
    await asyncio.wait_for(waiting, timeout=5)
    await asyncio.wait_for(after_ack.idle(), timeout=5)


async def test_sustained_overload_logs_one_warning_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after_ack, gate = AfterAck(limit=1, max_wait_s=0), Gate()
    for i in range(6):
        await after_ack.submit(gate.work(i))  # the first takes the room; five overflow
    warnings = [r for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(warnings) == 1  # not one line per request
    assert "overloaded: 1 handed off" in warnings[0].getMessage()
    assert "; 1 taken anyway" in warnings[0].getMessage()
    after_ack._warned_at = -1e9  # the interval has passed
    await after_ack.submit(gate.work(6))
    later = [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(later) == 2 and "; 5 taken anyway" in later[1]  # the four held back, and this one
    gate.release.set()
    await asyncio.wait_for(after_ack.idle(), timeout=5)


async def test_a_failure_is_logged_frees_its_room_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after_ack = AfterAck(limit=1, max_wait_s=30)
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("slack said no")

    async def ok(i: int) -> None:
        done.append(i)

    await after_ack.submit(boom())
    await asyncio.wait_for(after_ack.submit(ok(1)), timeout=1)
    await asyncio.wait_for(after_ack.submit(ok(2)), timeout=1)
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    assert done == [1, 2]
    assert "work after a Slack ack failed" in caplog.text
    assert "slack said no" in caplog.text


def test_a_limit_below_one_or_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        AfterAck(limit=0)
    with pytest.raises(ValueError):
        AfterAck(max_wait_s=-1)


class Pacer:
    """A channel's post token, handed out one at a time by the test."""

    def __init__(self) -> None:
        self.tokens = asyncio.Semaphore(0)
        self.waiting = 0

    async def pace(self) -> None:
        self.waiting += 1
        await self.tokens.acquire()
        self.waiting -= 1


async def test_work_waiting_for_its_channel_holds_no_room_and_runs_in_order() -> None:
    after_ack, pacer = AfterAck(limit=1, max_wait_s=5), Pacer()
    done: list[str] = []

    async def post(name: str) -> None:
        done.append(name)

    ahead = [after_ack.enqueue("C1", pacer.pace, post(f"c1-{i}")) for i in range(3)]
    assert ahead == [0, 1, 2] and after_ack.waiting_in("C1") == 3
    await asyncio.sleep(0)
    assert pacer.waiting == 1  # the line waits for one token at a time
    # The busy channel holds no room: work for anyone else is taken at once, even at limit 1.
    await asyncio.wait_for(after_ack.submit(post("ack-path")), timeout=0.5)
    other = Pacer()
    after_ack.enqueue("C2", other.pace, post("c2-0"))
    other.tokens.release()
    for _ in range(100):
        if "c2-0" in done:
            break
        await asyncio.sleep(0.01)
    assert done == ["ack-path", "c2-0"]
    for _ in range(3):
        pacer.tokens.release()
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    assert done == ["ack-path", "c2-0", "c1-0", "c1-1", "c1-2"]
    assert after_ack.waiting_in("C1") == 0


async def test_a_failing_pace_or_work_does_not_stop_the_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after_ack = AfterAck(limit=2)
    done: list[int] = []

    async def broken_pace() -> None:
        raise ConnectionError("redis went away")

    async def fine_pace() -> None:
        return None

    async def work(i: int) -> None:
        if i == 1:
            raise RuntimeError("slack said no")
        done.append(i)

    after_ack.enqueue("C1", broken_pace, work(0))
    after_ack.enqueue("C1", fine_pace, work(1))
    after_ack.enqueue("C1", fine_pace, work(2))
    await asyncio.wait_for(after_ack.idle(), timeout=5)
    assert done == [0, 2]
    assert "pacing line C1 failed" in caplog.text and "slack said no" in caplog.text
