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
import os
import random
import signal
import subprocess
import sys
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.dialogue.models import Origin, Session, SessionStatus
from bot.slack.blocks import (
    METADATA_EVENT,
    TURN_CROSSPOST,
    TURN_LOCKED,
    escape,
    root_blocks,
    root_text,
)
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
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
            )
        )

    def ready(self) -> bool:
        """Kills are paced by progress: the workers saved a turn since the last one."""
        return (
            self.kills < KILLS
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


async def start_sessions(state: State, client: AsyncWebClient) -> list[Session]:
    sessions = []
    for i in range(SESSIONS):
        session = make_session(f"Idea {i}: a lighthouse keeper finds a bottle", max_rounds=6)
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
            assert await real_state.library.get(s.id) is not None
        assert len(slack.pins(CHANNEL)) == SESSIONS
        assert killer.kills == KILLS, f"only {killer.kills} kills: give the workers more to do"


async def _quiet(state: State) -> bool:
    stats = await state.queue.stats()
    return stats.backlog == 0 and stats.pending == 0
