"""Slash-command acks under load: `python -m bench.slack_ack`.

Starts `sora-copilot serve` as a real process on the real Redis, talking to
the fake Slack Web API (a process of its own), then sends `/sora` commands
signed exactly as Slack signs them, each from its own user. Two scenarios,
each with fresh processes, and both printed by default:

- spread: 200 commands in 200 channels, 20 at a time. Target: ack p99 <= 50 ms.
- one channel: 45 commands in one channel, 10 at a time. Slack, and the app's
  shared limiter, allow about one post a second per channel, so the roots go
  out over about 45 s by design; what must not happen is the ack waiting for
  them. Targets: ack p99 <= 100 ms, every root within about a minute.

`--scenario spread|one-channel` runs one; `--commands`, `--concurrency` and
`--channels` override its numbers. Prints, per scenario, the ack latency
(request sent to HTTP response received) p50 / p99 and the time from each ack
to its root message reaching Slack (the fake's record of the chat.postMessage,
matched by the idea). No worker runs: this measures the web process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import uuid

import aiohttp

from state import State, connect
from tests.fakes.slack_server import DEFAULT_TOKEN
from tests.slack_signing import FORM, command_body, signed_headers

SECRET = "bench-signing-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc), to see which side is the bottleneck."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


SCENARIOS = {
    # name: (commands, concurrency, channels, ack p99 target ms)
    "spread": (200, 20, 200, 50),
    "one-channel": (45, 10, 1, 100),
}


async def main(args: argparse.Namespace) -> None:
    names = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    for name in names:
        commands, concurrency, channels, target = SCENARIOS[name]
        await scenario(
            args,
            name=name,
            commands=args.commands or commands,
            concurrency=args.concurrency or concurrency,
            channels=args.channels or channels,
            target_ms=target,
        )


async def scenario(
    args: argparse.Namespace,
    *,
    name: str,
    commands: int,
    concurrency: int,
    channels: int,
    target_ms: int,
) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    # The fake Slack runs in a process of its own, so that serving serve's Web API
    # calls does not compete with this process sending the commands.
    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.slack_server",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    serve: asyncio.subprocess.Process | None = None
    acks: dict[str, tuple[float, float]] = {}  # idea -> (sent, acked), epoch seconds
    roots: dict[str, float] = {}
    cpu: dict[str, float] = {}
    burst_s = 0.0
    burst_start = 0.0
    try:
        assert fake.stdout is not None
        api_url = (await fake.stdout.readline()).decode().strip()
        base = api_url.removesuffix("/api/")
        async with aiohttp.ClientSession() as http:
            seed = {
                "channels": [
                    {"name": f"bench-{i}", "id": f"C{i + 1:05d}"} for i in range(-1, channels)
                ],
                "users": [
                    {"id": f"U{i:05d}", "name": f"user{i}", "display_name": f"User {i}"}
                    for i in range(-1, commands)
                ],
            }
            async with http.post(f"{base}/_fake/seed", json=seed) as r:
                assert r.status == 200, await r.text()
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SLACK_"))
            }
            env.update(
                REDIS_URL=args.redis_url,
                REDIS_PREFIX=prefix,
                SLACK_BOT_TOKEN=DEFAULT_TOKEN,
                SLACK_SIGNING_SECRET=SECRET,
                SLACK_API_URL=api_url,
                PORT=str(port),
                MAX_RUNNING_PER_TEAM=str(commands + 10),
                MAX_RUNNING_PER_CHANNEL=str(commands + 10),
            )
            serve = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "serve",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}/slack/events"
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            gate = asyncio.Semaphore(concurrency)

            async def command(i: int) -> None:
                idea = f"Bench idea {i}: a lighthouse keeper finds a bottle"
                ch = i % channels if i >= 0 else -1  # the warm-up has a channel of its own
                body = command_body(
                    token="unused",
                    team_id="T0FAKE",
                    channel_id=f"C{ch + 1:05d}",
                    channel_name=f"bench-{ch}",
                    user_id=f"U{i:05d}",
                    user_name=f"user{i}",
                    command="/sora",
                    text=idea,
                    trigger_id=f"{i}.1",
                    response_url=f"{base}/_fake/response",
                )
                async with gate:
                    headers = signed_headers(SECRET, body, content_type=FORM)
                    sent = time.time()
                    async with http.post(url, data=body.encode(), headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    acks[idea] = (sent, time.time())

            # Warm-up: the first request pays for Bolt's lazy auth.test.
            await command(-1)
            acks.clear()
            before = {
                "serve": _cpu_s(serve.pid),
                "fake_slack": _cpu_s(fake.pid),
                "bench": _own_cpu(),
            }
            burst_start = time.time()
            await asyncio.gather(*(command(i) for i in range(commands)))
            # One post a second per channel: the busiest channel's roots need that long.
            busiest = -(-commands // channels)
            deadline = time.monotonic() + 30 + busiest
            while time.monotonic() < deadline and len(roots) < len(acks):
                await asyncio.sleep(0.5)
                async with http.get(f"{base}/_fake/calls?method=chat.postMessage") as r:
                    calls = await r.json()
                posted = {c["params"].get("text", ""): c["time"] for c in calls}
                roots = {idea: t for idea in acks for text, t in posted.items() if idea in text}
        after = {"serve": _cpu_s(serve.pid), "fake_slack": _cpu_s(fake.pid), "bench": _own_cpu()}
        # CPU spent on the burst itself (the idle polling afterwards is a rounding error).
        cpu = {k: round(after[k] - before[k], 2) for k in after}
        burst_s = max(roots.values(), default=burst_start) - burst_start
    finally:
        for proc in (serve, fake):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()
        redis = await connect(args.redis_url)
        state = State.create(redis, prefix=prefix)
        keys = [k async for k in redis.scan_iter(match=state.keys.pattern, count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        await redis.aclose()
    ack_ms = [1000 * (a - s) for s, a in acks.values()]
    root_ms = [1000 * (roots[idea] - acks[idea][1]) for idea in roots]
    # What the person who typed the command waits for: sent to root in the channel.
    total_ms = [1000 * (roots[idea] - acks[idea][0]) for idea in roots]
    row = {
        "scenario": name,
        "commands": len(acks),
        "channels": channels,
        "concurrency": concurrency,
        "ack_p50_ms": round(_pct(ack_ms, 0.5), 1),
        "ack_p99_ms": round(_pct(ack_ms, 0.99), 1),
        "roots_posted": len(roots),
        "command_to_root_p50_ms": round(_pct(total_ms, 0.5), 1) if total_ms else None,
        "command_to_root_p99_ms": round(_pct(total_ms, 0.99), 1) if total_ms else None,
        "root_after_ack_p50_ms": round(_pct(root_ms, 0.5), 1) if root_ms else None,
        "root_after_ack_p99_ms": round(_pct(root_ms, 0.99), 1) if root_ms else None,
        "acks_done_s": round(max((a for _, a in acks.values()), default=0.0) - burst_start, 3)
        if acks
        else None,
        "burst_s": round(burst_s, 3),
        "cpu_s_during_burst": cpu,
    }
    root_target = " (target <= 300)" if channels >= commands else " (one post a second per channel)"
    print(
        f"[{name}] {row['commands']} commands in {channels} channel(s), {concurrency} at a "
        f"time: ack p50 {row['ack_p50_ms']} ms, p99 {row['ack_p99_ms']} ms (target <= "
        f"{target_ms}); root message "
        f"{row['root_after_ack_p50_ms']} ms p50, {row['root_after_ack_p99_ms']} ms p99 after "
        f"the ack{root_target}; command to root {row['command_to_root_p50_ms']} ms p50, "
        f"{row['command_to_root_p99_ms']} ms p99; {row['roots_posted']} roots posted in "
        f"{row['burst_s']} s (the last ack at {row['acks_done_s']} s); "
        f"CPU seconds during the burst {cpu}"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--scenario", choices=["both", *SCENARIOS], default="both")
    parser.add_argument("--commands", type=int, default=0, help="0: the scenario's own")
    parser.add_argument("--concurrency", type=int, default=0, help="0: the scenario's own")
    parser.add_argument("--channels", type=int, default=0, help="0: the scenario's own")
    asyncio.run(main(parser.parse_args()))
