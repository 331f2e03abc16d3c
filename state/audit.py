"""The audit trail: who did what to which session, and when, one stream per workspace.

Every action a person takes (start, interject, stop, lock, retry, delete, render,
settings) and every lock, whoever made it (the persona approving, the round limit,
a person's Lock), is appended to a capped Redis stream of its workspace
(`Keys.audit(team)`, trimmed to about `maxlen` entries with `MAXLEN ~`). The
stream id's time is Redis's clock, so entries of one workspace are in the order
they were written, whichever process wrote them. What people typed is never kept
here: an interjection is recorded as an interjection, not its text.

Writing is best-effort after the action itself is saved: a Redis failure here is
logged and loses one entry, never the action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from state.keys import AUDIT_MAXLEN, Keys

log = logging.getLogger("sora.audit")

# What a person does, and "locked": a session was locked (by anyone, for any reason).
ACTIONS = (
    "start",
    "interject",
    "stop",
    "lock",
    "retry",
    "delete",
    "render",
    "settings",
    "locked",
)
NO_TEAM = "-"  # sessions with no workspace id (an app installed before it was recorded)
_FIELDS = ("action", "actor", "actor_name", "session", "detail")


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    id: str  # the stream id: `<ms>-<seq>`, Redis's time of the write
    team: str
    action: str
    actor: str  # a Slack user id, or empty for the agents and the round limit
    actor_name: str
    session: str
    detail: str

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-", 1)[0]) / 1000, tz=UTC)


class AuditTrail:
    def __init__(self, redis: Redis, keys: Keys, *, maxlen: int = AUDIT_MAXLEN) -> None:
        self._redis = redis
        self._keys = keys
        self.maxlen = maxlen

    async def record(
        self,
        team: str | None,
        action: str,
        *,
        session: str = "",
        actor: str = "",
        actor_name: str = "",
        detail: str = "",
    ) -> bool:
        """Append one entry to `team`'s trail. 1 round trip; False (logged) if Redis failed."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        try:
            await self._redis.xadd(
                self._keys.audit(team or NO_TEAM),
                {
                    "action": action,
                    "actor": actor,
                    "actor_name": actor_name,
                    "session": session,
                    "detail": detail,
                },
                maxlen=self.maxlen,
                approximate=True,
            )
        except (RedisError, OSError) as e:
            log.warning("audit: could not record %s of session %s: %r", action, session, e)
            return False
        return True

    async def read(
        self, team: str, *, since: datetime | None = None, count: int | None = None
    ) -> list[AuditEntry]:
        """`team`'s entries from `since` (all without it), oldest first; at most `count`."""
        start = f"{int(since.timestamp() * 1000)}-0" if since is not None else "-"
        rows = await self._redis.xrange(self._keys.audit(team), min=start, max="+", count=count)
        return [_entry(team, entry_id, dict(fields or {})) for entry_id, fields in rows or []]

    async def teams(self) -> list[str]:
        """Every workspace with a trail, sorted."""
        head, _, tail = self._keys.audit_pattern.partition("*")
        found: set[str] = set()
        async for key in self._redis.scan_iter(match=self._keys.audit_pattern, count=500):
            name = _text(key)
            if name.startswith(head) and name.endswith(tail):
                found.add(name[len(head) : len(name) - len(tail)])
        return sorted(found)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry(team: str, entry_id: object, fields: dict[Any, Any]) -> AuditEntry:
    values = {_text(k): _text(v) for k, v in fields.items()}
    return AuditEntry(
        id=_text(entry_id), team=team, **{name: values.get(name, "") for name in _FIELDS}
    )
