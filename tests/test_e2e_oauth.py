"""Two workspaces on one deployment, with `serve` and `worker` as real processes in OAuth mode.

Both processes get SLACK_CLIENT_ID/SECRET and INSTALLATION_ENCRYPTION_KEYS and
no SLACK_BOT_TOKEN. Two workspaces install the app through the served install
page; each starts a session in a channel with the same id, by a person with the
same user id; the worker (offline model) takes both to their locked prompt,
each through its own workspace's token. Then one workspace uninstalls the app.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.dialogue.models import SessionStatus
from state import State
from state.installations import new_key
from tests.fakes.slack_server import APP_ID, UPLOAD_METHOD, FakeSlack
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import REDIS_TEST_URL
from tests.slack_signing import FORM, JSON_TYPE, event_body, signed_headers
from tests.support import app_processes, lookup, wait_until
from tests.test_e2e_slack import free_port
from tests.test_oauth import CHANNEL, TEAMS, USER, click_add_to_slack, sora_body

SECRET = "e2e-oauth-signing-secret"


@pytest.fixture
async def deployment(real_state: State, prefix: str) -> AsyncIterator[tuple[FakeSlack, str]]:
    async with FakeSlack() as slack:
        for team, name in TEAMS.items():
            slack.add_team(team, name)
        slack.seed_channel("video", CHANNEL)
        slack.seed_user(USER, "ada", display_name="Ada")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        slack.redirect_uri = f"{url}/slack/oauth_redirect"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "SLACK_", "REDIS_", "INSTALLATION_"))
        }
        env.update(
            SLACK_CLIENT_ID=slack.client_id,
            SLACK_CLIENT_SECRET=slack.client_secret,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=slack.api_url,
            INSTALLATION_ENCRYPTION_KEYS=f"{new_key()},{new_key()}",
            REDIS_URL=REDIS_TEST_URL,
            REDIS_PREFIX=prefix,
            PORT=str(port),
        )
        commands = [("serve",), ("worker", "--offline")]
        async with app_processes(commands, env=env, url=url):
            yield slack, url


async def post(url: str, body: str, content_type: str) -> None:
    headers = signed_headers(SECRET, body, content_type=content_type)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/slack/events", data=body.encode(), headers=headers) as r,
    ):
        assert r.status == 200, await r.text()


async def sora(url: str, team: str) -> None:
    body = sora_body(team, f"a lighthouse at dusk, for {team}")
    await post(url, body, FORM)


async def test_two_workspaces_install_and_each_runs_on_its_own_token(
    deployment: tuple[FakeSlack, str], real_state: State
) -> None:
    slack, url = deployment
    for team in TEAMS:
        page = await click_add_to_slack(url, slack, team)
        assert page.startswith("200 ") and f"is installed in {TEAMS[team]}" in page
    for team in TEAMS:
        await sora(url, team)

    async def locked() -> list[str] | None:
        roots = [
            m
            for m in slack.messages(CHANNEL)
            if m.get("metadata", {}).get("event_payload", {}).get("kind") == "root"
        ]
        teams = []
        for root in roots:
            sid = await lookup(real_state, CHANNEL, root["ts"], TEAMS)
            snap = await real_state.sessions.snapshot(sid) if sid else None
            # Locked and shown: the lock's steps still run against Slack after the save,
            # and an uninstall before they end would refuse them (token_revoked).
            if snap is None or snap.session.status != SessionStatus.LOCKED or snap.steps:
                return None
            session = snap.session
            teams.append(session.origin.team_id or "")
        return sorted(teams) if len(teams) == 2 else None

    assert await wait_until(locked, "both sessions locked", within=90) == sorted(TEAMS)
    by_thread: dict[str, set[str | None]] = {}
    for c in slack.calls:
        ts = str(c.params.get("thread_ts") or "")
        if ts:
            by_thread.setdefault(ts, set()).add(slack.team_of(c))
    assert sorted(t for teams in by_thread.values() for t in teams if t) == sorted(TEAMS)
    assert all(len(teams) == 1 for teams in by_thread.values())
    tokenless = {"oauth.v2.access", UPLOAD_METHOD}
    assert [
        c.method for c in slack.calls if c.method not in tokenless and not slack.team_of(c)
    ] == []

    # One workspace uninstalls: its installation goes, the other's stays.
    slack.revoke_team("T0ALPHA")
    envelope = {
        "token": "legacy",
        "team_id": "T0ALPHA",
        "api_app_id": APP_ID,
        "event": {"type": "app_uninstalled"},
        "type": "event_callback",
        "event_id": "Ev0UNINSTALL",
        "event_time": int(time.time()),
    }
    await post(url, event_body(envelope), JSON_TYPE)

    async def alpha_gone() -> bool:
        names = [k async for k in real_state.redis.scan_iter(match=f"{real_state.keys.prefix}:*")]
        return not any("{ws:T0ALPHA}" in k for k in names) and any(
            "{ws:T0BETA}" in k for k in names
        )

    await wait_until(alpha_gone, "the uninstalled workspace's installation to go")
