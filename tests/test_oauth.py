"""Many workspaces on one deployment: install by OAuth, each workspace with its own token.

The web app runs in OAuth mode (SLACK_CLIENT_ID, SLACK_CLIENT_SECRET) against
the fake Slack, which models the authorize page, `oauth.v2.access`, token
rotation and per-workspace tokens. The browser's part (the cookie that ties
the redirect to the install page) is played here by hand; `test_install_browser`
plays it in a real Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_bolt.app.async_app import AsyncApp

from bot.app import build_app
from bot.background import AfterAck
from bot.config import Settings
from bot.dialogue.engine import Engine
from bot.dialogue.models import Origin, SessionStatus
from bot.llm.offline import OfflineModel
from bot.slack.manifest import bot_scopes
from bot.slack.surface import SlackSurface
from bot.slack.workspaces import NotInstalled, Workspaces, WorkspaceSurface, open_workspaces
from bot.web import build_web_app
from bot.worker import Worker, WorkerConfig
from state import LibraryEntry, State
from state.installations import new_key
from tests.fakes.slack_server import APP_ID, BOT_USER_ID, UPLOAD_METHOD, FakeSlack
from tests.redis_fixtures import *  # noqa: F403  (the fixtures)
from tests.redis_fixtures import agent_turn, locked
from tests.redis_fixtures import make_session as fixture_session
from tests.slack_signing import FORM, JSON_TYPE, command_body, event_body, signed_headers
from tests.support import lookup, make_session, wait_until

# On the Redis Cluster too: two workspaces' sessions side by side, and an uninstall, whose
# SCAN of the workspace's keys walks every primary.
ON_CLUSTER_TOO = {
    "test_two_workspaces_each_use_their_own_token_end_to_end",
    "test_app_uninstalled_deletes_everything_kept_for_the_workspace_and_nothing_else",
}

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0VIDEO"  # the same channel id in both workspaces
USER = "U0ADA"  # and the same user id
TEAMS = {"T0ALPHA": "Alpha Inc", "T0BETA": "Beta Ltd"}


def oauth_settings(slack: FakeSlack, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_client_id": slack.client_id,
        "slack_client_secret": slack.client_secret,
        "slack_signing_secret": SECRET,
        "slack_api_url": slack.api_url,
        "installation_encryption_keys": new_key(),
        "redis_prefix": prefix,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def sora_body(team: str, text: str = "a lighthouse at dusk") -> str:
    """`/sora text` from USER in CHANNEL of workspace `team` (the same ids in every one)."""
    return command_body(
        token="legacy",
        team_id=team,
        team_domain=team.lower(),
        channel_id=CHANNEL,
        channel_name="video-ideas",
        user_id=USER,
        user_name="ada",
        command="/sora",
        text=text,
        api_app_id=APP_ID,
        trigger_id=f"13345224609.738474920.{time.monotonic_ns()}",
    )


async def click_add_to_slack(
    app_url: str, slack: FakeSlack, team: str, *, decision: str = "allow", cookie: bool = True
) -> str:
    """The install, as a browser does it: the app's install page (its state cookie), Slack's
    consent page for `team`, the decision, the redirect back. "<status> <page>" at the end."""
    slack.install_team = team
    async with aiohttp.ClientSession() as browser:
        page = await browser.get(f"{app_url}/slack/install")
        assert page.status == 200
        state_cookie = page.headers["Set-Cookie"].split(";")[0]
        found = re.search(r'id="add-to-slack" href="([^"]+)"', await page.text())
        assert found is not None
        consent = await browser.get(html.unescape(found.group(1)))
        form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', await consent.text()))
        back = await browser.get(
            f"{slack.base_url}oauth/v2/authorize/decide",
            params={**{k: html.unescape(v) for k, v in form.items()}, "decision": decision},
            allow_redirects=False,
        )
        assert back.status == 302
        location = urlsplit(back.headers["Location"])
        headers = {"Cookie": state_cookie} if cookie else {}
        done = await browser.get(f"{app_url}{location.path}?{location.query}", headers=headers)
        return f"{done.status} {await done.text()}"


class Deployment:
    """One web process in OAuth mode, and the means to install it and talk to it."""

    def __init__(
        self,
        *,
        slack: FakeSlack,
        state: State,
        settings: Settings,
        workspaces: Workspaces,
        app: AsyncApp,
        http: TestClient[web.Request, web.Application],
        after_ack: AfterAck,
    ) -> None:
        self.slack = slack
        self.state = state
        self.settings = settings
        self.workspaces = workspaces
        self.app = app
        self.http = http
        self.after_ack = after_ack

    async def install(self, team: str, *, decision: str = "allow", cookie: bool = True) -> str:
        """Click "Add to Slack" as someone of `team`, decide on Slack's page; the page shown."""
        app_url = str(self.http.make_url("/")).rstrip("/")
        return await click_add_to_slack(app_url, self.slack, team, decision=decision, cookie=cookie)

    async def post(self, body: str, content_type: str) -> aiohttp.ClientResponse:
        headers = signed_headers(SECRET, body, content_type=content_type)
        return await self.http.post("/slack/events", data=body.encode(), headers=headers)

    async def sora(self, team: str, text: str = "a lighthouse at dusk") -> None:
        body = sora_body(team, text)
        resp = await self.post(body, FORM)
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(self.after_ack.idle(), timeout=10)

    async def event(self, team: str, event: dict[str, Any]) -> None:
        envelope = {
            "token": "legacy",
            "team_id": team,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{time.monotonic_ns()}",
            "event_time": int(time.time()),
        }
        resp = await self.post(event_body(envelope), JSON_TYPE)
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(self.after_ack.idle(), timeout=10)

    async def keys(self) -> list[str]:
        return [k async for k in self.state.redis.scan_iter(match=f"{self.state.keys.prefix}:*")]


