"""Workers SIGKILLed at random points, with short lease timings, against the fake Slack.

Two worker processes (the real CLI, the Slack surface, the offline model) run
several sessions while the test kills one of them 20 times: right after the
fake Slack carried out a post, an update, a pin or an upload and before its
answer left (so between a post and its record), or on a timer (anywhere,
the save-then-show path included). Each killed worker is replaced at once.
Pass: every session locks; every turn is posted exactly once, with no orphan;
every lock step happens exactly once; nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Coroutine
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.dialogue.models import Origin, Session, SessionStatus
from bot.slack.blocks import (
    METADATA_EVENT,
    TURN_CROSSPOST,
    TURN_LOCKED,
    WRITING,
    escape,
    root_blocks,
    root_text,
)
from bot.slack.poster import WORKSPACE
from state import State
from state.keys import MAX_DELIVERIES
from tests.fakes.slack_server import TEAM_ID, Call, FakeSlack
from tests.redis_fixtures import REDIS_TEST_URL
from tests.support import make_session, message_body, wait_until

CHANNEL = "C0CRASH"
PROMPTS = "C0PROMPTS"
ALICE = "U0ALICE"
SESSIONS = 8
KILLS = 20
WORKERS = 2
# Kill points: a call carried out whose answer has not left yet.
KILL_ON = frozenset({"chat.postMessage", "chat.update", "pins.add", "files.completeUploadExternal"})


def worker_env(prefix: str, slack: FakeSlack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SLACK_"))}
    env.update(
        REDIS_URL=REDIS_TEST_URL,
        REDIS_PREFIX=prefix,
        SLACK_BOT_TOKEN=slack.token,
        SLACK_API_URL=slack.api_url,
        PROMPTS_CHANNEL=PROMPTS,
        LEASE_TTL_MS="1000",
        RECLAIM_IDLE_MS="1500",
        RECLAIM_EVERY_SECONDS="0.3",
        DRAIN_SECONDS="0.2",
        # The fake's Tier 3 is off here (see the test), so the app's own chat.update budget
        # goes with it: at 40 a minute the last lock's final renders wait up to a minute.
        SLACK_UPDATES_PER_MINUTE="100000",
    )
    return env


class Killer:
    """Keeps WORKERS workers running and kills one now and then, KILLS times in all."""

    def __init__(self, prefix: str, slack: FakeSlack, rng: random.Random) -> None:
        self.env = worker_env(prefix, slack)
        self.rng = rng
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        self.kills_on_call = 0
        self.last_kill = 0.0
        self.progress = 0  # turns saved so far, all sessions together
        self.deliveries: dict[int, int] = {}  # worker pid -> most deliveries of its jobs
        self.progress_at_kill = 0
        self.kills_wanted = KILLS
        self.extra_args: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.log = open(os.environ.get("SORA_CRASH_LOG", os.devnull), "ab")

    def spawn(self) -> None:
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bot.cli",
                    "worker",
                    "--surface",
                    "slack",
                    "--offline",
                    "--offline-latency",
                    "0.15",
                    *self.extra_args,
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
            )
        )

    def ready(self) -> bool:
        """Kills are paced by progress: the workers saved a turn since the last one."""
        return (
            self.kills < self.kills_wanted
            and self.progress > self.progress_at_kill
            and self.loop.time() - self.last_kill >= 0.5
            and bool(self.victims())
        )

    def victims(self) -> list[subprocess.Popen[bytes]]:
        """Workers whose jobs may all be killed once more: a job whose worker died
        MAX_DELIVERIES times is set aside as poison, by design, so no job is killed on
        its last delivery (each may still be killed twice)."""
        return [
            p
            for p in self.procs
            if p.poll() is None and self.deliveries.get(p.pid, 0) < MAX_DELIVERIES
        ]

    def kill_one(self) -> None:
        victim = self.rng.choice(self.victims())
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        self.procs.remove(victim)
        self.kills += 1
        self.last_kill = self.loop.time()
        self.progress_at_kill = self.progress
        self.spawn()

    def on_call(self, call: Call) -> None:
        if call.method in KILL_ON and self.ready() and self.rng.random() < 0.5:
            self.kills_on_call += 1
            self.kill_one()

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)


async def start_sessions(
    state: State, client: AsyncWebClient, n: int = SESSIONS, rounds: int = 6
) -> list[Session]:
    sessions = []
    for i in range(n):
        session = make_session(f"Idea {i}: a lighthouse keeper finds a bottle", max_rounds=rounds)
        root = await client.chat_postMessage(
            channel=CHANNEL, text=root_text(session), blocks=root_blocks(session)
        )
        session.origin = Origin(
            surface="slack",
            channel_id=CHANNEL,
            thread_ts=root["ts"],
            user_id=ALICE,
            user_name="alice",
            team_id=TEAM_ID,
        )
        await state.sessions.create(session, enqueue=True)
        sessions.append(session)
    return sessions


def tag_of(message: dict[str, Any]) -> tuple[str, int, int] | None:
    meta = message.get("metadata") or {}
    if meta.get("event_type") != METADATA_EVENT:
        return None
    p = meta["event_payload"]
    return p["session"], p["turn"], p["part"]


async def test_workers_killed_twenty_times_lose_nothing_and_repeat_nothing(
    real_state: State, prefix: str
) -> None:
    seed = random.randrange(1 << 30)
    async with FakeSlack() as slack:
        slack.seed_channel("crash", CHANNEL)
        slack.seed_channel("prompts", PROMPTS)
        slack.seed_user(ALICE, "alice", display_name="Alice Liddell")
        # Tier 3 (chat.update, 50 a minute) would make this take minutes of real time.
        slack.set_method_limit("chat.update", None)
        slack.set_method_limit("chat.delete", None)
        client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
        await real_state.queue.ensure_group()
        sessions = await start_sessions(real_state, client)
        killer = Killer(prefix, slack, random.Random(seed))
        for _ in range(WORKERS):
            killer.spawn()
        slack.on_call = killer.on_call
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def all_locked() -> bool:
            turns = [await real_state.sessions.load(s.id) for s in sessions]
            killer.progress = sum(len(t.turns) for t in turns if t is not None)
            pending = await real_state.redis.xpending_range(
                real_state.keys.jobs, real_state.queue.group, min="-", max="+", count=1000
            )
            most: dict[int, int] = {}
            for p in pending:
                pid = int(str(p["consumer"]).split(":")[1])  # see bot.worker.worker_name
                most[pid] = max(most.get(pid, 0), int(p["times_delivered"]))
            killer.deliveries = most
            if killer.ready() and killer.rng.random() < 0.03:
                killer.kill_one()  # anywhere: a model call, a save, the steps after it
            statuses = [await real_state.sessions.status(s.id) for s in sessions]
            return all(st == SessionStatus.LOCKED for st in statuses)

        try:
            try:
                await wait_until(all_locked, within=240)
            except AssertionError:
                got = [await real_state.sessions.status(s.id) for s in sessions]
                raise AssertionError(f"seed {seed}: {killer.kills} kills; {got}") from None
            # The last steps of the last lock may still be running.
            await wait_until(lambda: _quiet(real_state), "the queue to drain", within=90)
        finally:
            slack.on_call = None
            killer.stop()
        print(
            f"seed {seed}: {killer.kills} kills, {killer.kills_on_call} between a Slack call "
            f"and its answer, in {loop.time() - t0:.1f} s"
        )

        await assert_shown_once(real_state, slack, sessions, seed)
        assert killer.kills == KILLS, f"only {killer.kills} kills: give the workers more to do"


async def assert_shown_once(
    real_state: State, slack: FakeSlack, sessions: list[Session], seed: int
) -> None:
    """Every session locked; every turn and every lock step shown exactly once, in full,
    with no orphan and nothing left saying it is still being written; nothing
    dead-lettered."""
    assert await real_state.queue.dead_letters() == []
    for s in sessions:
        done = await real_state.sessions.load(s.id)
        assert done is not None and done.status == SessionStatus.LOCKED, (
            seed,
            done and done.error,
        )
        thread = slack.thread(CHANNEL, str(s.origin.thread_ts))
        tags = [tag_of(m) for m in thread[1:]]
        agent_tags = sorted(t[1] for t in tags if t is not None and t[1] >= 0)
        assert agent_tags == list(range(len(done.agent_turns))), (seed, s.id, agent_tags)
        for number, turn in enumerate(done.agent_turns):
            [message] = [m for m in thread if tag_of(m) == (s.id, number, 0)]
            assert message_body(message) == escape(turn.text), (seed, s.id, number)
        orphans = [m for m in thread[1:] if tag_of(m) is None and not m.get("files")]
        assert orphans == [], (seed, orphans)
        locked = [m for m in thread if (t := tag_of(m)) is not None and t[1] == TURN_LOCKED]
        assert len(locked) == 1, seed
        assert [p for p in slack.pins(CHANNEL) if p == locked[0]["ts"]] == [locked[0]["ts"]]
        shares = [m for m in thread if m.get("files")]
        assert len(shares) == 1 and len(shares[0]["files"]) == 1, (seed, s.id)
        crossposts = [m for m in slack.messages(PROMPTS) if (t := tag_of(m)) and t[0] == s.id]
        assert [tag_of(m) for m in crossposts] == [(s.id, TURN_CROSSPOST, 0)], seed
        assert await real_state.library.get(s.id, team=s.origin.team_id) is not None
        writing = [
            m for m in thread if WRITING in json.dumps(m.get("blocks") or [], ensure_ascii=False)
        ]
        assert writing == [], (seed, writing)  # no placeholder left, no half-written text
    assert len(slack.pins(CHANNEL)) == len(sessions)


# ---- kills between a streamed turn's final post and its placeholder's deletion ------------

REPLACING_SESSIONS = 3
REPLACING_KILLS = 6


class Replacing:
    """Makes streamed turns find no chat.update for their final render, and kills workers
    between the final text's post and the placeholder's deletion.

    When one of the first two placeholders is posted, the test takes the workspace's
    chat.update budget for itself (as other sessions' turns would), so that turn's
    final text is posted anew and its placeholder deleted; the calls are given back
    once a placeholder is deleted. A final post made while its placeholder is still in
    the thread (the same tag twice) kills a worker before the answer leaves, as does
    the placeholder's deletion.
    """

    def __init__(self, killer: Killer, slack: FakeSlack, state: State) -> None:
        self.killer = killer
        self.slack = slack
        self.state = state
        self.taken: list[str] = []
        self.replaced = 0  # final posts made while their placeholder was there
        self.deleted = 0
        self.budget_taken = 0  # placeholders whose turn the test took the budget from
        self.tasks: set[asyncio.Task[None]] = set()

    def on_call(self, call: Call) -> None:
        blocks = json.dumps(call.params.get("blocks") or [], ensure_ascii=False)
        if call.method == "chat.postMessage" and call.status == 200:
            if WRITING in blocks and self.budget_taken < 2:
                self.budget_taken += 1
                self._later(self._take_the_budget())
            elif self._tag_seen_twice(call):
                self.replaced += 1
                self._maybe_kill()
        elif call.method == "chat.delete" and call.status == 200:
            self.deleted += 1
            self._later(self._give_it_back())
            self._maybe_kill()

    def _tag_seen_twice(self, call: Call) -> bool:
        meta = call.params.get("metadata")
        tag = (json.loads(meta) if isinstance(meta, str) else meta or {}).get("event_payload")
        thread_ts = call.params.get("thread_ts")
        if not tag or tag.get("turn", -1) < 0 or not thread_ts:
            return False
        thread = self.slack.thread(CHANNEL, str(thread_ts))
        same = [m for m in thread if tag_of(m) == (tag["session"], tag["turn"], tag["part"])]
        return len(same) >= 2

    def _maybe_kill(self) -> None:
        if self.killer.ready() and self.killer.rng.random() < 0.7:
            self.killer.kills_on_call += 1
            self.killer.kill_one()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _take_the_budget(self) -> None:
        key = self.state.keys.update_budget(WORKSPACE)
        now = (await self.state.redis.time())[0] * 1_000_000
        members = {f"test-{uuid.uuid4().hex}": now for _ in range(REPLACING_BUDGET)}
        self.taken += list(members)
        await self.state.redis.zadd(key, members)

    async def _give_it_back(self) -> None:
        taken, self.taken = self.taken, []
        if taken:
            await self.state.redis.zrem(self.state.keys.update_budget(WORKSPACE), *taken)


REPLACING_BUDGET = 60  # chat.update calls a minute the workers may spend here


async def test_kills_between_a_final_post_and_its_placeholders_deletion_leave_one_copy(
    real_state: State, prefix: str
) -> None:
    seed = random.randrange(1 << 30)
    async with FakeSlack() as slack:
        slack.seed_channel("crash", CHANNEL)
        slack.seed_channel("prompts", PROMPTS)
        slack.seed_user(ALICE, "alice", display_name="Alice Liddell")
        slack.set_method_limit("chat.update", None)
        slack.set_method_limit("chat.delete", None)
        client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
        await real_state.queue.ensure_group()
        sessions = await start_sessions(real_state, client, n=REPLACING_SESSIONS, rounds=2)
        killer = Killer(prefix, slack, random.Random(seed))
        killer.env["SLACK_UPDATES_PER_MINUTE"] = str(REPLACING_BUDGET)
        killer.kills_wanted = REPLACING_KILLS
        # Each message streams over a second, so its final render comes after the test
        # has taken the budget.
        killer.extra_args = ["--offline-stream-seconds", "1"]
        replacing = Replacing(killer, slack, real_state)
        for _ in range(WORKERS):
            killer.spawn()
        slack.on_call = replacing.on_call

        async def all_locked() -> bool:
            loaded = [await real_state.sessions.load(s.id) for s in sessions]
            killer.progress = sum(len(t.turns) for t in loaded if t is not None)
            statuses = [await real_state.sessions.status(s.id) for s in sessions]
            return all(st == SessionStatus.LOCKED for st in statuses)

        try:
            await wait_until(all_locked, within=240)
            await wait_until(lambda: _quiet(real_state), "the queue to drain", within=90)
        finally:
            slack.on_call = None
            killer.stop()
        print(
            f"seed {seed}: {replacing.replaced} final posts beside their placeholder, "
            f"{replacing.deleted} placeholders deleted, {killer.kills} kills"
        )
        await assert_shown_once(real_state, slack, sessions, seed)
        assert replacing.replaced >= 1 and replacing.deleted >= 1, seed
        assert killer.kills >= 1, seed


async def _quiet(state: State) -> bool:
    stats = await state.queue.stats()
    return stats.backlog == 0 and stats.pending == 0
