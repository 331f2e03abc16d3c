"""A session's inbox: human interjections and control commands from web processes.

Web processes never write a session after creating it (the worker holding the
lease is its single writer). They RPUSH here instead; the worker reads the
inbox at the start of a turn (`peek`, or `SessionStore.snapshot`) and the same
atomic write that persists the turn removes exactly the entries it applied
(`SessionStore.save(..., consume_inbox=n)`). Entries pushed in between stay,
and a crash before the save loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from bot.dialogue.models import CleanModel, utcnow
from state._text import text
from state.errors import UnknownSchema
from state.keys import EVENT_DEDUPE_TTL_S, INBOX_MAX_ENTRIES, Keys

InboxKind = Literal["interjection", "stop", "lock", "retry"]


class InboxEntry(CleanModel):
    """One thing a human did that the next turn must take into account."""

    model_config = ConfigDict(frozen=True)

    kind: InboxKind
    author: str  # display name, as shown in the transcript
    user_id: str | None = None
    text: str = ""  # the interjection; empty for commands
    source_id: str | None = None  # e.g. the Slack message ts, for dedupe and 👀
    version: int | None = None  # a lock: the draft version pressed (None: the latest)
    at: datetime = Field(default_factory=utcnow)


class PushResult(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # `event_id` was seen before (a Slack retry)
    NO_SESSION = "no_session"  # expired or never existed
    FINISHED = "finished"  # locked or stopped: nobody will read it
    FULL = "full"  # too many unread entries


# Dedupe first, so a Slack retry of an event that found no session is also quiet.
# The inbox takes the session's remaining TTL, so it never outlives the session.
_PUSH = """
if ARGV[3] == '1' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[4]) then return 'duplicate' end
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'no_session' end
if status == 'locked' or status == 'stopped' then return 'finished' end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('RPUSH', KEYS[2], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'queued'
"""


def parse_entries(sid: str, raw: Iterable[str]) -> list[InboxEntry]:
    """Validate raw inbox JSON.

    An entry this build cannot read raises rather than being skipped: skipping it
    would let the next save consume (delete) it. A newer worker will apply it.
    """
    out: list[InboxEntry] = []
    for i, item in enumerate(raw):
        try:
            out.append(InboxEntry.model_validate_json(item))
        except ValidationError as e:
            raise UnknownSchema(
                f"inbox entry #{i} of session {sid} is not understood by this build "
                f"(written by a newer version?): {e.errors()[0]['msg']}"
            ) from e
    return out


class Inbox:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        max_entries: int = INBOX_MAX_ENTRIES,
        dedupe_ttl_s: int = EVENT_DEDUPE_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.max_entries = max_entries
        self._dedupe_ttl_s = dedupe_ttl_s
        self._push = redis.register_script(_PUSH)

    async def push(self, sid: str, entry: InboxEntry, *, event_id: str | None = None) -> PushResult:
        """Append `entry` (arrival order). 1 round trip.

        With `event_id`, the Slack event is deduplicated in the same atomic step
        (see `EventDedupe`), so a crash can never mark an event seen without
        queueing it. Control commands get twice the interjection room, so a
        flood of replies cannot lock out the Stop button.
        """
        cap = self.max_entries if entry.kind == "interjection" else 2 * self.max_entries
        result = await self._push(
            keys=[
                self._keys.session(sid),
                self._keys.inbox(sid),
                # The event's mark lives in the session's slot: the same script.
                self._keys.session_event(sid, event_id or "-"),
            ],
            args=[entry.model_dump_json(), cap, "1" if event_id else "0", self._dedupe_ttl_s],
        )
        return PushResult(text(result))

    async def peek(self, sid: str) -> list[InboxEntry]:
        """Unapplied entries, oldest first, without removing them. 1 round trip."""
        raw = await self._redis.lrange(self._keys.inbox(sid), 0, 2 * self.max_entries - 1)
        return parse_entries(sid, (text(r) for r in raw))

    async def size(self, sid: str) -> int:
        return int(await self._redis.llen(self._keys.inbox(sid)))
