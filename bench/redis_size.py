"""Bytes a session and a library entry take in Redis: `python -m bench.redis_size`.

Runs one 6-round session per shipped target (13 turns, locked at the round limit: the
longest a default session gets) through the real engine against the fake Anthropic API,
with replies of typical length (as `bench.cache`: a message of 800 characters, a prompt of
1,200; `--text-chars N` makes every string N characters). Each locked session is stored as
the app stores it, in the Redis at BENCH_REDIS_URL (database 14 by default) under a
prefix of its own, deleted afterwards: the session hash, its thread binding, a post
ledger as the Slack surface leaves it (a message per agent turn, the locked reply, the
pin, the report, the cross-post) and its library entry with its three index entries.

Sizes are Redis's own `MEMORY USAGE` of each key (SAMPLES 0: every element), and, for
the library's sorted sets, their growth per entry over all the sessions. Prints the bytes
per finished session (kept SESSION_TTL_SECONDS), per library entry (kept
LIBRARY_TTL_SECONDS, default for ever), and how many of each fit in common plan sizes;
then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from typing import Any

from redis.asyncio import Redis

from bench.cache import TYPICAL_FIELD_CHARS, TYPICAL_TEXT_CHARS
from bot.config import Settings
from bot.dialogue.models import Origin, Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, targets
from bot.driver import make_engine
from bot.llm.anthropic_model import AnthropicModel
from state import LibraryEntry, State, connect
from tests.fakes.anthropic_server import FakeAnthropic

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TEAM = "T0123456789"
PLANS_MB = (25, 100, 250, 1024)
# Lock steps the Slack surface records beside the agent turns' messages: the locked
# reply (2 parts), the pin, the report (file id, twice), the cross-post.
LOCK_LEDGER_ENTRIES = ((-1, 0), (-1, 1), (-6, 0), (-5, 0), (-5, 1), (-4, 0))


async def _locked_session(fake: FakeAnthropic, target: str, n: int) -> Session:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        anthropic_api_key=fake.api_key,
        anthropic_base_url=fake.base_url,
    )
    client = AnthropicModel.from_settings(settings)
    engine = make_engine(client, settings)
    session = Session(
        idea="A lighthouse keeper finds a message in a bottle, written in his own hand",
        persona=resolve_persona("director"),
        target=targets()[target],
        max_rounds=6,
        origin=Origin(
            surface="slack",
            channel_id="C0123456789",
            thread_ts=f"17{n:08d}.000100",
            user_id="U0123456789",
            user_name="Ana Lima",
            team_id=TEAM,
        ),
    )
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    await client.aclose()
    assert session.locked is not None, session.error
    return session


async def _usage(redis: Redis, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


async def _store(state: State, session: Session) -> dict[str, int]:
    """Store `session` as the app leaves a locked one; the bytes of each of its keys."""
    await state.sessions.create(session)
    for turn in range(len(session.agent_turns)):
        await state.posts.record(session.id, turn, 0, f"17{turn:08d}.{turn:06d}")
    for turn, part in LOCK_LEDGER_ENTRIES:
        await state.posts.record(session.id, turn, part, "1700000000.000200")
    await state.library.add(LibraryEntry.from_session(session))
    k, o = state.keys, session.origin
    return {
        "session": await _usage(state.redis, k.session(session.id)),
        "posts": await _usage(state.redis, k.posts(session.id)),
        "thread": await _usage(
            state.redis, k.thread(o.team_id or "-", o.channel_id or "-", o.thread_ts or "-")
        ),
        "library_entry": await _usage(state.redis, k.library_prompt(o.team_id or "-", session.id)),
    }


async def main(text_chars: int | None, rounds_of_targets: int) -> None:
    redis = await connect(BENCH_REDIS_URL)
    prefix = f"bench-size-{uuid.uuid4().hex[:8]}"
    state = State.create(redis, prefix=prefix)
    rows: list[dict[str, Any]] = []
    try:
        async with FakeAnthropic() as fake:
            if text_chars is None:
                fake.filler.text_chars = TYPICAL_TEXT_CHARS
                fake.filler.field_chars = dict(TYPICAL_FIELD_CHARS)
            else:
                fake.filler.text_chars = text_chars
            n = 0
            for _ in range(rounds_of_targets):
                for target in sorted(targets()):
                    session = await _locked_session(fake, target, n)
                    n += 1
                    rows.append({"target": target, **await _store(state, session)})
        k = state.keys
        indexes = sum(
            [
                await _usage(redis, k.library_all(TEAM)),
                await _usage(redis, k.library_channel(TEAM, "C0123456789")),
                await _usage(redis, k.library_user(TEAM, "U0123456789")),
            ]
        )
    finally:
        batch = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=500)]
        if batch:
            await redis.delete(*batch)
        await redis.aclose()
    count = len(rows)
    session_bytes = round(sum(r["session"] + r["posts"] + r["thread"] for r in rows) / count)
    library_bytes = round(sum(r["library_entry"] for r in rows) / count + indexes / count)
    strings = "typical" if text_chars is None else f"{text_chars}-character"
    print(f"{count} locked 6-round sessions (13 turns), {strings} strings")
    for r in rows[: len(targets())]:
        print(
            f"{r['target']:<15} session {r['session']:>6,} B, post ledger {r['posts']:>5,} B, "
            f"thread {r['thread']} B, library entry {r['library_entry']:>5,} B"
        )
    both = session_bytes + library_bytes
    print(f"per finished session (hash, ledger, thread): {session_bytes:,} bytes")
    print(f"per library entry (JSON and its 3 index entries): {library_bytes:,} bytes")
    fits = {mb: int(mb * 1024 * 1024 * 0.8 // both) for mb in PLANS_MB}
    print(
        "locked sessions that fit in 80% of a plan (session and library entry both kept): "
        + ", ".join(f"{mb} MB: {n:,}" for mb, n in fits.items())
    )
    print(
        json.dumps(
            {
                "bench": "redis_size",
                "strings": strings,
                "sessions": count,
                "bytes_per_session": session_bytes,
                "bytes_per_library_entry": library_bytes,
                "locked_sessions_per_plan_mb": fits,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.redis_size", description=__doc__)
    parser.add_argument("--text-chars", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="sessions per target")
    args = parser.parse_args()
    asyncio.run(main(args.text_chars, args.repeat))
