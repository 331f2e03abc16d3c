"""The app's own lifecycle in a workspace: `app_uninstalled` and `tokens_revoked`.

Slack sends both without a usable token (Bolt skips authorize for them), so
they only act on what the app kept: the workspace's installation is deleted
and its running sessions are stopped (`Sessions.uninstall`). Slack sends no
more events for a workspace the app was removed from.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.app.async_app import AsyncApp

from bot.background import AfterAck
from bot.sessions import Sessions


def register(app: AsyncApp) -> None:
    app.event("app_uninstalled")(on_app_uninstalled)
    app.event("tokens_revoked")(on_tokens_revoked)


async def on_app_uninstalled(body: dict[str, Any], sessions: Sessions, after_ack: AfterAck) -> None:
    await after_ack.submit(sessions.uninstall(body.get("team_id"), why="app_uninstalled"))


async def on_tokens_revoked(
    body: dict[str, Any], event: dict[str, Any], sessions: Sessions, after_ack: AfterAck
) -> None:
    # The app keeps no user tokens: only a revoked bot token ends its use of the workspace.
    if (event.get("tokens") or {}).get("bot"):
        await after_ack.submit(sessions.uninstall(body.get("team_id"), why="tokens_revoked"))
