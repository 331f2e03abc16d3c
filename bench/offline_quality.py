"""What the offline model produces, in figures: `python -m bench.offline_quality`.

Runs 18 sessions (4 shipped personas and 2 free-text personas, across 3 ideas) on
the offline model with the sora-2 target (or `--target`), and prints the median
locked prompt length, the median rounds to lock, and the share of drafts that pass
the target's prompt check at the first draft and at the lock. No network, no Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bot.dialogue.checks import check_draft
from bot.dialogue.engine import Engine
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target
from bot.llm.offline import OfflineModel

# Each idea with the nouns a prompt about it should show (tests/test_offline.py uses them).
IDEAS: dict[str, set[str]] = {
    "A lighthouse keeper finds a message in a bottle at dawn": {
        "lighthouse",
        "keeper",
        "message",
        "bottle",
        "dawn",
    },
    "Two kids race paper boats down a flooded street after a summer storm": {
        "kids",
        "paper",
        "boats",
        "street",
        "storm",
    },
    "A retired jazz pianist plays one last song in an empty train station at night": {
        "pianist",
        "song",
        "station",
        "train",
        "night",
    },
}
PERSONAS = [
    "founder",
    "director",
    "brand",
    "photographer",
    "a 1970s Italian horror director",
    "a pastry chef who hates fuss",
]


async def run_session(idea: str, who: str, *, target: str = "sora-2", rounds: int = 6) -> Session:
    session = Session(
        idea=idea,
        persona=resolve_persona(who),
        target=resolve_target(target),
        max_rounds=rounds,
    )
    engine = Engine(model=OfflineModel())
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    return session


async def main(target: str, rounds: int) -> None:
    sessions = [
        await run_session(i, p, target=target, rounds=rounds) for i in IDEAS for p in PERSONAS
    ]
    finals = [s.locked.draft for s in sessions if s.locked is not None]
    lengths = [len(d.prompt_text) for d in finals]
    to_lock = [s.rounds for s in sessions if s.locked is not None]
    first = [not check_draft(s.drafts[0], s.target) for s in sessions if s.drafts]
    last = [not check_draft(d, resolve_target(target)) for d in finals]
    rows = [
        ("locked", f"{len(finals)} of {len(sessions)}"),
        (
            "approved by the persona",
            str(sum(1 for s in sessions if s.locked and s.locked.reason == "approved")),
        ),
        ("distinct locked prompts", str(len({d.prompt_text for d in finals}))),
        ("median prompt length", f"{statistics.median(lengths):.0f} characters"),
        (
            "median rounds to lock",
            f"{statistics.median(to_lock):.1f} (range {min(to_lock)}-{max(to_lock)})",
        ),
        ("first drafts passing check", _share(first)),
        ("locked drafts passing check", _share(last)),
    ]
    print(f"offline model, target {target}, {len(sessions)} sessions, at most {rounds} rounds")
    for label, value in rows:
        print(f"  {label + ':':30} {value}")


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)} ({100 * sum(flags) / max(len(flags), 1):.0f}%)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="sora-2")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.target, args.rounds))
