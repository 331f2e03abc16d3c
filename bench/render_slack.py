"""Render in Slack, the app's own time: `python -m bench.render_slack`.

The web app (Bolt, as `serve` runs it) and one worker (the production `Worker`, a Slack
surface and render jobs) in this process, on the real Redis at BENCH_REDIS_URL, against the
fake Slack and the fake Gemini API (on loopback). For each of `--renders` (10) locked
prompts, one after another: Render is pressed (a signed request), the offer comes back,
then Confirm is pressed, and the clock runs until the clip is shared in the thread and the
progress message says done. The vendor's time (from its job's creation to the check that
found it done, which includes the waits between checks, `--poll` apart) is taken off:
what is left is the app's own time (the ack, the budgets, the queue, the submit, the
download, the upload, files.info confirming the share, the done message). Target: under 3 s.
Prints each figure and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time
import uuid
from typing import Any

from aiohttp import ClientSession, web

from bot.app import build_app
from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Origin
from bot.llm.offline import OfflineModel
from bot.render import make
from bot.render.jobs import RenderRunner
from bot.slack.blocks import ACTION_RENDER, ACTION_RENDER_CONFIRM, render_value
from bot.slack.client import close_client, make_client
from bot.slack.renders import SlackRenderShow
from bot.slack.surface import SlackSurface
from bot.web import build_web_app
from bot.worker import Worker, WorkerConfig
from state import LibraryEntry, State, connect
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, FakeSlack
from tests.fakes.video_server import FakeVideoAPI, JobScript
from tests.redis_fixtures import locked, make_session
from tests.slack_signing import FORM, interactive_body, signed_headers

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "bench-signing-secret"
CHANNEL, STARTER = "C0BENCH", "U0ANA"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _press(action_id: str, value: str, root: str) -> str:
    return interactive_body(
        {
            "type": "block_actions",
            "user": {"id": STARTER, "username": "ana", "team_id": TEAM_ID},
            "api_app_id": "A0BENCH",
            "token": "legacy",
            "team": {"id": TEAM_ID, "domain": "bench"},
            "trigger_id": "1.2.3",
            "container": {"type": "message", "message_ts": root, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL, "name": "bench"},
            "message": {"ts": root, "thread_ts": root},
            "actions": [
                {"type": "button", "action_id": action_id, "block_id": "b", "value": value}
            ],
        }
    )


async def _wait(check: Any, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.005)
    raise TimeoutError("the render did not reach the thread")


async def main(renders: int, poll: float, checks: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    redis = await connect(BENCH_REDIS_URL)
    state = State.create(redis, prefix=prefix)
    await state.queue.ensure_group()
    rows: list[dict[str, float]] = []
    async with FakeSlack() as slack, FakeVideoAPI() as video:
        video.script(default=JobScript("done", checks=checks))
        slack.seed_channel("bench", CHANNEL)
        slack.seed_user(STARTER, "ana", display_name="Ana")
        port = _free_port()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            slack_bot_token=slack.token,
            slack_api_url=slack.api_url,
            slack_signing_secret=SECRET,
            redis_prefix=prefix,
            gemini_api_key=video.gemini_key,
            gemini_base_url=video.base_url,
            render_poll_seconds=poll,
            render_budget_seconds_per_team=10**6,
            render_budget_seconds_per_user=10**6,
        )
        bolt = build_app(settings=settings, state=state)
        runner = web.AppRunner(build_web_app(bolt, state=state))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = make_client(settings, rate_limit_retries=0)
        surface = SlackSurface(client=client, state=state, settings=settings)

        async def surface_for(team: str) -> SlackSurface:
            return surface

        renders_runner = RenderRunner(
            state=state,
            show=SlackRenderShow(surface_for),
            renderers=lambda name: make(name, settings),
        )
        worker = Worker(
            state=state,
            engine=Engine(model=OfflineModel()),
            surface=surface,
            renders=renders_runner,
            config=WorkerConfig(concurrency=20, block_ms=50),
        )
        stopping = asyncio.Event()
        work = asyncio.create_task(worker.run(stopping))
        url = f"http://127.0.0.1:{port}/slack/events"
        try:
            async with ClientSession() as http:

                async def press(body: str) -> None:
                    headers = signed_headers(SECRET, body, content_type=FORM)
                    async with http.post(url, data=body.encode(), headers=headers) as r:
                        assert r.status == 200, await r.text()

                for _ in range(renders):
                    root = slack.seed_message(CHANNEL, "a locked prompt", user=BOT_USER_ID)
                    session = locked(
                        make_session(
                            target="veo-3.1",
                            origin=Origin(
                                surface="slack",
                                channel_id=CHANNEL,
                                thread_ts=root,
                                user_id=STARTER,
                                user_name="ana",
                                team_id=TEAM_ID,
                            ),
                        )
                    )
                    assert session.locked is not None
                    draft = session.locked.draft.model_copy(update={"size": "16:9"})
                    session.locked = session.locked.model_copy(update={"draft": draft})
                    await state.sessions.create(session)
                    await state.library.add(LibraryEntry.from_session(session))
                    seen = len(slack.ephemerals(CHANNEL, STARTER))
                    await press(_press(ACTION_RENDER, render_value(session.id, "draft"), root))
                    offer = (await _wait(lambda n=seen: slack.ephemerals(CHANNEL, STARTER)[n:]))[0]
                    confirm = next(
                        e["value"]
                        for b in offer["blocks"]
                        if b["type"] == "actions"
                        for e in b["elements"]
                        if e["action_id"] == ACTION_RENDER_CONFIRM
                    )
                    jobs_before = len(video.jobs)
                    t0 = time.monotonic()
                    await press(_press(ACTION_RENDER_CONFIRM, confirm, root))

                    def shown(root: str = root) -> bool:
                        thread = slack.thread(CHANNEL, root)
                        clip = any(m.get("files") for m in thread)
                        done = any("Rendered in" in json.dumps(m.get("blocks")) for m in thread)
                        return clip and done

                    await _wait(shown)
                    total = time.monotonic() - t0
                    [job] = list(video.jobs.values())[jobs_before:]
                    assert job.finished_at is not None
                    vendor = job.finished_at - job.created_at
                    rows.append(
                        {
                            "total_s": round(total, 3),
                            "vendor_s": round(vendor, 3),
                            "app_s": round(total - vendor, 3),
                        }
                    )
        finally:
            stopping.set()
            await work
            await renders_runner.aclose()
            await close_client(client)
            await runner.cleanup()
            await close_client(bolt.client)
            keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
            for i in range(0, len(keys), 500):
                await redis.delete(*keys[i : i + 500])
            await redis.aclose()
    app = sorted(r["app_s"] for r in rows)
    summary = {
        "renders": len(rows),
        "poll_s": poll,
        "vendor_checks": checks,
        "app_p50_s": round(statistics.median(app), 3),
        "app_max_s": round(app[-1], 3),
        "vendor_p50_s": round(statistics.median(r["vendor_s"] for r in rows), 3),
        "total_p50_s": round(statistics.median(r["total_s"] for r in rows), 3),
    }
    for i, r in enumerate(rows, 1):
        print(
            f"render {i:2}: Confirm to clip in thread {r['total_s']:.2f} s, vendor "
            f"{r['vendor_s']:.2f} s, the app's own {r['app_s']:.2f} s"
        )
    print(
        f"the app's own time, button to clip minus the vendor's: p50 {summary['app_p50_s']} s, "
        f"max {summary['app_max_s']} s over {len(rows)} renders (target: < 3 s)"
    )
    print(json.dumps({"render_slack": summary}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between checks")
    parser.add_argument("--checks", type=int, default=2, help="checks before the job is done")
    args = parser.parse_args()
    asyncio.run(main(args.renders, args.poll, args.checks))
