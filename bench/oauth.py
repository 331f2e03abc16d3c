"""What OAuth mode costs per Slack request: `python -m bench.oauth`.

Stores `--workspaces` installations (encrypted) in the real Redis
(BENCH_REDIS_URL, database 14 by default), then measures the per-request
authorize that Bolt runs before every listener in OAuth mode
(`Workspaces.bot`): Redis round trips and CPU per call, read from the store
(first request of a workspace, or after the 10 s cache) and from the process's
cache. Then a rotating token near its expiry is asked for by `--processes`
processes at once (each its own `Workspaces`, as separate web and worker
processes would be), against the fake Slack: how many refreshes Slack saw
(the target is exactly 1) and how long the last process waited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.config import Settings
from bot.slack.workspaces import Workspaces
from state import Keys
from state.installations import Cipher, RedisInstallationStore, new_key
from tests.fakes.slack_server import FakeSlack

ROUND_TRIPS = 0


class CountingConnection(Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        global ROUND_TRIPS
        ROUND_TRIPS += 1
        await super().send_packed_command(command, check_health)


def _installation(team: str, token: str, **kw: Any) -> Installation:
    return Installation(
        app_id="A0FAKE",
        team_id=team,
        team_name=team,
        bot_token=token,
        bot_id="B0BOT",
        bot_user_id="U0BOT",
        bot_scopes="commands,chat:write",
        user_id="U0INSTALLER",
        **kw,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    redis = Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
    prefix = f"bench-oauth-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix=prefix)
    store = RedisInstallationStore(redis, keys, Cipher([new_key()]))
    teams = [f"T{i:06d}" for i in range(args.workspaces)]
    try:
        async with FakeSlack() as slack:
            settings = Settings(
                _env_file=None,
                slack_client_id=slack.client_id,
                slack_client_secret=slack.client_secret,
                slack_api_url=slack.api_url,
            )
            for team in teams:
                await store.async_save(_installation(team, f"xoxb-{team}"))
            result: dict[str, Any] = {"workspaces": args.workspaces}
            for label, cache_s in (("store", 0.0), ("cached", 3600.0)):
                workspaces = Workspaces(store=store, settings=settings, cache_s=cache_s)
                for team in teams:  # warm the process's cache (or not, with cache_s=0)
                    await workspaces.bot(team)
                before, cpu = ROUND_TRIPS, time.process_time()
                for _ in range(args.rounds):
                    for team in teams:
                        await workspaces.bot(team)
                calls = args.rounds * len(teams)
                result[f"authorize_{label}_round_trips"] = round((ROUND_TRIPS - before) / calls, 2)
                result[f"authorize_{label}_cpu_us"] = round(
                    (time.process_time() - cpu) / calls * 1e6, 1
                )
                await workspaces.aclose()

            # A rotating token inside the refresh window, wanted by many processes at once.
            slack.token_rotation = True
            slack.add_team("T0ROT", "Rotating")
            refresh = "xoxe-1-bench"
            slack.grant_refresh_token("T0ROT", refresh)
            await store.async_save(
                _installation(
                    "T0ROT",
                    "xoxe.xoxb-old",
                    bot_refresh_token=refresh,
                    bot_token_expires_at=int(time.time()) + 60,
                )
            )
            processes = [Workspaces(store=store, settings=settings) for _ in range(args.processes)]
            started = time.perf_counter()
            bots = await asyncio.gather(*(w.bot("T0ROT") for w in processes))
            result["refresh_processes"] = args.processes
            result["refresh_calls_to_slack"] = slack.refreshes
            result["refresh_distinct_tokens"] = len({b.bot_token for b in bots})
            result["refresh_last_wait_ms"] = round((time.perf_counter() - started) * 1000, 1)
            for w in processes:
                await w.aclose()
    finally:
        names = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        for i in range(0, len(names), 500):
            await redis.delete(*names[i : i + 500])
        await redis.aclose()
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=8)
    r = asyncio.run(main(parser.parse_args()))
    print(
        f"authorize per Slack request, {r['workspaces']} workspaces: from the store "
        f"{r['authorize_store_round_trips']} round trips, {r['authorize_store_cpu_us']} µs CPU; "
        f"cached {r['authorize_cached_round_trips']} round trips, "
        f"{r['authorize_cached_cpu_us']} µs CPU"
    )
    print(
        f"token refresh wanted by {r['refresh_processes']} processes at once: "
        f"{r['refresh_calls_to_slack']} call to Slack, {r['refresh_distinct_tokens']} token, "
        f"the last process waited {r['refresh_last_wait_ms']} ms"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    cli()
