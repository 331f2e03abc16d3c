"""The HTTP server of `sora-copilot serve`: Slack's request URL and a health check.

* `POST /slack/events`: slash commands, events and interactivity all arrive
  here; Bolt's aiohttp adapter functions turn the request into a Bolt request
  and back (slack_bolt 1.30 ships those functions, not a handler class), and
  Bolt verifies the signature before anything else looks at the body.
* `GET /healthz`: 200 `{"ok": true, "redis": "ok"}` while Redis answers a
  PING, else 503 with the reason, so a load balancer stops sending Slack's
  requests to a process that could not act on them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import metrics
from bot.app import build_app
from bot.config import Settings, oauth_enabled
from bot.sessions import BadInput
from bot.slack.client import close_client, make_client
from bot.slack.workspaces import open_workspaces
from state import State, describe

log = logging.getLogger("sora.web")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
HEALTH_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are far smaller
# Tokens Slack refuses for good: starting would only answer every request with an error.
FATAL_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


def build_web_app(bolt: AsyncApp, *, state: State) -> web.Application:
    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        bolt_response = await bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def install(request: web.Request) -> web.Response:
        assert bolt.oauth_flow is not None
        return await to_aiohttp_response(
            await bolt.oauth_flow.handle_installation(await to_bolt_request(request))
        )

    async def oauth_redirect(request: web.Request) -> web.Response:
        assert bolt.oauth_flow is not None
        return await to_aiohttp_response(
            await bolt.oauth_flow.handle_callback(await to_bolt_request(request))
        )

    async def healthz(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(state.redis.ping(), timeout=HEALTH_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            # Our words, never redis-py's text: this answer is public, and that text
            # can name hosts and commands.
            reason = f"unreachable: {describe(e)}"
            return web.json_response({"ok": False, "redis": reason}, status=503)
        return web.json_response({"ok": True, "redis": "ok"})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(EVENTS_PATH, slack_events)
    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(metrics.METRICS_PATH, metrics.handler(metrics.queue_refresher(state.queue)))
    if bolt.oauth_flow is not None:  # OAuth mode: many workspaces install the app
        app.router.add_get(bolt.oauth_flow.install_path, install)
        app.router.add_get(bolt.oauth_flow.redirect_uri_path, oauth_redirect)
    return app


async def check_token(settings: Settings, *, require_slack: bool = False) -> str | None:
    """Fail fast on a token Slack refuses; a Slack outage only warns (it may pass), unless
    `require_slack` (Socket Mode, which cannot start without it): then it is BadInput.
    The token's workspace (team id), when Slack said."""
    client = make_client(settings)
    try:
        reply = await client.auth_test()
        team = reply.get("team_id")
        return str(team) if team else None
    except SlackApiError as e:
        error = str(e.response.get("error"))
        if error in FATAL_AUTH_ERRORS:
            raise BadInput(f"Slack refused SLACK_BOT_TOKEN ({error}): check the token.") from e
        if require_slack:
            raise BadInput(f"Slack answered auth.test with {error}: try again shortly.") from e
        log.warning("auth.test failed (%s); starting anyway", error)
    except Exception as e:  # no network yet: Slack's requests will tell
        if require_slack:
            raise BadInput(f"Slack is not reachable at {settings.slack_api_url}: {e}") from e
        log.warning("auth.test failed (%s); starting anyway", e)
    finally:
        await close_client(client)
    return None


async def serve(
    *, settings: Settings, state: State, host: str, port: int, banner: str = ""
) -> None:
    """Serve until SIGTERM or SIGINT, then let in-flight listeners finish (drain_seconds).
    `banner`: a line to log once serving (where the settings came from)."""
    workspaces = None
    if oauth_enabled(settings):  # many workspaces: each one's token is in the store
        try:
            workspaces = open_workspaces(settings, state.redis, state.keys)
        except ValueError as e:
            raise BadInput(str(e)) from None
        client = workspaces.base
    else:
        await check_token(settings)
        client = make_client(settings)
    bolt = build_app(settings=settings, state=state, client=client, workspaces=workspaces)
    runner = web.AppRunner(build_web_app(bolt, state=state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving %s and %s on %s:%s. %s", EVENTS_PATH, HEALTH_PATH, host, port, banner)
    if bolt.oauth_flow is not None:
        log.info("OAuth: install page %s", bolt.oauth_flow.install_path)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await runner.cleanup()
    # Listeners go on after their ack (post the root, create the session): let them end.
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=settings.drain_seconds)
    await close_client(client)
    await state.redis.aclose()
