"""What a model call costs: one price table and the estimate the session report shows.

Prices are USD per million tokens, as Anthropic lists them: input, output, a 5-minute
prompt-cache write and a cache read. The response names a dated model id (e.g.
``claude-sonnet-5-5-20260815``), so a served id is matched to its base id by the longest
prefix that ends at a ``-`` boundary. A model the table does not know has no estimate
(``None``) rather than a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.llm.usage import Usage

PER_MILLION = 1_000_000
OFFLINE_PREFIX = "offline"


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float  # 5-minute cache write
    cache_read: float


# Anthropic's published prices (https://platform.claude.com/docs/en/about-claude/pricing and
# each model's page, e.g. .../models/sonnet-5-5/overview), read 2026-11-25. The Sonnet 5.5
# cache-read cut to $0.10 (0.05x input) took effect 2026-10-07. Haiku 5.5 has two bands by
# prompt length; the table holds the band for prompts up to 100,000 tokens, which every
# request of a session stays under (a prompt is a few thousand tokens).
_FABLE_5_2 = Price(input=8.0, output=40.0, cache_write=10.0, cache_read=0.20)
_FABLE_5_1 = Price(input=10.0, output=50.0, cache_write=12.50, cache_read=0.25)
_FABLE_5 = Price(input=10.0, output=50.0, cache_write=12.50, cache_read=1.0)
_OPUS_5_5 = Price(input=4.0, output=20.0, cache_write=5.0, cache_read=0.20)
_OPUS = Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50)  # Opus 4.5 to 5
_SONNET_5_5 = Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.10)
_SONNET_5 = Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.20)
_SONNET_4 = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)
_HAIKU_5_5 = Price(input=0.10, output=0.50, cache_write=0.125, cache_read=0.01)
_HAIKU_4_5 = Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10)
_FREE = Price(input=0.0, output=0.0, cache_write=0.0, cache_read=0.0)
UNPRICED = frozenset({"claude-mythos-preview"})

# Every id in the SDK's model list (anthropic.types.ModelParam) a user may configure; a test
# checks that none is missing. Mythos models share their Fable twin's prices. Not here:
# claude-mythos-preview, an invitation-only preview without a published price (see UNPRICED).
PRICES: dict[str, Price] = {
    "claude-fable-5-2": _FABLE_5_2,
    "claude-mythos-5-2": _FABLE_5_2,
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": _OPUS_5_5,
    "claude-opus-5": _OPUS,
    "claude-opus-4-8": _OPUS,
    "claude-opus-4-7": _OPUS,
    "claude-opus-4-6": _OPUS,
    "claude-opus-4-5": _OPUS,
    "claude-sonnet-5-5": _SONNET_5_5,
    "claude-sonnet-5": _SONNET_5,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-haiku-5-5": _HAIKU_5_5,
    "claude-haiku-4-5": _HAIKU_4_5,
}


def price_for(model: str) -> Price | None:
    """The price of `model` (a base or dated id), or None when the table does not know it."""
    if model.startswith(OFFLINE_PREFIX):
        return _FREE
    if model in PRICES:
        return PRICES[model]
    # Longest prefix wins, so "claude-opus-5-5-2026..." is Opus 5.5, not Opus 5. The prefix
    # must end where a "-" follows, so "claude-opus-5-50" would not pass for "claude-opus-5-5".
    best: str | None = None
    for base in PRICES:
        if model.startswith(base + "-") and (best is None or len(base) > len(best)):
            best = base
    return PRICES[best] if best is not None else None


def estimate_cost(model: str, usage: Usage) -> float | None:
    """Estimated USD for `usage` on `model`; None for a model without a known price."""
    price = price_for(model)
    if price is None:
        return None
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    ) / PER_MILLION
