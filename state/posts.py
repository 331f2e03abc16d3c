"""The post ledger: the id of every message a surface posted for a turn.

A turn may be redone (its worker died after posting but before the save). The
redo finds what was already posted here and updates those messages instead of
posting them twice. Record each post right after it succeeds, before the save.
(Should even this record be lost, the surface can still find the post by the
metadata tag it carries.)

The ledger follows its session's TTL, so it disappears with the session.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from state._text import text_map
from state.keys import LIVE_SESSION_TTL_S, Keys

# Take the session's remaining TTL; with no session (yet), the live default.
# KEYS: session, ledger. ARGV[3]: the live default TTL (0: none).
_FOLLOW_TTL = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
elseif ttl == -2 and tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
"""
_RECORD = (
    """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
"""
    + _FOLLOW_TTL
    + "return 1\n"
)

# A post about to be tried: the attempt's mark, unless one is there. Returns 1 when it
# set the mark (no earlier attempt), else 0. Same TTL as a record.
_BEGIN = (
    """
local first = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""
    + _FOLLOW_TTL
    + "return first\n"
)


def field(turn: int, part: int) -> str:
    return f"{turn}:{part}"


def parse_ledger(raw: Mapping[str, str]) -> dict[int, dict[int, str]]:
    """`<turn>:<part>` -> id hash, as {turn: {part: id}}."""
    out: dict[int, dict[int, str]] = {}
    for key, message_id in raw.items():
        turn_s, _, part_s = key.partition(":")
        try:
            out.setdefault(int(turn_s), {})[int(part_s)] = message_id
        except ValueError:
            continue  # not a ledger field; nothing this build wrote
    return out


class PostLedger:
    def __init__(
        self, redis: Redis, keys: Keys, *, default_ttl_s: int | None = LIVE_SESSION_TTL_S
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._default_ttl_s = default_ttl_s
        self._record = redis.register_script(_RECORD)
        self._begin = redis.register_script(_BEGIN)

    async def record(self, sid: str, turn: int, part: int, message_id: str) -> None:
        """Remember that part `part` of turn `turn` is message `message_id`. 1 round trip."""
        await self._record(
            keys=[self._keys.session(sid), self._keys.posts(sid)],
            args=[field(turn, part), message_id, self._default_ttl_s or 0],
        )

    async def begin(self, sid: str, turn: int, part: int) -> bool:
        """Mark that part `part` of turn `turn` is about to be posted: True if no attempt
        was marked before (then nothing can have been posted, and the post needs no
        search of the thread first), False if one was (it may have posted without its
        record: a crash, a lost answer). 1 round trip.

        The mark is a field outside the `<turn>:<part>` grammar, so `all` skips it."""
        first = await self._begin(
            keys=[self._keys.session(sid), self._keys.posts(sid)],
            args=[f"try:{field(turn, part)}", "1", self._default_ttl_s or 0],
        )
        return int(first) == 1

    async def get(self, sid: str, turn: int) -> dict[int, str]:
        """{part: message id} of what was already posted for a turn. 1 round trip."""
        return (await self.all(sid)).get(turn, {})

    async def all(self, sid: str) -> dict[int, dict[int, str]]:
        """The whole ledger of a session: {turn: {part: message id}}. 1 round trip."""
        raw = await self._redis.hgetall(self._keys.posts(sid))
        return parse_ledger(text_map(raw))
