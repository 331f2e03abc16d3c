"""Errors the state package raises, so callers can tell an outage from a data problem,
and `describe`, the one place that turns a Redis error into words a person can read."""

from __future__ import annotations

import ssl

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)


class StateError(Exception):
    """Base class of every error raised by `state`."""


class StateUnavailable(StateError):
    """Redis cannot be reached. The message names the URL, never its password."""


class StateMisconfigured(StateError):
    """Redis answers, but is set up so that it could lose the app's data (an eviction
    policy). The message is one line that says what to set."""


class UnknownSchema(StateError):
    """Stored data was written by a build this one cannot read (usually a newer one)."""


class SessionExists(StateError):
    """`SessionStore.create` found a session with the same id: sessions are create-only."""


FULL = "Redis is full"


def is_full(e: BaseException) -> bool:
    """Whether Redis refused a write for want of memory (maxmemory reached, noeviction).

    redis-py raises OutOfMemoryError for a plain command; a script's refused write
    comes back as a ResponseError whose text starts with Redis's "OOM" code.
    """
    if isinstance(e, OutOfMemoryError):
        return True
    return isinstance(e, ResponseError) and "OOM " in str(e)[:40]


def describe(e: BaseException) -> str:
    """What went wrong with Redis, in our words: redis-py's own text is never shown,
    since it can quote a URL, a key or a password-bearing command."""
    if is_full(e):
        return (
            f"{FULL}: it reached its maxmemory and refuses writes; free memory, raise "
            "maxmemory, or shorten SESSION_TTL_SECONDS / LIBRARY_TTL_SECONDS"
        )
    if isinstance(e, (AuthenticationError, AuthorizationError)):
        return "Redis refused the password (or user name) in REDIS_URL"
    if isinstance(e, NoPermissionError):
        return "the Redis user in REDIS_URL lacks a permission this app needs"
    if isinstance(e, BusyLoadingError):
        return "Redis is still loading its data after a restart; try again in a moment"
    if isinstance(e, ReadOnlyError):
        return "Redis is a read-only replica; point REDIS_URL at the primary"
    if isinstance(e, TimeoutError):
        return "Redis did not answer in time"
    cause = e.__cause__ or e.__context__
    if "certificate verify failed" in f"{e} {cause}".lower():
        return (
            "TLS failed: certificate verify failed (a self-signed certificate? see "
            "REDIS_TLS_VERIFY)"
        )
    if isinstance(e, ssl.SSLError) or isinstance(cause, ssl.SSLError):
        return "the TLS handshake with Redis failed"
    if isinstance(e, (ConnectionError, OSError)):
        return "the connection failed (is Redis running, and is the host and port right?)"
    if isinstance(e, RedisError):
        return f"Redis answered with an error ({type(e).__name__})"
    return f"unexpected error ({type(e).__name__})"
