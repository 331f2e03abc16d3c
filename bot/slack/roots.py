"""Starting a session's thread in Slack, for the web process: its root, and the 👀.

`bot.sessions` decides; this module makes the calls and reads Slack's answers,
so that nothing outside `bot.slack` (and Bolt's listeners) handles slack_sdk's
errors. A refusal comes back as `SlackRefusal` with Slack's error code, no
answer as `SlackUnreachable`; `refusal_message` turns the first into the one
sentence the person who typed `/sora` reads.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.dialogue.models import Session
from bot.slack.blocks import METADATA_EVENT, root_blocks, root_text
from bot.slack.errors import (
    CONNECTION_ERRORS,
    SLACK_OR_CONNECTION,
    SlackRefusal,
    SlackUnreachable,
    slack_error,
)
from bot.slack.people import People
from bot.slack.workspaces import Clients, NotInstalled

log = logging.getLogger("sora.slack")

_DELETE_FAILED: tuple[type[Exception], ...] = (*SLACK_OR_CONNECTION, NotInstalled)
_REACT_FAILED: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, NotInstalled)


class Roots:
    """The web process's Slack calls: thread roots, reactions, people; for each workspace
    its own client in OAuth mode (`clients`, which raises NotInstalled), else `client`."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        people: People | None = None,
        clients: Clients | None = None,
    ) -> None:
        self.client = client
        self.people = people or People(client)
        self.clients = clients
        self._people: dict[str, tuple[AsyncWebClient, People]] = {}

    async def client_of(self, team_id: str | None) -> AsyncWebClient:
        """The client speaking for `team_id` (raises NotInstalled in OAuth mode)."""
        if self.clients is None:
            return self.client
        return await self.clients.for_team(team_id)

    async def people_of(self, team_id: str | None) -> People:
        """People of `team_id` (ids are per workspace); raises NotInstalled in OAuth mode."""
        if self.clients is None or team_id is None:
            return self.people
        client = await self.clients.for_team(team_id)
        cached = self._people.get(team_id)
        if cached is None or cached[0] is not client:
            cached = self._people[team_id] = (client, People(client))
        return cached[1]

    async def post(
        self, session: Session, channel: str, team_id: str | None = None
    ) -> tuple[str, str]:
        """Post `session`'s thread root in `channel`; (channel id, root ts).

        The caller has taken the channel's post token. Raises SlackRefusal,
        SlackUnreachable or NotInstalled.
        """
        client = await self.client_of(team_id)
        try:
            reply = await client.chat_postMessage(
                channel=channel,
                text=root_text(session),
                blocks=root_blocks(session),
                metadata={
                    "event_type": METADATA_EVENT,
                    "event_payload": {"session": session.id, "kind": "root"},
                },
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as e:
            raise SlackRefusal(slack_error(e) or "unknown_error") from e
        except CONNECTION_ERRORS as e:
            raise SlackUnreachable(str(e)) from e
        return str(reply["channel"]), str(reply["ts"])

    async def delete(self, channel: str, ts: str, team_id: str | None = None) -> None:
        """Delete a root that belongs to no session (best effort)."""
        try:
            client = await self.client_of(team_id)
            await client.chat_delete(channel=channel, ts=ts)
        except _DELETE_FAILED as e:
            log.warning("could not delete the root %s in %s: %s", ts, channel, e)

    async def react(self, channel: str, ts: str, name: str, team_id: str | None = None) -> None:
        """Add reaction `name` to a message (best effort; already there is fine)."""
        try:
            client = await self.client_of(team_id)
            await client.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as e:
            if slack_error(e) != "already_reacted":
                log.warning("could not add %s to %s: %s", name, ts, e)
        except _REACT_FAILED as e:
            log.warning("could not add %s to %s: %r", name, ts, e)


def refusal_message(error: str) -> str:
    """What the person who typed `/sora` reads when Slack refused the thread's root."""
    if error in ("not_in_channel", "channel_not_found", "is_archived"):
        return (
            "I can't post in this channel, so nothing was started: invite me with "
            "`/invite @Sora Copilot` (or use a public channel) and try again."
        )
    return f"Slack refused the thread's first message ({error}), so nothing was started."
