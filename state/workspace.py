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
    index = k.workspace_sessions(team_id)
    sessions = library = keys = 0
    # First its library search index, Home lists, team personas and defaults, whole: the
    # erasures below would otherwise empty (and so delete) some of them uncounted.
    keys += await erase_team_home(state.redis, k, team_id)
    for raw in await state.redis.zrange(index, 0, -1):
        sid = text(raw)
        session = await state.sessions.load(sid)
        if session is not None and session.origin.team_id == team_id:
            had_entry = await state.redis.exists(k.library_prompt(team_id, sid))
            keys += await state.eraser.erase(session)
            sessions += 1
            library += int(had_entry)
            continue
        # The session expired; its entry never does.
        entry = await state.library.get(sid, team=team_id)
        if entry is not None and await state.library.delete(
            sid, channel=entry.channel_id, user=entry.user_id, team=team_id
        ):
            library += 1
            keys += 1
    kept = {k.installation(team_id), k.installation_bot(team_id), k.installation_users(team_id)}
    kept_prefix = k.installation_user(team_id, "")
    rest = [
        name
        async for raw in state.redis.scan_iter(match=k.workspace_keys(team_id), count=1000)
        if (name := text(raw)) not in kept
        and not name.startswith(kept_prefix)
        and name != k.token_refresh_lock(team_id)
    ]
    if rest:
        keys += int(await state.redis.delete(*rest))  # one slot: one DEL
    return Erased(sessions=sessions, library_entries=library, keys=keys)
