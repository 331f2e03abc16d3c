"""Another model's reply, streamed at a reading pace: for a person watching a terminal.

The offline model writes a whole turn in microseconds, so in a terminal a
session would be over before anyone read it or typed an interjection. This
wrapper makes it look like the real thing: a short pause while the speaker
"thinks", then the message at `chars_per_second`. Only the characters a person
sees (the `message` field) cost time; the draft's JSON streams at once.

The CLI wraps the model only when stdout is a terminal (or `--pace` asks for
it); pipes and tests stay instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.llm.base import ChatModel, ModelReply, ModelRequest, TextCallback
from bot.llm.streaming import MessageFieldDecoder

# Small pieces, so the text flows rather than jumping a chunk at a time.
PIECE_CHARS = 3


class PacedModel:
    def __init__(
        self,
        inner: ChatModel,
        *,
        chars_per_second: float,
        think_seconds: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if chars_per_second <= 0:
            raise ValueError("chars_per_second must be positive")
        self.inner = inner
        self.chars_per_second = chars_per_second
        # A pause before each message, as long as about 40 characters take, at most 0.8 s.
        self.think_seconds = (
            min(0.8, 40 / chars_per_second) if think_seconds is None else think_seconds
        )
        self.sleep = sleep  # injected, so tests measure the pace without waiting for it

    @property
    def offline(self) -> bool:
        return self.inner.offline

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        if on_text is None:
            return await self.inner.complete(request)
        decoder = MessageFieldDecoder()
        thought = False

        async def paced(delta: str) -> None:
            nonlocal thought
            if not thought:
                thought = True
                await self.sleep(self.think_seconds)
            for i in range(0, len(delta), PIECE_CHARS):
                piece = delta[i : i + PIECE_CHARS]
                shown = decoder.feed(piece)
                await on_text(piece)
                if shown:
                    await self.sleep(len(shown) / self.chars_per_second)

        return await self.inner.complete(request, paced)
