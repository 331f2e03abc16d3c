"""Every Redis key name, TTL and default of the state package, in one place.

A `Keys` is built with a prefix (default "sora"), so that two deployments, or
two test runs, can share one Redis without ever touching each other's keys:
every key this package writes starts with `<prefix>:`.

Per-session keys (session, inbox, posts, lease) follow the session's TTL, so a
finished session disappears as a whole; the prompt library never expires.

Every key carries a Redis Cluster hash tag naming what it belongs to, so that each Lua
script and MULTI touches one slot: `{s:<session id>}` for a session's own keys,
`{ws:<team id>}` for a workspace's (the same channel or user id in two workspaces is two
keys), `{q}` for the few shared ones (the jobs and dead-letter streams, the live index,
the render schedule, the sweep's lease): one slot, the deployment's hot key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "sora"

# Sessions. A finished (locked/stopped) session is kept this long for its report
# and thread lookups. A live (running/paused) session's TTL is refreshed on every
# write, so only a session nobody touched for this long (abandoned) expires.
FINISHED_SESSION_TTL_S = 30 * 24 * 3600
LIVE_SESSION_TTL_S = 90 * 24 * 3600

# Slack retries an event for up to about an hour; remember ids that long.
EVENT_DEDUPE_TTL_S = 3600

# A worker renews its lease well inside this (every LEASE_TTL_MS / 3 is plenty).
LEASE_TTL_MS = 30_000

# Turn queue (a Redis Stream with one consumer group).
CONSUMER_GROUP = "workers"
MAX_DELIVERIES = 3
# A job idle this long in another consumer's pending list is taken over. It must
# be longer than a worker's heartbeat interval (see `State.heartbeat`), not than
# a whole turn, since the heartbeat keeps a working job's idle time near zero.
RECLAIM_MIN_IDLE_MS = 2 * LEASE_TTL_MS
# Approximate caps ("MAXLEN ~"): acked jobs are deleted, so the jobs stream only
# reaches this under a huge backlog; the dead-letter stream is a bounded log.
JOBS_MAXLEN = 100_000
DEAD_LETTER_MAXLEN = 10_000

# Interjections and control commands waiting for a session's next turn. A flood
# of replies in one thread must not grow a session without bound.
INBOX_MAX_ENTRIES = 200

# Slack allows about one post per second per channel, with short bursts.
POST_RATE_PER_S = 1.0
POST_BURST = 3

# A running-session slot reserved by `try_add` whose session was never created
# (the web process died in between) is released after this grace period.
RUNNING_GRACE_S = 300

LIBRARY_DEFAULT_LIMIT = 10

# OAuth: Slack's `state` parameter lives this long between the install page and the
# redirect back (slack_sdk's OAuthStateUtils default, 10 minutes).
OAUTH_STATE_TTL_S = 600
# One process refreshes a workspace's rotating bot token at a time; the others wait for
# its result. The lock outlives a slow oauth.v2.access call, not a crashed holder.
TOKEN_REFRESH_LOCK_MS = 15_000
# The audit trail of a workspace is a stream trimmed to about this many entries.
AUDIT_MAXLEN = 100_000
# Renders: a budget day's counters outlive the day (UTC) by a day. A clip's bytes never sit
# in Redis (noeviction: video would crowd out the sessions): see bot.render.jobs.
RENDER_BUDGET_TTL_S = 2 * 24 * 3600
# A render record is kept as long as a finished session.
RENDER_TTL_S = FINISHED_SESSION_TTL_S

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, kw_only=True)
class Keys:
    """The key of everything `state` stores, under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        # Glob characters or ':' in a prefix would let one namespace's key
        # patterns match another's keys.
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"key prefix {self.prefix!r} must be 1-64 characters of letters, digits, '_', "
                "'.' or '-'"
            )

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key under this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"

    def _ws(self, team_id: str, *parts: str) -> str:
        """A key of one workspace: the hash tag `{ws:<team id>}` keeps every key of a
        workspace in one Redis Cluster slot. Sessions with no workspace use NO_TEAM."""
        return self._k("{ws:" + (team_id or NO_TEAM) + "}", *parts)

    # ---- one session ------------------------------------------------------------------
    # Every key of one session shares the hash tag `{s:<session id>}`, so that each script
    # over a session (snapshot, save, inbox push, post ledger) touches one Redis Cluster
    # slot. The session's workspace is stored with it (`Origin.team_id`) and named by its
    # jobs (`F_TEAM`).

    def _s(self, sid: str, *parts: str) -> str:
        return self._k("{s:" + sid + "}", *parts)

    def session(self, sid: str) -> str:
        """Hash: `json` (the Session), `turn`, `rev`, `messages`, `schema`, `status`."""
        return self._s(sid, "session")

    def inbox(self, sid: str) -> str:
        """List of InboxEntry JSON, arrival order; consumed only by `SessionStore.save`."""
        return self._s(sid, "inbox")

    def lease(self, sid: str) -> str:
        """String: the owner id of the worker working on the session."""
        return self._s(sid, "lease")

    def posts(self, sid: str) -> str:
        """Hash `<turn>:<part>` -> Slack message id, so a redone turn never posts twice."""
        return self._s(sid, "posts")

    def root_shown(self, sid: str) -> str:
        """String, expiring: the wall-clock time of the session's last interim root update,
        shared by every worker (`state.updates.RootWindows`)."""
        return self._s(sid, "root-shown")

    def recorded(self, sid: str) -> str:
        """List of what the recording surface (tests, benchmarks) would have posted."""
        return self._s(sid, "recorded")

    def session_event(self, sid: str, event_id: str) -> str:
        """String, expiring: a Slack event already queued in this session's inbox (the
        push marks it in the session's own slot, in the same script)."""
        return self._s(sid, "event", event_id)

    def thread(self, team_id: str, channel: str, thread_ts: str) -> str:
        """String: the id of the session living in a Slack thread of the workspace."""
        return self._ws(team_id, "thread", channel, thread_ts)

    # ---- shared: the queue's slot ----------------------------------------------------
    # The truly global keys share one hash tag, `{q}`, so the scripts over them (reclaim
    # with its dead-lettering, the promotion of due renders onto the stream) stay in one
    # slot. That slot is the deployment's one hot key: see README, "Redis Cluster".

    def _q(self, *parts: str) -> str:
        return self._k("{q}", *parts)

    @property
    def live(self) -> str:
        """Hash: session id -> "<channel> <thread ts> <team> <since ms>" of every running or
        paused session. The sweep reads it to find sessions with nothing behind them."""
        return self._q("live")

    @property
    def sweep_lease(self) -> str:
        """String, expiring: the owner of the sweep now running (one worker at a time)."""
        return self._q("sweep")

    def event(self, team_id: str, event_id: str) -> str:
        """String, expiring: a Slack event of the workspace already acted on."""
        return self._ws(team_id, "event", event_id)

    @property
    def jobs(self) -> str:
        """Stream of turn jobs, fields `sid`, `turn` and `team`."""
        return self._q("jobs")

    @property
    def dead_letter(self) -> str:
        """Stream of jobs that failed MAX_DELIVERIES times, or that no worker may run."""
        return self._q("jobs", "dead")

    def ratelimit(self, team_id: str, channel: str) -> str:
        return self._ws(team_id, "ratelimit", channel)

    # ---- prompt library (per workspace, never expires) -----------------------------------

    def library_prompt(self, team_id: str, pid: str) -> str:
        return self._ws(team_id, "library", "prompt", pid)

    def library_all(self, team_id: str) -> str:
        """Sorted set of the workspace's prompt ids by creation time (ms)."""
        return self._ws(team_id, "library", "all")

    def library_channel(self, team_id: str, channel: str) -> str:
        return self._ws(team_id, "library", "channel", channel)

    def library_user(self, team_id: str, user_id: str) -> str:
        return self._ws(team_id, "library", "user", user_id)

    # ---- running-session caps (per workspace) -------------------------------------------

    def running_user(self, team_id: str, user_id: str) -> str:
        """Sorted set of running session ids of a user, scored by reservation time (ms)."""
        return self._ws(team_id, "running", "user", user_id)

    def running_team(self, team_id: str) -> str:
        return self._ws(team_id, "running", "team")

    def running_channel(self, team_id: str, channel_id: str) -> str:
        return self._ws(team_id, "running", "channel", channel_id)

    def workspace_keys(self, team_id: str) -> str:
        """A SCAN pattern matching every key of one workspace (its uninstall deletes them)."""
        return self._ws(team_id, "*")

    # ---- installations (OAuth) ---------------------------------------------------------
    # One workspace's keys share the hash tag `{ws:<team id>}`, so that a MULTI over its
    # installation, bot and per-user records stays in one Redis Cluster slot.

    def installation(self, team_id: str) -> str:
        """String: the workspace's latest installation, Fernet-encrypted JSON."""
        return self._ws(team_id, "installation")

    def installation_bot(self, team_id: str) -> str:
        """String: the workspace's bot (token, refresh token, expiry), Fernet-encrypted JSON."""
        return self._ws(team_id, "bot")

    def installation_user(self, team_id: str, user_id: str) -> str:
        """String: the installation as made by one installing user, encrypted."""
        return self._ws(team_id, "installation", "user", user_id)

    def installation_users(self, team_id: str) -> str:
        """Set of the user ids that have an `installation_user` record."""
        return self._ws(team_id, "installation", "users")

    def workspace_sessions(self, team_id: str) -> str:
        """Sorted set: every session started in the workspace, scored by creation (ms), so
        that uninstalling the app finds them all, finished ones and library entries too."""
        return self._ws(team_id, "sessions")

    def token_refresh_lock(self, team_id: str) -> str:
        """String, expiring: held by the one process refreshing the workspace's bot token."""
        return self._ws(team_id, "token-refresh")

    def audit(self, team_id: str) -> str:
        """Stream, capped: who did what to which session in the workspace (state.audit)."""
        return self._ws(team_id, "audit")

    @property
    def audit_pattern(self) -> str:
        """A SCAN pattern matching every workspace's audit stream."""
        return self._ws("*", "audit")

    @property
    def installed_teams(self) -> str:
        """Set of installed team ids (key rotation and operators walk it)."""
        return self._k("installations")

    def oauth_state(self, state: str) -> str:
        """String, expiring: an OAuth `state` issued by the install page, consumed once."""
        return self._k("oauth-state", state)

    # ---- the workspace's chat.update budget -----------------------------------------

    def update_budget(self, team: str) -> str:
        """Sorted set: one member per chat.update in the last minute, scored by its time (µs)."""
        return self._ws(team, "updates", "budget")

    def update_budget_waiting(self, team: str) -> str:
        """String, expiring: set while a must-land chat.update waits for the budget."""
        return self._ws(team, "updates", "waiting")

    def streaming(self, team: str) -> str:
        """Sorted set: turns being written right now, scored by when their claim lapses (µs)."""
        return self._ws(team, "updates", "streaming")

    # ---- the team library's search index and the Home tab (per workspace) ------------
    # Every key of one workspace's index shares the hash tag `{ws:<team id>}`, so that the
    # search script (an intersection of term sets, then a walk newest first) and the add
    # and delete scripts each touch one Redis Cluster slot. Sessions with no workspace
    # (the terminal) are filed under NO_TEAM.

    def library_feed(self, team_id: str) -> str:
        """Sorted set: the workspace's library entry ids, scored by lock time (ms)."""
        return self._ws(team_id, "lib", "feed")

    def library_docs(self, team_id: str) -> str:
        """Hash: entry id -> the entry's JSON (the index's own copy, in its slot)."""
        return self._ws(team_id, "lib", "docs")

    def library_channel_of(self, team_id: str) -> str:
        """Hash: entry id -> the channel it was made in (the search skips hidden ones)."""
        return self._ws(team_id, "lib", "chan")

    def library_channels(self, team_id: str) -> str:
        """Set: every channel with an entry (whose visibility a viewer's search resolves)."""
        return self._ws(team_id, "lib", "channels")

    def library_terms_of(self, team_id: str) -> str:
        """Hash: entry id -> its index terms, space-separated (so a delete finds them)."""
        return self._ws(team_id, "lib", "terms")

    def library_term(self, team_id: str, term: str) -> str:
        """Sorted set: the ids of the entries with `term`, scored by lock time (ms)."""
        return self._ws(team_id, "lib", "term", term)

    def library_scratch(self, team_id: str) -> str:
        """Sorted set, gone when the search script returns: the intersection of its terms."""
        return self._ws(team_id, "lib", "scratch")

    def team_personas(self, team_id: str) -> str:
        """Hash: team persona name -> its TeamPersona JSON (state.personas)."""
        return self._ws(team_id, "personas")

    def workspace_defaults(self, team_id: str) -> str:
        """String: the workspace's defaults JSON, set by its admins (state.defaults)."""
        return self._ws(team_id, "defaults")

    def team_home_patterns(self, team_id: str) -> list[str]:
        """SCAN patterns of every key above for one workspace (its uninstall deletes them)."""
        return [self._ws(team_id, "lib", "*"), self._ws(team_id, "home", "*")]

    def home_refresh(self, team_id: str, user_id: str) -> str:
        """String, expiring: set while a refresh of a person's Home tab is already due."""
        return self._ws(team_id, "home", "refresh", user_id)

    def home_sessions(self, team_id: str, user_id: str) -> str:
        """Sorted set: the ids of the sessions a person started, scored by start time (ms)."""
        return self._ws(team_id, "home", "sessions", user_id)

    # ---- renders (bot.render.jobs) ----------------------------------------------------
    # A render's record and budgets are its workspace's (one slot: the create script
    # reserves both budgets and writes the record together); its due time is the queue's.

    def render(self, team_id: str, rid: str) -> str:
        """Hash: `json` (the render's record), `rev` (+1 per write: the fencing token),
        `sid`, and the budget keys and seconds it reserved (`team_key`, `user_key`,
        `seconds`), so a refund returns exactly what was taken."""
        return self._ws(team_id, "render", rid)

    @property
    def render_due(self) -> str:
        """Sorted set: "<rid> <team> <sid>" of renders waiting for their next check, scored
        by when it is due (ms). A worker moves the due ones onto the jobs stream."""
        return self._q("render", "due")

    def render_slot(self, team: str, session_id: str, tier: str) -> str:
        """String: the id of the render offered, queued or running for one locked entry at
        one tier (draft, master); a press of Render gets that id rather than a second one."""
        return self._ws(team, "render", "slot", session_id, tier)

    def render_budget_team(self, team: str, day: str) -> str:
        """String: seconds of video reserved by the workspace on `day` (UTC, YYYYMMDD)."""
        return self._ws(team, "render", "budget", "team", day)

    def render_budget_user(self, team: str, user: str, day: str) -> str:
        """String: seconds of video reserved by one person on `day`."""
        return self._ws(team, "render", "budget", "user", user, day)


NO_TEAM = "-"
# The newest sessions of a person kept for their Home tab's "Running now".
HOME_SESSIONS_KEPT = 20
# A Home refresh nobody asked for (a session of theirs locked or paused) waits this long
# and then shows everything that changed meanwhile: one views.publish per person per
# window (Tier 4, about 100 a minute per workspace: api.slack.com/methods/views.publish).
HOME_REFRESH_COALESCE_MS = 5_000
