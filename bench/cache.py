"""Prompt-cache share and cost of a session: `python -m bench.cache`.

Runs one 6-round session per shipped target (13 turns: the persona revises until the round
limit) through the real client and engine, configured as the app is (`Settings()` defaults:
effort, thinking, output budget), against the fake Anthropic API with each model's minimum
cacheable prompt modelled. Replies come from the fake's schema-only model with strings of
typical lengths (a message of 800 characters, a prompt of 1,200, a 40-character title,
150 for each other part: a Copilot reply of about 1,000 tokens), or with `--text-chars N`
every string N characters long (600 makes a Copilot reply of about 1,600 tokens, the size
of the longest replies). The fake counts four characters a token.

Prints, per target: the share of input tokens read from the cache, whether each agent's first
request already wrote the cache, input tokens per locked prompt, and the estimated cost on the
model; then one JSON line. Target: at least 80% of input tokens read from the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from bot.config import Settings
from bot.dialogue.models import Session, SessionStatus, Speaker
from bot.dialogue.profiles import resolve_persona, targets
from bot.driver import make_engine
from bot.llm.anthropic_model import AnthropicModel
from bot.llm.prices import estimate_cost
from bot.llm.usage import Usage
from tests.fakes.anthropic_server import FakeAnthropic, min_cache_tokens_for

TARGET_SHARE = 0.80
TYPICAL_TEXT_CHARS = 150
TYPICAL_FIELD_CHARS = {"message": 800, "prompt_text": 1200, "title": 40}


def _prompt_tokens(u: Usage) -> int:
    return u.input_tokens + u.cache_read_tokens + u.cache_write_tokens


async def _session(fake: FakeAnthropic, model: str, target: str) -> dict[str, Any]:
    settings = Settings(  # the app's defaults, pointed at the fake
        _env_file=None,  # type: ignore[call-arg]
        anthropic_api_key=fake.api_key,
        anthropic_base_url=fake.base_url,
        anthropic_model=model,
    )
    client = AnthropicModel.from_settings(settings)
    engine = make_engine(client, settings)
    session = Session(
        idea="A lighthouse keeper finds a message in a bottle, written in his own hand",
        persona=resolve_persona("director"),
        target=targets()[target],
        max_rounds=6,
    )
    before = len(fake.requests)
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    await client.aclose()
    assert session.locked is not None, session.error
    calls = len(fake.requests) - before
    usage = session.usage
    first = {
        agent.value: next(t for t in session.turns if t.speaker == agent).usage
        for agent in (Speaker.COPILOT, Speaker.PERSONA)
    }
    copilot_out = [t.usage.output_tokens for t in session.turns if t.speaker == Speaker.COPILOT]
    prompt = _prompt_tokens(usage)
    cost = estimate_cost(session.models[0], usage)
    return {
        "target": target,
        "turns": len(session.turns),
        "calls": calls,
        "lock": session.locked.reason.value,
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "thinking_tokens": usage.thinking_tokens,
        "cache_read_share": round(usage.cache_read_tokens / prompt, 4),
        "first_request_cached": {
            agent: u.cache_write_tokens > 0 or u.cache_read_tokens > 0 for agent, u in first.items()
        },
        "first_request_tokens": {agent: _prompt_tokens(u) for agent, u in first.items()},
        "input_tokens_per_locked_prompt": prompt,
        "copilot_output_tokens_mean": round(sum(copilot_out) / len(copilot_out)),
        "cost_usd": round(cost, 4) if cost is not None else None,
    }


async def main(model: str, text_chars: int | None) -> None:
    async with FakeAnthropic() as fake:  # per-model minimum cacheable prompt: on
        if text_chars is None:
            fake.filler.text_chars = TYPICAL_TEXT_CHARS
            fake.filler.field_chars = dict(TYPICAL_FIELD_CHARS)
        else:
            fake.filler.text_chars = text_chars
        rows = [await _session(fake, model, name) for name in sorted(targets())]
    strings = "typical" if text_chars is None else f"{text_chars}-character"
    print(
        f"model {model} (minimum cacheable prompt {min_cache_tokens_for(model)} tokens), "
        f"{strings} strings, 6 rounds"
    )
    for r in rows:
        first = ", ".join(
            f"{agent} {'cached' if hit else 'NOT cached'} ({r['first_request_tokens'][agent]} tok)"
            for agent, hit in r["first_request_cached"].items()
        )
        print(
            f"{r['target']:<11} {r['turns']} turns, {r['calls']} calls, locked ({r['lock']}): "
            f"cache read {r['cache_read_share']:.1%} of {r['input_tokens_per_locked_prompt']:,} "
            f"input tokens (write {r['cache_write_tokens']:,}, plain {r['input_tokens']:,}); "
            f"output {r['output_tokens']:,} (Copilot reply ~{r['copilot_output_tokens_mean']:,}); "
            f"${r['cost_usd']}"
        )
        print(f"{'':<11} first request: {first}")
    share = sum(r["cache_read_tokens"] for r in rows) / sum(
        r["input_tokens_per_locked_prompt"] for r in rows
    )
    verdict = "meets" if share >= TARGET_SHARE else "MISSES"
    print(f"overall cache-read share {share:.1%} ({verdict} the {TARGET_SHARE:.0%} target)")
    print(
        json.dumps(
            {
                "bench": "cache",
                "model": model,
                "strings": strings,
                "cache_read_share": round(share, 4),
                "target": TARGET_SHARE,
                "sessions": rows,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__)
    parser.add_argument("--model", default=Settings(_env_file=None).anthropic_model)  # type: ignore[call-arg]
    parser.add_argument("--text-chars", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(main(args.model, args.text_chars))
