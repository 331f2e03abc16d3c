"""Slack users by id: display names and admin bits, looked up with users.info and cached."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("sora.slack")

PEOPLE_TTL_S = 300.0  # a renamed user or a new admin shows within five minutes
PEOPLE_MAX = 5_000


@dataclass(frozen=True, kw_only=True)
class Person:
    id: str
    name: str  # display name, as the transcript shows it
    is_admin: bool  # workspace admin or owner


class People:
    """Slack users by id (users.info), cached briefly: names for the transcript, admin bits.

    A lookup that fails gives the id as the name and no admin rights, so an
    outage can never grant a permission.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_s: float = PEOPLE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Person]] = {}

    async def get(self, user_id: str) -> Person:
        now = self._clock()
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            reply = await self._client.users_info(user=user_id)
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("users.info %s failed: %s", user_id, e)
            return Person(id=user_id, name=user_id, is_admin=False)
        person = person_from(reply.get("user") or {}, user_id)
        if len(self._cache) >= PEOPLE_MAX:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= PEOPLE_MAX:
                self._cache.clear()
        self._cache[user_id] = (now + self._ttl_s, person)
        return person


def person_from(user: dict[str, Any], user_id: str) -> Person:
    profile = user.get("profile") or {}
    name = (
        profile.get("display_name")
        or profile.get("real_name")
        or user.get("real_name")
        or user.get("name")
        or user_id
    )
    admin = any(user.get(k) for k in ("is_admin", "is_owner", "is_primary_owner"))
    return Person(id=user_id, name=str(name), is_admin=bool(admin))
