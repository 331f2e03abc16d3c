"""Search latency over a team library of 10,000 entries: `python -m bench.library_search`.

Fills one workspace's index (state.search) in the Redis at BENCH_REDIS_URL (database 14
by default), under a prefix of its own deleted afterwards, with `--entries` locked
prompts (default 10,000): captions and prompts of 12-40 words drawn from a 2,000-word
vocabulary with a Zipf-like skew (so some words are in thousands of entries, most in a
few), 4 targets, 6 personas, 40 people, 30 channels of which 5 private. Then runs
`--queries` searches (default 1,000) as the Home tab asks them: one common word, two
words, a word and a target, a person, a rare word, and no words (the newest), each
hiding the 5 private channels and reading a page of 10. Every answer is checked against
a brute-force scan of the same entries. Prints whether Redis has RediSearch (MODULE
LIST), the fill rate, and p50/p95/p99/max search latency in ms; then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bot.dialogue.models import Draft, LockedPrompt, LockReason, PromptParts
from state import LibraryEntry, State
from state.search import query_terms, terms_of

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TEAM = "TBENCH"
TARGETS = ("sora-2", "sora-2-pro", "veo-3.1", "generic")
PERSONAS = ("director", "founder", "brand-lead", "animator", "editor", "producer")
CHANNELS = [f"C{i:04d}" for i in range(25)] + [f"G{i:04d}" for i in range(5)]
HIDDEN = CHANNELS[25:]
PAGE = 10


def _vocabulary(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(out)


def _entries(n: int, rng: random.Random) -> list[LibraryEntry]:
    vocab = _vocabulary(2000, rng)
    weights = [1 / (i + 1) for i in range(len(vocab))]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    parts = PromptParts(
        subject="s",
        setting="s",
        action_beats=["a"],
        camera="c",
        lighting_palette="l",
        sound="s",
        style="s",
        avoid=[],
    )
    out = []
    for i in range(n):
        words = rng.choices(vocab, weights=weights, k=rng.randint(12, 40))
        target = rng.choice(TARGETS)
        draft = Draft(
            version=1,
            title=" ".join(words[:3]).title(),
            prompt_text=" ".join(words[3:]),
            duration_seconds=8,
            size="1280x720",
            target=target,
            parts=parts,
        )
        user = rng.randrange(40)
        at = start + timedelta(minutes=i)
        out.append(
            LibraryEntry(
                id=uuid.uuid4().hex[:16],
                session_id=f"s{i}",
                channel_id=rng.choice(CHANNELS),
                thread_ts="1.1",
                user_id=f"U{user:04d}",
                user_name=f"person{user}",
                persona=rng.choice(PERSONAS).title(),
                persona_key=None,
                target=target,
                locked=LockedPrompt(
                    draft=draft, locked_by="x", locked_at=at, reason=LockReason.APPROVED
                ),
                idea="",
                created_at=at,
                team_id=TEAM,
            )
        )
    return out


def _queries(entries: list[LibraryEntry], n: int, rng: random.Random) -> list[str]:
    common = [w for w in terms_of(entries[0]) if ":" not in w][:5] or ["rain"]
    every = [t for e in entries[:200] for t in terms_of(e) if ":" not in t]

    def one_query(i: int) -> str:
        kind = i % 6
        if kind == 0:
            return rng.choice(common)
        if kind == 1:
            return f"{rng.choice(every)} {rng.choice(every)}"
        if kind == 2:
            return f"{rng.choice(every)} target:{rng.choice(TARGETS)}"
        if kind == 3:
            return f"by:<@U{rng.randrange(40):04d}>"
        if kind == 4:
            return rng.choice(every[-50:])
        return ""

    return [one_query(i) for i in range(n)]


def _expected(
    entries: list[LibraryEntry], term_sets: list[set[str]], terms: list[str]
) -> list[str]:
    """The answer by brute force: `entries` are in lock order, oldest first."""
    want = set(terms)
    found = [
        e.id
        for e, have in zip(reversed(entries), reversed(term_sets), strict=True)
        if e.channel_id not in HIDDEN and want <= have
    ]
    return found[:PAGE]


async def run(n_entries: int, n_queries: int) -> dict[str, object]:
    redis = Redis.from_url(BENCH_REDIS_URL)
    prefix = f"bench-search-{uuid.uuid4().hex[:8]}"
    state = State.create(redis, prefix=prefix)
    rng = random.Random(21)
    try:
        modules = await redis.module_list()
        has_search = any(b"search" in json.dumps(m, default=str).encode().lower() for m in modules)
        entries = _entries(n_entries, rng)
        t0 = time.perf_counter()
        for e in entries:
            await state.index.add(e)
        fill_s = time.perf_counter() - t0
        queries = _queries(entries, n_queries, rng)
        term_sets = [set(terms_of(e)) for e in entries]
        latencies = []
        for q in queries:
            terms = query_terms(q)
            t = time.perf_counter()
            page = await state.index.search(TEAM, terms, hidden=HIDDEN, limit=PAGE)
            latencies.append((time.perf_counter() - t) * 1000)
            got = [e.id for e in page.entries]
            want = _expected(entries, term_sets, terms)
            if got != want:
                raise SystemExit(f"wrong answer for {q!r}: {got[:3]}… != {want[:3]}…")
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

        return {
            "bench": "library_search",
            "entries": n_entries,
            "queries": n_queries,
            "redisearch": has_search,
            "fill_per_s": round(n_entries / fill_s),
            "p50_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(pct(0.95), 2),
            "p99_ms": round(pct(0.99), 2),
            "max_ms": round(latencies[-1], 2),
        }
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1_000)
    a = ap.parse_args()
    r = asyncio.run(run(a.entries, a.queries))
    print(f"RediSearch in this Redis (MODULE LIST): {'yes' if r['redisearch'] else 'no'}")
    print(f"{r['entries']:,} entries indexed at {r['fill_per_s']:,}/s")
    print(
        f"{r['queries']:,} searches, page of {PAGE}, 5 private channels hidden: "
        f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms "
        "(every answer equal to a brute-force scan)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
