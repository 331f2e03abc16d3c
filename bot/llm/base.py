"""The one narrow interface every model client implements.

A request is a system prompt, an alternating list of messages, and the JSON
schema the reply must follow. A reply is the raw JSON text, why it stopped,
what it cost and which model served it. Parsing and validation belong to the
dialogue engine, so both clients are held to the same rules.

`brief` carries the engine's structured view of the moment (who speaks, the
round, the latest draft, pending interjections). The Anthropic client ignores
it; the offline model writes its deterministic dialogue from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.llm.usage import Usage

TextCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelRequest:
    # "sheet": the one call that writes a free-text persona's sheet (bot.dialogue.sheets).
    agent: Literal["persona", "copilot", "sheet"]
    system: str
    messages: list[Message]
    schema: dict[str, Any]
    max_tokens: int
    brief: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReply:
    text: str
    stop_reason: str | None
    usage: Usage
    model: str
    # With stop_reason "refusal": why, as the API explains it (stop_details), if it does.
    refusal: str | None = None


class ModelError(Exception):
    """A model call failed after the client's own retries; the turn cannot go on."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def is_blank(text: str) -> bool:
    """Empty or whitespace only: the API rejects such a text block, so none is ever sent."""
    return not text.strip()


class ChatModel(Protocol):
    @property
    def offline(self) -> bool: ...

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        """Run one request, passing each text delta to `on_text` as it arrives."""
        ...
