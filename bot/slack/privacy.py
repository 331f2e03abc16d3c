"""Where a session was made decides where its prompt may be shown.

A prompt made anywhere but a public channel (a private channel, a DM, a group DM, a
Slack Connect channel shared with another organisation) stays there: it is never
cross-posted to the prompts channel, and the locked reply says so in one line. The
only exception is opt-in: PRIVATE_PROMPTS_CHANNEL collects private prompts in a
channel that is itself private (checked, each time, with Slack), never a public one.

The decision is Slack's answer to `conversations.info` (cached a few minutes per
channel), never the channel id's first letter: C ids are public and private channels
alike since 2021. It is taken again, uncached, at the lock, so a channel made private
during a session counts as private. When Slack does not answer (a missing scope, an
error) the channel counts as private: a prompt kept in its thread by mistake costs
little, one shown to the whole workspace cannot be taken back.

Slack's conversation object (docs.slack.dev/reference/objects/conversation-object,
api.slack.com/types/conversation): `is_channel` and not `is_private` is a public
channel; `is_private` a private channel (`is_group` for one made before March 2021)
or a group DM (`is_mpim`); `is_im` a DM (whose object carries none of the channel
booleans); `is_ext_shared` (with `is_shared`) a channel shared with another
organisation, `is_pending_ext_shared` one being shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.dialogue.models import Session

log = logging.getLogger("sora.slack")

Place = Literal["public", "private_channel", "dm", "group_dm", "shared", "unknown"]
PUBLIC: Place = "public"
CACHE_TTL_S = 300.0
_CACHE_MAX = 10_000

# How the locked reply names each private place.
_NAMES: dict[str, str] = {
    "private_channel": "private channel",
    "dm": "direct message",
    "group_dm": "group message",
    "shared": "channel shared with another organisation",
    "unknown": "conversation (Slack did not say whether it is public)",
}


def place_of(info: Mapping[str, Any]) -> Place:
    """The kind of place a `conversations.info` channel object describes."""
    if info.get("is_im"):
        return "dm"
    if info.get("is_mpim"):
        return "group_dm"
    if info.get("is_ext_shared") or info.get("is_pending_ext_shared"):
        return "shared"
    if info.get("is_private") or info.get("is_group"):
        return "private_channel"
    if info.get("is_channel"):
        return "public"
    return "unknown"


def is_private(place: str | None) -> bool:
    """Everything but a known public channel is private (None: not known yet)."""
    return place != PUBLIC


class Places:
    """`conversations.info`, asked once per channel every few minutes (with the client of
    the channel's workspace: channel ids are unique across workspaces)."""

    def __init__(
        self,
        *,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, Place]] = {}

    async def place(self, client: AsyncWebClient, channel: str, *, fresh: bool = False) -> Place:
        """What kind of place `channel` is; `fresh` asks Slack even if it was just asked."""
        now = self.clock()
        cached = self._cache.get(channel)
        if cached is not None and not fresh and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            reply = await client.conversations_info(channel=channel)
            found = place_of(reply.get("channel") or {})
        except SlackApiError as e:
            log.warning(
                "conversations.info %s refused (%s): treated as private",
                channel,
                e.response.get("error"),
            )
            return "unknown"  # not cached: the next ask may get an answer
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[channel] = (now, found)
        return found


def stays_line(place: str, collected_in: str | None) -> str:
    """The locked reply's one line for a prompt made in a private place."""
    where = _NAMES.get(place, "conversation")
    if collected_in:
        return (
            f":lock: Made in a {where}: this prompt is not posted in any public channel; "
            f"it is collected only in the private channel <#{collected_in}>."
        )
    return (
        f":lock: Made in a {where}: this prompt stays here. It is not posted to the prompts "
        "channel or listed anywhere else."
    )


async def collection_channel(
    places: Places,
    client: AsyncWebClient,
    place: str,
    *,
    prompts: str | None,
    private_prompts: str | None,
) -> str | None:
    """Where a prompt made in `place` is collected: the prompts channel for a public one;
    for a private one, PRIVATE_PROMPTS_CHANNEL if Slack says now that it is private;
    else nowhere."""
    if not is_private(place):
        return prompts
    if not private_prompts:
        return None
    kind = await places.place(client, private_prompts, fresh=True)
    if kind == "private_channel":
        return private_prompts
    log.error(
        "PRIVATE_PROMPTS_CHANNEL %s is not a private channel Slack shows this app (%s): "
        "private prompts are not collected there",
        private_prompts,
        kind,
    )
    return None


@dataclass(frozen=True)
class LockDecision:
    place: Place  # what Slack says the session's channel is, now
    stays: str | None  # the locked reply's line for a private place
    collect_in: str | None  # the channel to cross-post to, if any


async def decide_at_lock(
    places: Places, client: AsyncWebClient, session: Session, settings: Settings
) -> LockDecision:
    """Where a session's locked prompt may go, asked of Slack again at the lock."""
    channel = session.origin.channel_id
    place: Place = await places.place(client, channel, fresh=True) if channel else "unknown"
    collect_in = await collection_channel(
        places,
        client,
        place,
        prompts=settings.prompts_channel,
        private_prompts=settings.private_prompts_channel,
    )
    stays = stays_line(place, collect_in) if is_private(place) else None
    return LockDecision(place=place, stays=stays, collect_in=collect_in)
