"""Installing the app by OAuth: Bolt's async flow, with our store, pages and authorize.

* `GET /slack/install`: a page with an "Add to Slack" button whose link goes
  to Slack's authorize page with the manifest's bot scopes and a fresh
  `state` (kept in Redis, and in a cookie of the installer's browser).
* `GET /slack/oauth_redirect`: Slack sends the installer back with a `code`;
  Bolt checks the `state` (same browser, issued by us, used once), exchanges
  the code with `oauth.v2.access` through SLACK_API_URL, and we save the
  installation, encrypted, in Redis (`state.installations`).
* Enterprise Grid org-wide installs are refused with a page that says so, and
  the token Slack just issued is revoked: this app keys everything by
  workspace. A workspace of an Enterprise Grid org installs like any other.
* `WorkspaceAuthorize`: Bolt's per-request authorize, from the store (through
  `Workspaces`, which refreshes rotating tokens one process at a time), with
  no `auth.test` round trip per request: the store kept what it answered at
  install.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.authorization.authorize_result import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.error import BoltError
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.config import Settings
from bot.slack.manifest import bot_scopes
from bot.slack.workspaces import NotInstalled, Workspaces
from state import State
from state.installations import OrgWideInstallRefused, RedisOAuthStateStore

log = logging.getLogger("sora.oauth")

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
APP_TITLE = "Sora Copilot"
ORG_WIDE_REFUSED = (
    "Sora Copilot cannot be installed across a whole Enterprise Grid organization. "
    "Install it in each workspace that will use it: open this page from that workspace."
)
_HTML = {"Content-Type": "text/html; charset=utf-8"}


def authorize_url(api_url: str) -> str:
    """Slack's authorize page beside its Web API: `https://slack.com/oauth/v2/authorize`
    for `https://slack.com/api/` (and the fake Slack's for the fake's API URL)."""
    base = api_url.rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    return f"{base}/oauth/v2/authorize"


def _page(title: str, body: str, *, status: int = 200) -> BoltResponse:
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem;
  color: #1d1c1d; line-height: 1.5; }}
a.add {{ display: inline-flex; align-items: center; gap: .5rem; padding: .6rem 1.1rem;
  border: 1px solid #ddd; border-radius: 6px; color: #1d1c1d; font-weight: 600;
  text-decoration: none; }}
a.add:hover {{ background: #f8f8f8; }}
code {{ background: #f4f4f4; padding: 0 .25rem; border-radius: 3px; }}
</style></head><body>
{body}
</body></html>
"""
    return BoltResponse(status=status, body=text, headers=dict(_HTML))


class InstallFlow(AsyncOAuthFlow):
    """Bolt's flow with this app's install page, and org-wide installs refused."""

    async def build_install_page_html(self, url: str, request: AsyncBoltRequest) -> str:
        scopes = "".join(
            f"<li><code>{html.escape(s)}</code></li>" for s in self.settings.scopes or ()
        )
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Install {APP_TITLE}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem;
  color: #1d1c1d; line-height: 1.5; }}
a.add {{ display: inline-block; padding: .6rem 1.1rem; border: 1px solid #ddd;
  border-radius: 6px; color: #1d1c1d; font-weight: 600; text-decoration: none; }}
a.add:hover {{ background: #f8f8f8; }}
</style></head><body>
<h1>{APP_TITLE}</h1>
<p>Type <code>/sora</code> and an idea in a channel: a persona and the Sora Copilot write a
text-to-video prompt together in a thread, and anyone in the channel can join in.</p>
<p><a class="add" id="add-to-slack" href="{html.escape(url)}">Add to Slack</a></p>
<details><summary>What the app may do in your workspace</summary><ul>{scopes}</ul></details>
</body></html>
"""

    async def store_installation(
        self, request: AsyncBoltRequest, installation: Installation
    ) -> None:
        try:
            await self.settings.installation_store.async_save(installation)
        except OrgWideInstallRefused as e:
            if installation.bot_token:
                # Slack issued a token for the whole org: give it back, keep nothing.
                try:
                    await self.client.auth_revoke(token=installation.bot_token)
                except SlackApiError as revoke_error:
                    log.warning("could not revoke an org-wide token: %s", revoke_error)
            log.info("refused an org-wide install for enterprise %s", installation.enterprise_id)
            raise _OrgWideRefused(str(e)) from None
        log.info(
            '{"event": "installed", "team": "%s", "enterprise": "%s"}',
            installation.team_id,
            installation.enterprise_id or "",
        )


class _OrgWideRefused(BoltError):
    pass


async def _success(args: AsyncSuccessArgs) -> BoltResponse:
    inst = args.installation
    team = html.escape(inst.team_name or inst.team_id or "your workspace")
    link = html.escape(f"slack://app?team={inst.team_id}&id={inst.app_id}")
    return _page(
        f"{APP_TITLE} is installed",
        f"""<h1 id="installed">{APP_TITLE} is installed in {team}</h1>
<p>Invite it to a channel with <code>/invite @Sora Copilot</code>, then type
<code>/sora</code> and an idea.</p>
<p><a class="add" href="{link}">Open Slack</a></p>""",
    )


async def _failure(args: AsyncFailureArgs) -> BoltResponse:
    if isinstance(args.error, _OrgWideRefused):
        return _page(
            "Not installed",
            f'<h1>Not installed</h1><p id="reason">{html.escape(ORG_WIDE_REFUSED)}</p>',
            status=400,
        )
    why = {
        "access_denied": "The installation was cancelled in Slack.",
        "invalid_browser": "This page was opened in another browser than the install page.",
        "invalid_state": "This installation link was already used or is too old.",
    }.get(args.reason, f"Slack did not complete the installation ({args.reason}).")
    return _page(
        "Not installed",
        f'<h1>Not installed</h1><p id="reason">{html.escape(why)}</p>'
        f'<p><a class="add" href="{INSTALL_PATH}">Try again</a></p>',
        status=args.suggested_status_code,
    )


class WorkspaceAuthorize(AsyncAuthorize):
    """Bolt's authorize for each request: the workspace's bot from the store, no auth.test."""

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_: Any,
    ) -> AuthorizeResult | None:
        try:
            bot = await self.workspaces.bot(team_id)
        except NotInstalled:
            log.info("a request from workspace %s, where the app is not installed", team_id)
            return None
        return AuthorizeResult(
            enterprise_id=bot.enterprise_id,
            team_id=bot.team_id,
            bot_user_id=bot.bot_user_id,
            bot_id=bot.bot_id,
            bot_token=bot.bot_token,
            bot_scopes=bot.bot_scopes,
            user_id=user_id,
        )


def install_flow(*, settings: Settings, state: State, workspaces: Workspaces) -> InstallFlow:
    """Bolt's OAuth flow for this app (OAuth mode: SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)."""
    secret = settings.slack_client_secret
    if not settings.slack_client_id or secret is None:
        raise ValueError("OAuth needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
    oauth = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=secret.get_secret_value(),
        scopes=bot_scopes(),
        user_scopes=[],
        redirect_uri=settings.slack_redirect_uri,
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        authorization_url=authorize_url(settings.slack_api_url),
        installation_store=workspaces.store,
        installation_store_bot_only=True,
        token_rotation_expiration_minutes=settings.slack_token_refresh_minutes,
        state_store=RedisOAuthStateStore(state.redis, state.keys),
        callback_options=AsyncCallbackOptions(success=_success, failure=_failure),
        logger=log,
    )
    oauth.authorize = WorkspaceAuthorize(workspaces)
    return InstallFlow(client=workspaces.base, settings=oauth, logger=log)
