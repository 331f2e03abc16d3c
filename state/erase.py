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
from state.keys import NO_TEAM, Keys

if TYPE_CHECKING:
    from state.home import HomeSessions
    from state.search import LibraryIndex

# The workspace's part, in its slot. KEYS: 1 thread, 2 running user, 3 running team,
# 4 running channel, 5 library prompt, 6 library all, 7 library channel, 8 library user.
# ARGV: sid, has thread. Returns how many keys were deleted.
_ERASE_WS = """
local n = redis.call('DEL', KEYS[5])
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  n = n + redis.call('DEL', KEYS[1])
end
for i = 2, 8 do
  if i ~= 5 then redis.call('ZREM', KEYS[i], ARGV[1]) end
end
return n
"""


class Eraser:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._erase_ws = redis.register_script(_ERASE_WS)
        # The workspace's search index and its starter's Home list (another slot each:
        # their own calls), when set.
        self.index: LibraryIndex | None = None
        self.home: HomeSessions | None = None

    async def erase(self, session: Session) -> int:
        """Delete every key of `session`; how many keys were deleted (see `erase_apart`)."""
        in_workspace, own = await self.erase_apart(session)
        return in_workspace + own

    async def erase_apart(self, session: Session) -> tuple[int, int]:
        """Delete every key of `session` (it must be as stored: its origin names its
        thread and sets). Returns how many keys were deleted: of its workspace's (its
        thread binding, its library entry), and of its own.

        One step per slot (4 round trips), ordered so that a crash between two leaves
        something a second `erase` (or the uninstall) still finds: the workspace's keys
        of it, the live index, the session's own keys, and last its place in the
        workspace's index of sessions."""
        k, sid, o = self._keys, session.id, session.origin
        team = o.team_id or NO_TEAM
        thread = bool(o.channel_id and o.thread_ts)
        n = int(
            await self._erase_ws(
                keys=[
                    k.thread(team, o.channel_id or "-", o.thread_ts or "-"),
                    k.running_user(team, o.user_id or "-"),
                    k.running_team(team),
                    k.running_channel(team, o.channel_id or "-"),
                    k.library_prompt(team, sid),
                    k.library_all(team),
                    k.library_channel(team, o.channel_id or "-"),
                    k.library_user(team, o.user_id or "-"),
                ],
                args=[sid, "1" if thread else "0"],
            )
        )
        await self._redis.hdel(k.live, sid)
        own = int(
            await self._redis.delete(
                k.session(sid), k.inbox(sid), k.posts(sid), k.lease(sid), k.recorded(sid)
            )
        )
        await self._redis.zrem(k.workspace_sessions(team), sid)
        if self.index is not None:
            await self.index.delete(sid, team_id=o.team_id)
        if self.home is not None:
            await self.home.forget(session)
        return n, own
