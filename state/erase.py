"""Deleting a session for good: every key it has, in one step (`/sora delete`).

What a session leaves in Redis: its hash, inbox, post ledger, lease, recorded
posts (tests' surface), its thread binding, its place in the live index and in
the running-session sets, and, once locked, its library entry and that entry's
ids in the library's three indexes. Its queued jobs, if any, find no session
and are acked as moot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bot.dialogue.models import Session
from state.keys import Keys

if TYPE_CHECKING:
    from state.home import HomeSessions
    from state.search import LibraryIndex

# KEYS: 1 session, 2 inbox, 3 posts, 4 lease, 5 recorded, 6 thread, 7 live,
#       8 running user, 9 running team, 10 running channel, 11 library prompt,
#       12 library all, 13 library channel, 14 library user, 15 the workspace's sessions.
# ARGV: sid, has thread. Returns how many keys were deleted.
_ERASE = """
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[11])
if ARGV[2] == '1' and redis.call('GET', KEYS[6]) == ARGV[1] then
  n = n + redis.call('DEL', KEYS[6])
end
redis.call('HDEL', KEYS[7], ARGV[1])
for i = 8, 15 do
  if i ~= 11 then redis.call('ZREM', KEYS[i], ARGV[1]) end
end
return n
"""


class Eraser:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._erase = redis.register_script(_ERASE)
        # The workspace's search index and its starter's Home list (another slot each:
        # their own calls), when set.
        self.index: LibraryIndex | None = None
        self.home: HomeSessions | None = None

    async def erase(self, session: Session) -> int:
        """Delete every key of `session` (it must be as stored: its origin names its
        thread and sets). Returns how many keys were deleted. 1 round trip."""
        k, sid, o = self._keys, session.id, session.origin
        thread = bool(o.channel_id and o.thread_ts)
        n = await self._erase(
            keys=[
                k.session(sid),
                k.inbox(sid),
                k.posts(sid),
                k.lease(sid),
                k.recorded(sid),
                k.thread(o.channel_id or "-", o.thread_ts or "-"),
                k.live,
                k.running_user(o.user_id or "-"),
                k.running_team(o.team_id or "-"),
                k.running_channel(o.channel_id or "-"),
                k.library_prompt(sid),
                k.library_all,
                k.library_channel(o.channel_id or "-"),
                k.library_user(o.user_id or "-"),
                k.workspace_sessions(o.team_id or "-"),
            ],
            args=[sid, "1" if thread else "0"],
        )
        if self.index is not None:
            await self.index.delete(sid, team_id=o.team_id)
        if self.home is not None:
            await self.home.forget(session)
        return int(n)
