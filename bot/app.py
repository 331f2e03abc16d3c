"""The Slack app: one Bolt `AsyncApp` for HTTP (`serve`) and Socket Mode (`dev`) alike.

`build_app` wires it once: the bot token and signing secret from settings, the
project's retrying Web API client, a middleware that puts `state`, `settings`
and the `sessions` service into every request's context (so a listener simply
names them as parameters), and each handler module's listeners.

Bolt runs with `process_before_response=True`: Slack gets its answer when a
listener returns, and each listener acks, hands its slow part to `after_ack`
(bot.background), and returns. That is how `/sora` acks in milliseconds and
posts the thread root afterwards.
Bolt's request verification (on by default, and never turned off here)
answers a forged signature or a timestamp older than five minutes with 401
before any listener or middleware of ours runs.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger import messages as bolt_messages
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.config import Settings
from bot.sessions import Sessions
from bot.slack.access import Access
from bot.slack.client import make_client
from bot.slack.home import HomeTab
from bot.slack.oauth import WorkspaceAuthorize, install_flow
from bot.slack.roots import Roots
from bot.slack.workspaces import Workspaces
from handlers import actions, commands, installs, messages, views
from handlers import home as home_handlers
from state import State

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

APP_NAME = "sora-copilot"


class _NoTokenSkippedWarning(logging.Filter):
    """Drops Bolt's "`token` will be unused" warning, which is about us, and wrong.

    Bolt reads SLACK_BOT_TOKEN from the environment whatever it is given, then
    warns that the token is unused because a client came too. The client is
    ours and carries that same token; the line would only send an operator
    looking for a misconfiguration that is not there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # In OAuth mode the app's client carries no token at all (each request gets its
        # workspace's), and Bolt says the same wrong thing about that empty one.
        return record.getMessage() not in (
            bolt_messages.warning_client_prioritized_and_token_skipped(),
            bolt_messages.warning_token_skipped(),
        )


def _quiet_token_warning() -> None:
    bolt_log = logging.getLogger(f"slack_bolt.{AsyncApp.__name__}")
    if not any(isinstance(f, _NoTokenSkippedWarning) for f in bolt_log.filters):
        bolt_log.addFilter(_NoTokenSkippedWarning())


def build_app(
    *,
    settings: Settings,
    state: State,
    client: AsyncWebClient | None = None,
    sessions: Sessions | None = None,
    after_ack: AfterAck | None = None,
    workspaces: Workspaces | None = None,
) -> AsyncApp:
    """The app, listeners registered. Needs SLACK_BOT_TOKEN, or `workspaces` (OAuth mode:
    many workspaces, each with its token in the installation store, and /slack/install).

    Without SLACK_SIGNING_SECRET (Socket Mode needs none) the app verifies HTTP
    requests against a random secret nobody knows, so none is ever accepted.
    """
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    ) or secrets.token_hex(32)
    _quiet_token_warning()
    if workspaces is not None:
        client = workspaces.base
        app = AsyncApp(
            name=APP_NAME,
            client=client,
            signing_secret=secret,
            request_verification_enabled=True,
            process_before_response=True,
            # An AsyncAuthorize instance (Bolt's documented seam beside an OAuth flow);
            # Bolt's annotation names only the plain-function form.
            authorize=WorkspaceAuthorize(workspaces),  # type: ignore[arg-type]
            oauth_flow=install_flow(settings=settings, state=state, workspaces=workspaces),
        )
    else:
        client = client or make_client(settings)
        if not client.token:
            raise ValueError("the Slack app needs SLACK_BOT_TOKEN")
        app = AsyncApp(
            name=APP_NAME,
            client=client,
            signing_secret=secret,
            request_verification_enabled=True,
            process_before_response=True,
        )
    service = sessions or Sessions(
        state=state, settings=settings, slack=Roots(client, clients=workspaces)
    )
    background = after_ack or AfterAck()
    home = HomeTab(state, access=Access(places=service.places))

    async def provide(context: AsyncBoltContext, next_: Callable[[], Awaitable[None]]) -> None:
        context["state"] = state
        context["settings"] = settings
        context["sessions"] = service
        context["after_ack"] = background
        context["home"] = home
        await next_()

    app.middleware(provide)
    for module in (commands, messages, actions, views, installs, home_handlers):
        module.register(app)
    return app


def socket_mode_handler(app: AsyncApp, app_token: str) -> AsyncSocketModeHandler:
    """Bolt's Socket Mode handler for `app` (`sora-copilot dev`)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    return AsyncSocketModeHandler(app, app_token)