DeploymentFactory = Callable[..., Awaitable[Deployment]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        for team, name in TEAMS.items():
            fake.add_team(team, name)
        fake.seed_channel("video-ideas", CHANNEL)
        fake.seed_user(USER, "ada", display_name="Ada")
        yield fake


@pytest.fixture
async def make_deployment(
    slack: FakeSlack, real_state: State, prefix: str
) -> AsyncIterator[DeploymentFactory]:
    made: list[Deployment] = []

    async def make(**overrides: Any) -> Deployment:
        settings = oauth_settings(slack, prefix, **overrides)
        await real_state.queue.ensure_group()
        workspaces = open_workspaces(settings, real_state.redis, real_state.keys)
        after_ack = AfterAck()
        app = build_app(
            settings=settings, state=real_state, after_ack=after_ack, workspaces=workspaces
        )
        http = TestClient(TestServer(build_web_app(app, state=real_state), host="127.0.0.1"))
        await http.start_server()
        slack.redirect_uri = str(http.make_url("/slack/oauth_redirect"))
        deployment = Deployment(
            slack=slack,
            state=real_state,
            settings=settings,
            workspaces=workspaces,
            app=app,
            http=http,
            after_ack=after_ack,
        )
        made.append(deployment)
        return deployment

    yield make
    for d in made:
        await d.http.close()
        await d.workspaces.aclose()


@pytest.fixture
async def deployment(make_deployment: DeploymentFactory) -> Deployment:
    return await make_deployment()


# ---- installing ---------------------------------------------------------------------------


async def test_add_to_slack_installs_the_workspace_with_the_manifests_scopes(
    deployment: Deployment, slack: FakeSlack
) -> None:
    page = await deployment.install("T0ALPHA")
    assert page.startswith("200 ") and "is installed in Alpha Inc" in page
    [exchange] = [c for c in slack.calls if c.method == "oauth.v2.access"]
    assert exchange.error is None
    bot = await deployment.workspaces.bot("T0ALPHA")
    assert bot.team_id == "T0ALPHA" and bot.bot_user_id == BOT_USER_ID
    assert bot.bot_scopes == bot_scopes()  # one list: the manifest's
    assert slack.token_teams[bot.bot_token or ""] == "T0ALPHA"


async def test_a_redirect_without_the_install_pages_state_installs_nothing(
    deployment: Deployment, slack: FakeSlack
) -> None:
    other_browser = await deployment.install("T0ALPHA", cookie=False)
    assert other_browser.startswith("400 ") and "another browser" in other_browser
    forged = await deployment.http.get(
        "/slack/oauth_redirect?code=x&state=forged",
        headers={"Cookie": "slack-app-oauth-state=forged"},
    )
    assert forged.status == 401 and "already used or is too old" in await forged.text()
    cancelled = await deployment.install("T0ALPHA", decision="cancel")
    assert "cancelled" in cancelled
    assert slack.installs == 0
    assert await deployment.workspaces.store.teams() == []


async def test_an_enterprise_grid_org_wide_install_is_refused_and_its_token_revoked(
    deployment: Deployment, slack: FakeSlack
) -> None:
    slack.add_team("T0ORG", "Big Org", enterprise_id="E0BIG", org_wide=True)
    page = await deployment.install("T0ORG")
    assert page.startswith("400 ") and "each workspace" in page
    assert await deployment.workspaces.store.teams() == []
    [revoke] = [c for c in slack.calls if c.method == "auth.revoke"]
    assert revoke.token in slack.revoked


async def test_a_workspace_of_an_enterprise_installs_like_any_other(
    deployment: Deployment, slack: FakeSlack
) -> None:
    slack.add_team("T0UNIT", "A unit", enterprise_id="E0BIG")
    assert "is installed in A unit" in await deployment.install("T0UNIT")
    bot = await deployment.workspaces.bot("T0UNIT")
    assert (bot.enterprise_id, bot.team_id) == ("E0BIG", "T0UNIT")


# ---- two workspaces, one deployment -------------------------------------------------------


async def test_two_workspaces_each_use_their_own_token_end_to_end(
    deployment: Deployment, slack: FakeSlack, real_state: State
) -> None:
    for team in TEAMS:
        assert "is installed" in await deployment.install(team)
    for team in TEAMS:
        await deployment.sora(team, f"an idea from {team}")
    roots = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert sorted(slack.team_of(c) or "" for c in roots) == sorted(TEAMS)
    # The worker shows each session through its own workspace's client.
    async with oauth_worker(deployment):
        await wait_until(lambda: _finished_all(real_state, CHANNEL, slack), "both locked", 60)
    # Every call in a thread carried the token of the workspace whose session it was.
    by_thread: dict[str, set[str | None]] = {}
    for c in slack.calls:
        ts = str(c.params.get("thread_ts") or "")
        if ts:
            by_thread.setdefault(ts, set()).add(slack.team_of(c))
    assert len(by_thread) == 2
    assert sorted(next(iter(teams)) or "" for teams in by_thread.values()) == sorted(TEAMS)
    assert all(len(teams) == 1 for teams in by_thread.values())
    # (The file upload goes to a pre-signed URL, with no token, as on Slack.)
    tokenless = {"oauth.v2.access", UPLOAD_METHOD}
    strays = [c.method for c in slack.calls if c.method not in tokenless and not slack.team_of(c)]
    assert strays == []


async def test_a_worker_sets_aside_a_session_of_a_workspace_it_has_no_installation_for(
    deployment: Deployment, slack: FakeSlack, real_state: State
) -> None:
    await deployment.install("T0ALPHA")
    stranger = make_session()
    stranger.origin = Origin(surface="slack", channel_id=CHANNEL, team_id="T0GAMMA", user_id=USER)
    await real_state.sessions.create(stranger, enqueue=True)
    calls = len(slack.calls)
    async with oauth_worker(deployment):
        [dead] = await wait_until(real_state.queue.dead_letters, "the dead letter")
    assert dead.job.session_id == stranger.id and "no installation" in dead.reason
    assert "T0GAMMA" in dead.reason
    assert slack.calls[calls:] == []  # nothing was sent to Slack with anyone's token
    assert (await real_state.queue.stats()).pending == 0


@contextlib.asynccontextmanager
async def oauth_worker(deployment: Deployment) -> AsyncIterator[Worker]:
    """A worker as `sora-copilot worker` runs in OAuth mode: one Slack surface per workspace."""
    state, settings = deployment.state, deployment.settings
    workspaces = open_workspaces(settings, state.redis, state.keys, rate_limit_retries=0)

    def per_workspace(client: Any, team_id: str) -> SlackSurface:
        return SlackSurface(client=client, state=state, settings=settings, workspace=team_id)

    surface = WorkspaceSurface(clients=workspaces, make=per_workspace)
    worker = Worker(
        state=state,
        engine=Engine(model=OfflineModel()),
        surface=surface,
        config=WorkerConfig(block_ms=50, reclaim_every_s=0.2, drain_s=1.0),
        admit=surface.admit,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        yield worker
    finally:
        stopping.set()
        await task
        await workspaces.aclose()


async def _finished_all(state: State, channel: str, slack: FakeSlack) -> bool:
    roots = [
        m
        for m in slack.messages(channel)
        if m.get("metadata", {}).get("event_payload", {}).get("kind") == "root"
    ]
    done = 0
    for root in roots:
        sid = await lookup(state, channel, root["ts"], TEAMS)
        session = await state.sessions.load(sid) if sid else None
        if session is not None and session.status == SessionStatus.LOCKED:
            done += 1
    return done == len(roots) == 2


# ---- uninstalling -------------------------------------------------------------------------


async def locked_in_library(state: State, team: str, *, expired: bool = False) -> str:
    """A locked session of `team` in the library (its session gone already if `expired`)."""
    session = locked(agent_turn(fixture_session()))
    session.origin = Origin(
        surface="slack",
        channel_id=CHANNEL,
        thread_ts=f"17000{len(team)}.{time.time_ns() % 10**6:06d}",
        user_id=USER,
        team_id=team,
    )
    await state.sessions.create(session)
    await state.library.add(LibraryEntry.from_session(session))
    if expired:
        await state.redis.delete(state.keys.session(session.id))
    return session.id


async def test_app_uninstalled_deletes_everything_kept_for_the_workspace_and_nothing_else(
    deployment: Deployment, slack: FakeSlack, real_state: State, caplog: pytest.LogCaptureFixture
) -> None:
    ids: dict[str, list[str]] = {}
    for team in TEAMS:
        await deployment.install(team)
        await deployment.sora(team)  # a running session
        ids[team] = [
            await locked_in_library(real_state, team),
            await locked_in_library(real_state, team, expired=True),
        ]
    [running_alpha] = await real_state.redis.zrange(real_state.keys.running_team("T0ALPHA"), 0, -1)
    ids["T0ALPHA"].append(running_alpha)
    for team in TEAMS:  # one library each: the same channel id is two channels
        assert len(await real_state.library.recent(team=team, channel=CHANNEL, limit=10)) == 2
    before = set(await deployment.keys())
    slack.revoke_team("T0ALPHA")
    with caplog.at_level("INFO", logger="sora.sessions"):
        await deployment.event("T0ALPHA", {"type": "app_uninstalled"})
    after = set(await deployment.keys())
    gone = before - after

    def alpha(key: str) -> bool:
        return "T0ALPHA" in key or any(sid in key for sid in ids["T0ALPHA"])

    assert after <= before
    assert {k for k in before if alpha(k)} <= gone  # every key of the workspace went
    assert not any("T0BETA" in k or any(sid in k for sid in ids["T0BETA"]) for k in gone)
    [line] = [json.loads(r.getMessage()) for r in caplog.records if "uninstalled" in r.getMessage()]
    assert line["sessions_deleted"] == 2 and line["library_entries_deleted"] == 2
    # The installation store's four records (installation, bot, installer, users) are the
    # rest: the count includes the sets that emptied as their sessions went.
    assert line["installation_deleted"] is True
    assert line["keys_deleted"] + 4 == len(gone), sorted(gone)
    library = await real_state.library.recent(team="T0BETA", channel=CHANNEL, limit=10)
    assert await real_state.library.recent(team="T0ALPHA", channel=CHANNEL, limit=10) == []
    assert sorted(e.session_id for e in library) == sorted(ids["T0BETA"])
    assert await real_state.running.count_team("T0BETA") == 1
    with pytest.raises(NotInstalled):
        await deployment.workspaces.bot("T0ALPHA")
    assert (await deployment.workspaces.bot("T0BETA")).team_id == "T0BETA"
    # A request from the uninstalled workspace is no longer served.
    await deployment.sora("T0ALPHA")
    assert await real_state.running.count_team("T0ALPHA") == 0


async def test_tokens_revoked_for_the_bot_uninstalls_the_workspace(
    deployment: Deployment,
) -> None:
    await deployment.install("T0ALPHA")
    await deployment.event(
        "T0ALPHA", {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": [BOT_USER_ID]}}
    )
    assert await deployment.workspaces.store.teams() == []


# ---- token rotation -------------------------------------------------------------------------


async def test_a_rotating_token_is_refreshed_once_however_many_processes_need_it(
    deployment: Deployment, slack: FakeSlack, real_state: State
) -> None:
    slack.token_rotation = True
    slack.token_ttl_s = 600  # the first token expires within SLACK_TOKEN_REFRESH_MINUTES
    await deployment.install("T0ALPHA")
    first = await deployment.workspaces.store.async_find_bot(enterprise_id=None, team_id="T0ALPHA")
    assert first is not None and first.bot_refresh_token
    slack.token_ttl_s = 43_200
    processes = [
        open_workspaces(deployment.settings, real_state.redis, real_state.keys) for _ in range(6)
    ]
    try:
        bots = await asyncio.gather(*(w.bot("T0ALPHA") for w in processes))
    finally:
        for w in processes:
            await w.aclose()
    assert slack.refreshes == 1
    assert {b.bot_token for b in bots} == {bots[0].bot_token} != {first.bot_token}
    assert [c.error for c in slack.calls if c.method == "oauth.v2.access"] == [None, None]
    stored = await deployment.workspaces.store.async_find_bot(enterprise_id=None, team_id="T0ALPHA")
    assert stored is not None and stored.bot_token == bots[0].bot_token
    assert json.dumps(stored.to_dict(), default=str).count("xoxe.xoxb") == 1
