"""Who may see a library entry: where it was made, and whether the viewer is there.

A prompt made in a public channel is the workspace's. One made anywhere else (a
private channel, a DM, a group DM, a channel shared with another organisation) is
shown only to members of that conversation. Both facts are Slack's answers, never
guessed from a channel id (C ids are public and private channels alike): what the
place is comes from `bot.slack.privacy.Places` (conversations.info, cached), who is in
it from `conversations.members` (Tier 4, paginated by cursor:
api.slack.com/methods/conversations.members), cached briefly per workspace and
channel. When Slack does not answer, the conversation counts as hidden: an entry
missing from someone's Home costs little, one shown to the wrong person cannot be
taken back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.privacy import PUBLIC, Places

log = logging.getLogger("sora.slack")

ACCESS_TTL_S = 60.0
_CACHE_MAX = 10_000
_MEMBERS_PAGE = 1000
_CONCURRENT_LOOKUPS = 8


@dataclass(frozen=True)
class Place:
    public: bool
    members: frozenset[str]  # empty for a public place (everyone may see it)
    known: bool = True  # False: Slack did not answer; nobody sees it


class Access:
    """The conversations whose entries a person may not see, with Slack's answers cached."""

    def __init__(
        self,
        *,
        places: Places | None = None,
        ttl_s: float = ACCESS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.places = places or Places()
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Place]] = {}

    async def hidden(
        self, client: AsyncWebClient, *, team: str, user: str, channels: Iterable[str]
    ) -> list[str]:
        """The channels among `channels` whose entries `user` may not see."""
        wanted = sorted(set(channels))
        gate = asyncio.Semaphore(_CONCURRENT_LOOKUPS)

        async def one(channel: str) -> Place:
            async with gate:
                return await self.place(client, team=team, channel=channel)

        places = await asyncio.gather(*(one(c) for c in wanted))
        return [
            c
            for c, p in zip(wanted, places, strict=True)
            if not p.known or (not p.public and user not in p.members)
        ]

    async def may_see(
        self, client: AsyncWebClient, *, team: str, user: str, channel: str | None
    ) -> bool:
        if channel is None:
            return True
        return not await self.hidden(client, team=team, user=user, channels=[channel])

    async def place(self, client: AsyncWebClient, *, team: str, channel: str) -> Place:
        now = self._clock()
        hit = self._cache.get((team, channel))
        if hit is not None and hit[0] > now:
            return hit[1]
        place = await self._ask(client, channel)
        if len(self._cache) >= _CACHE_MAX:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
        self._cache[(team, channel)] = (now + self._ttl_s, place)
        return place

    async def _ask(self, client: AsyncWebClient, channel: str) -> Place:
        try:
            place = await self.places.place(client, channel)
            if place == PUBLIC:
                return Place(public=True, members=frozenset())
            if place == "unknown":
                return Place(public=False, members=frozenset(), known=False)
            members: set[str] = set()
            cursor: str | None = None
            while True:
                reply = await client.conversations_members(
                    channel=channel, limit=_MEMBERS_PAGE, cursor=cursor
                )
                members.update(str(m) for m in reply.get("members") or [])
                cursor = (reply.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
            return Place(public=False, members=frozenset(members))
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("who may see %s is unknown (hidden for now): %s", channel, e)
            return Place(public=False, members=frozenset(), known=False)
