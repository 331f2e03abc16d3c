"""A whole workspace at once: `python -m bench.workspace`.

150 sessions of 3 rounds (7 turns each) start at the same moment in 30 channels,
run by 2 worker processes (`sora-copilot worker`, the Slack surface, the
offline model taking 0.5 s before its first word and then writing each reply
over 2 s, as Claude streams), against the fake Slack enforcing Slack's tiers:
chat.update and chat.delete 429 beyond 50 a minute for the workspace,
chat.postMessage 429 beyond one a second per channel after a burst of 3.
Then the same with 1 session alone.

Prints the time until every session is locked (saved, and its locked prompt
posted in its thread) against the floor that the per-channel post rate sets
for the busiest channel (its posts, less the burst, at one a second), the time
until every root shows its final state, the most chat.update calls in any
60 s, chat.update calls Slack refused, and the share of turns that streamed
live (a placeholder updated with partial text while the model wrote).
Targets: all lock within 1.5x the floor; never above 50 updates a minute;
the lone session streams every turn live.

`--trace PATH` writes every Slack call (seconds from the start, method, status,
channel, tag) and every line the workers logged to PATH.<run> as JSON lines,
for finding where the time goes; `--no-alone` skips the lone session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from bot.config import Settings
from bot.dialogue.models import Session
from bot.sessions import Invoker, Sessions, new_session
from bot.slack.blocks import TURN_LOCKED, WRITING
from bot.slack.client import close_client, make_client
from bot.slack.roots import Roots
from state import State, connect
from state.keys import POST_BURST, POST_RATE_PER_S
from tests.fakes.slack_server import TEAM_ID, FakeSlack

ROUNDS = 3
POSTING = ("chat.postMessage", "files.completeUploadExternal")


def _env(slack: FakeSlack, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SLACK_"))}
    env.update(
        REDIS_URL=redis_url,
        REDIS_PREFIX=prefix,
        SLACK_BOT_TOKEN=slack.token,
        SLACK_API_URL=slack.api_url,
    )
    return env


async def _cleanup(redis: Redis, prefix: str) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])


def _streamed_live(slack: FakeSlack) -> tuple[int, int]:
    """(turn messages that grew while written, placeholders posted). A placeholder is a
    post showing only the "writing…" line; it grew if an update showed text above that line."""
    placeholders = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.status == 200
        and WRITING in json.dumps(c.params.get("blocks") or "", ensure_ascii=False)
    ]
    grew = {
        (str(c.params.get("channel")), str(c.params.get("ts")))
        for c in slack.calls_to("chat.update")
        if c.status == 200
        and WRITING in json.dumps(c.params.get("blocks") or "", ensure_ascii=False)
        and '"markdown"' in json.dumps(c.params.get("blocks") or "", ensure_ascii=False)
    }
    return len(grew), len(placeholders)


async def run(
    redis_url: str,
    *,
    sessions: int,
    channels: int,
    workers: int,
    latency: float,
    stream_s: float,
    trace: str | None = None,
) -> dict[str, Any]:
    prefix = f"bench-ws-{uuid.uuid4().hex[:8]}"
    redis = await connect(redis_url)
    state = State.create(redis, prefix=prefix)
    await state.queue.ensure_group()
    async with FakeSlack() as slack:
        slack.set_post_bucket(POST_RATE_PER_S, POST_BURST)
        names = [f"C0WS{i:03d}" for i in range(channels)]
        for i, name in enumerate(names):
            slack.seed_channel(f"video-{i}", name)
        env = _env(slack, redis_url, prefix)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=slack.token,
            slack_api_url=slack.api_url,
            max_running_per_team=10_000,
            max_running_per_channel=10_000,
            max_running_per_user=10_000,
        )
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "worker",
                "--surface",
                "slack",
                "--offline",
                "--offline-latency",
                str(latency),
                "--offline-stream-seconds",
                str(stream_s),
                "--concurrency",
                str(max(sessions, 1)),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(workers)
        ]
        ready = [asyncio.Event() for _ in procs]
        logs: list[str] | None = [] if trace else None
        drains = [
            asyncio.create_task(_ready_then_drain(p, r, logs))
            for p, r in zip(procs, ready, strict=True)
        ]
        client = make_client(settings)
        service = Sessions(state=state, settings=settings, slack=Roots(client))
        try:
            for r in ready:
                await asyncio.wait_for(r.wait(), timeout=120)
            made = []
            for i in range(sessions):
                s = new_session(
                    f"Idea {i}: a lighthouse keeper finds a message in a bottle",
                    persona="director",
                    target="sora-2",
                    rounds=ROUNDS,
                    settings=settings,
                )
                made.append(s)
            t0, t0_epoch = time.perf_counter(), time.time()
            await asyncio.gather(
                *(
                    service.start_session(
                        s,
                        invoker=Invoker(
                            channel_id=names[i % channels], user_id=f"U{i:04d}", team_id=TEAM_ID
                        ),
                    )
                    for i, s in enumerate(made)
                )
            )
            locked_at = roots_at = None
            waiting = [s.id for s in made]  # asked again only while not locked: cheap
            while roots_at is None:
                await asyncio.sleep(0.5)
                now = time.perf_counter() - t0
                if locked_at is None:
                    waiting = await _unlocked(state, waiting)
                    if not waiting:
                        locked_at = now
                if locked_at is not None and _roots_final(slack, made):
                    roots_at = now
                if now > 1800:
                    raise SystemExit("not all sessions locked within 30 minutes")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                await p.wait()
            await asyncio.gather(*drains, return_exceptions=True)
            await close_client(client)
        if trace:
            _write_trace(trace, t0_epoch, slack, logs or [])
        posts: dict[str, int] = {}
        for c in slack.calls:
            if c.method in POSTING and c.status == 200 and c.error is None:
                ch = str(c.params.get("channel") or c.params.get("channel_id"))
                posts[ch] = posts.get(ch, 0) + 1
        busiest = max(posts.values())
        floor = max(busiest - POST_BURST, 0) / POST_RATE_PER_S
        loaded = [await state.sessions.load(s.id) for s in made]
        turns = sum(len(s.agent_turns) for s in loaded if s is not None)
        grew, placeholders = _streamed_live(slack)
        result = {
            "sessions": sessions,
            "channels": channels,
            "workers": workers,
            "turns": turns,
            "all_locked_s": round(locked_at or 0.0, 1),
            "roots_final_s": round(roots_at or 0.0, 1),
            "busiest_channel_posts": busiest,
            "post_rate_floor_s": round(floor, 1),
            "locked_vs_floor": round((locked_at or 0.0) / floor, 2) if floor else None,
            "peak_updates_per_60s": slack.most_in_a_minute("chat.update"),
            "peak_deletes_per_60s": slack.most_in_a_minute("chat.delete"),
            "update_429s": len([c for c in slack.calls_to("chat.update") if c.status == 429]),
            "post_429s": len([c for c in slack.calls_to("chat.postMessage") if c.status == 429]),
            "streamed_live": grew,
            "placeholders": placeholders,
            "streamed_share": round(grew / turns, 3) if turns else 0.0,
        }
    await _cleanup(redis, prefix)
    await redis.aclose()
    return result


async def _ready_then_drain(
    proc: asyncio.subprocess.Process, ready: asyncio.Event, logs: list[str] | None = None
) -> None:
    """Set `ready` once the worker says it takes jobs; keep reading what it logs after
    (kept in `logs` when tracing)."""
    assert proc.stderr is not None
    async for line in proc.stderr:
        if b"taking jobs" in line:
            ready.set()
        if logs is not None:
            logs.append(f"{time.time():.3f} {proc.pid} {line.decode(errors='replace').rstrip()}")


async def _unlocked(state: State, ids: list[str]) -> list[str]:
    """The sessions of `ids` not yet locked with their locked prompt in the thread."""
    left = []
    for sid in ids:
        status = await state.sessions.status(sid)
        if status is None or status.value != "locked":
            left.append(sid)
        elif 0 not in await state.posts.get(sid, TURN_LOCKED):
            left.append(sid)
    return left


def _write_trace(path: str, t0: float, slack: FakeSlack, logs: list[str]) -> None:
    """Every Slack call (seconds from the start, method, status, channel, tag) and every
    line the workers logged, for finding where the time goes."""
    with open(path, "w") as f:
        for c in slack.calls:
            meta = c.params.get("metadata")
            if isinstance(meta, str):
                meta = json.loads(meta)
            row = {
                "t": round(c.time - t0, 3),
                "m": c.method,
                "st": c.status,
                "err": c.error,
                "ch": c.params.get("channel") or c.params.get("channel_id"),
                "ts": c.params.get("ts") or c.params.get("thread_ts"),
                "tag": (meta or {}).get("event_payload") if isinstance(meta, dict) else None,
            }
            f.write(json.dumps(row) + "\n")
        for line in logs:
            f.write(json.dumps({"log": line}) + "\n")


def _roots_final(slack: FakeSlack, made: list[Session]) -> bool:
    for s in made:
        root = slack.message(str(s.origin.channel_id), str(s.origin.thread_ts))
        if root is None or ":lock: Locked" not in json.dumps(root.get("blocks") or []):
            return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=150)
    p.add_argument("--channels", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--stream-s", type=float, default=2.0)
    p.add_argument("--trace", help="write every Slack call and worker log line here (JSONL)")
    p.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    out = {}
    runs = [("workspace", args.sessions, args.channels)] + ([("alone", 1, 1)] if args.alone else [])
    for label, n, ch in runs:
        r = asyncio.run(
            run(
                url,
                sessions=n,
                channels=ch,
                workers=args.workers,
                latency=args.latency,
                stream_s=args.stream_s,
                trace=f"{args.trace}.{label}" if args.trace else None,
            )
        )
        out[label] = r
        print(
            f"{label}: {r['sessions']} sessions in {r['channels']} channels, {r['turns']} turns: "
            f"all locked in {r['all_locked_s']} s (floor {r['post_rate_floor_s']} s, "
            f"x{r['locked_vs_floor']}); roots final in {r['roots_final_s']} s; "
            f"peak chat.update {r['peak_updates_per_60s']}/60 s, {r['update_429s']} refused; "
            f"streamed live {r['streamed_live']} of {r['turns']} turns ({r['streamed_share']:.0%})"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
