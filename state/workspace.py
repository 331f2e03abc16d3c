"""Deleting everything the app kept for one workspace (its app was uninstalled).

The workspace's index (`Keys.workspace_sessions`, written with each session)
names every session it started; each is erased with all its keys and its
library entry (`state.erase`), a library entry whose session has already
expired too. Then the workspace's own keys go: its running-session cap, its
chat.update budget, its audit trail, its index. The installation itself is the installation
store's to delete.
"""

from __future__ import annotations

from dataclasses import dataclass

from state._text import text
from state.container import State
from state.home import erase_team_home


@dataclass(frozen=True)
class Erased:
    sessions: int
    library_entries: int
    keys: int


async def erase_workspace(state: State, team_id: str) -> Erased:
    """Delete every session, library entry and workspace key of `team_id`; what went.

    Every workspace key shares the hash tag `{ws:<team>}` (one slot), so after its
    sessions (each in a slot of its own) a SCAN of that tag finds the rest, whatever
    it is: caps, budgets, rate limits, renders, thread bindings, the audit trail. On a
    Redis Cluster, redis-py's SCAN walks every primary. The installation's own keys
    are left to the installation store."""
    k = state.keys
    kept = {k.installation(team_id), k.installation_bot(team_id), k.installation_users(team_id)}
    kept_prefix = k.installation_user(team_id, "")

    async def workspace_keys() -> set[str]:
        return {
            name
            async for raw in state.redis.scan_iter(match=k.workspace_keys(team_id), count=1000)
            if (name := text(raw)) not in kept
            and not name.startswith(kept_prefix)
            and name != k.token_refresh_lock(team_id)
        }

    # Counted before anything goes: erasing a session empties (and so deletes) some of
    # the workspace's sets, which must count too.
    before = await workspace_keys()
    index = k.workspace_sessions(team_id)
    sessions = library = own = 0
    # First its library search index, Home lists, team personas and defaults, whole.
    await erase_team_home(state.redis, k, team_id)
    for raw in await state.redis.zrange(index, 0, -1):
        sid = text(raw)
        session = await state.sessions.load(sid)
        if session is not None and session.origin.team_id == team_id:
            had_entry = await state.redis.exists(k.library_prompt(team_id, sid))
            own += (await state.eraser.erase_apart(session))[1]
            sessions += 1
            library += int(had_entry)
            continue
        # The session expired; its entry never does.
        entry = await state.library.get(sid, team=team_id)
        if entry is not None and await state.library.delete(
            sid, channel=entry.channel_id, user=entry.user_id, team=team_id
        ):
            library += 1
    rest = await workspace_keys()
    if rest:
        await state.redis.delete(*rest)  # one slot: one DEL
    return Erased(sessions=sessions, library_entries=library, keys=own + len(before | rest))
