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
    """Delete every session, library entry and workspace key of `team_id`; what went."""
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
            had_entry = await state.redis.exists(k.library_prompt(sid))
            keys += await state.eraser.erase(session)
            sessions += 1
            library += int(had_entry)
            continue
        entry = await state.library.get(sid)  # the session expired; its entry never does
        if entry is not None and await state.library.delete(
            sid, channel=entry.channel_id, user=entry.user_id
        ):
            library += 1
            keys += 1
    keys += int(
        await state.redis.delete(
            index,
            k.running_team(team_id),
            k.update_budget(team_id),
            k.update_budget_waiting(team_id),
            k.streaming(team_id),
            k.audit(team_id),  # the workspace's audit trail names its people
        )
    )
    return Erased(sessions=sessions, library_entries=library, keys=keys)
