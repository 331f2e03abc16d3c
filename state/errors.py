"""Errors the state package raises, so callers can tell an outage from a data problem."""

from __future__ import annotations


class StateError(Exception):
    """Base class of every error raised by `state`."""


class StateUnavailable(StateError):
    """Redis cannot be reached. The message names the URL, never its password."""


class UnknownSchema(StateError):
    """Stored data was written by a build this one cannot read (usually a newer one)."""


class SessionExists(StateError):
    """`SessionStore.create` found a session with the same id: sessions are create-only."""
