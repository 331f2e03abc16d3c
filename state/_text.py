"""Reply decoding. `state.connect` builds clients with decode_responses=True, but
decoding here too keeps every class correct on a bytes-returning client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def opt_text(value: Any) -> str | None:
    return None if value is None else text(value)


def text_map(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {text(k): text(v) for k, v in (raw or {}).items()}


def flat_map(flat: Sequence[Any]) -> dict[str, str]:
    """A Lua reply's flat [k1, v1, k2, v2, ...] (e.g. HGETALL) as a dict."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
