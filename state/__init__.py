"""Everything Redis: sessions, the thread index, inboxes, dedupe, the turn queue,
leases, the post rate limiter and ledger, running-session caps, the prompt
library. Build them all at once with `State.create(await connect(url))`.
"""

from state.connection import EMBEDDED_NOTICE, connect, embedded, is_embedded, redact
from state.container import State
from state.dedupe import EventDedupe
from state.errors import (
    SessionExists,
    StateError,
    StateMisconfigured,
    StateUnavailable,
    UnknownSchema,
    describe,
    is_full,
)
from state.inbox import Inbox, InboxEntry, InboxKind, PushResult
from state.index import ThreadIndex
from state.keys import Keys
from state.lease import Lease
from state.library import LibraryEntry, PromptLibrary, RenderProvenance
from state.posts import PostLedger
from state.queue import DeadLetter, Job, QueueStats, Reclaimed, TurnQueue
from state.ratelimit import PostRateLimiter
from state.running import RunningSessions
from state.store import SessionStore, Snapshot

__all__ = [
    "EMBEDDED_NOTICE",
    "DeadLetter",
    "EventDedupe",
    "Inbox",
    "InboxEntry",
    "InboxKind",
    "Job",
    "Keys",
    "Lease",
    "LibraryEntry",
    "PostLedger",
    "PostRateLimiter",
    "PromptLibrary",
    "PushResult",
    "QueueStats",
    "Reclaimed",
    "RenderProvenance",
    "RunningSessions",
    "SessionExists",
    "SessionStore",
    "Snapshot",
    "State",
    "StateError",
    "StateMisconfigured",
    "StateUnavailable",
    "ThreadIndex",
    "TurnQueue",
    "UnknownSchema",
    "connect",
    "describe",
    "embedded",
    "is_embedded",
    "is_full",
    "redact",
]
