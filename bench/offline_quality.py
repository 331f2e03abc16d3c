"""What the offline model produces, in figures: `python -m bench.offline_quality`.

Runs 18 sessions (4 shipped personas and 2 free-text personas, across 3 ideas) on
the offline model with the sora-2 target (or `--target`), and prints the median
locked prompt length, the median rounds to lock, and the share of drafts that pass
the target's prompt check at the first draft and at the lock. Then: sessions where a
teammate's note (time of day, weather, place, subject, camera) arrives after the
opening, and the share whose locked prompt shows it; the sentences without a verb in
every locked prompt (target 0); and how many different prompts ten free-text personas
lock for one idea. No network, no Redis. Ends with a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from bot.dialogue.checks import check_draft
from bot.dialogue.engine import Engine, add_interjection
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target
from bot.llm.idea import verbless
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


# A teammate's note, and the words its change must leave in the locked prompt.
NOTES: dict[str, set[str]] = {
    "Make it at night, in a storm, with rain on the glass": {"night", "storm", "rain"},
    "Set it in a laundromat": {"laundromat"},
    "Make it a heron instead": {"heron"},
    "Shoot it handheld": {"handheld"},
    "Try it at dawn in fog": {"dawn", "fog"},
    "What about a wide shot from a drone?": {"aerial"},
}
FREE_TEXT = [
    "a skeptical sustainability journalist who hates greenwashing",
    "a 1970s Italian horror director",
    "a pastry chef who hates fuss",
    "a kindergarten teacher",
    "an architect obsessed with concrete",
    "a wildlife cameraman who waits for weeks",
    "a music video director who loves neon",
    "a retired sea captain",
    "a luxury perfume brand manager",
    "a stop-motion animator",
]


async def run_session(
    idea: str,
    who: str,
    *,
    target: str = "sora-2",
    rounds: int = 6,
    note: str | None = None,
) -> Session:
    """A whole offline session; with `note`, a teammate writes it after the opening."""
    session = Session(
        idea=idea,
        persona=resolve_persona(who),
        target=resolve_target(target),
        max_rounds=rounds,
    )
    engine = Engine(model=OfflineModel())
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
        if note is not None and len(session.turns) == 1:
            add_interjection(session, author="Ana", text=note)
    return session


def reflects(session: Session, note: str) -> bool:
    """The locked prompt shows every word the note's change must leave there."""
    if session.locked is None:
        return False
    text = session.locked.draft.prompt_text.lower()
    return all(word in text for word in NOTES[note])


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
    cases = [(i, p, n) for i in IDEAS for p in PERSONAS[:3] for n in NOTES]
    noted = [await run_session(i, p, target=target, rounds=rounds, note=n) for i, p, n in cases]
    heard = [reflects(s, n) for s, (_, _, n) in zip(noted, cases, strict=True)]
    everything = [s.locked.draft.prompt_text for s in [*sessions, *noted] if s.locked]
    fragments = [f for text in everything for f in verbless(text)]
    idea = next(iter(IDEAS))
    free = [await run_session(idea, p, target=target, rounds=rounds) for p in FREE_TEXT]
    free_prompts = {s.locked.draft.prompt_text for s in free if s.locked}
    rows += [
        ("locked prompts showing a note", _share(heard)),
        ("sentences without a verb", f"{len(fragments)} in {len(everything)} locked prompts"),
        (
            "distinct free-text prompts",
            f"{len(free_prompts)} of {len(free)} personas, one idea",
        ),
    ]
    print(f"offline model, target {target}, {len(sessions)} sessions, at most {rounds} rounds")
    for label, value in rows:
        print(f"  {label + ':':30} {value}")
    for f in fragments[:5]:
        print(f"  fragment: {f}")
    print(
        json.dumps(
            {
                "bench": "offline_quality",
                "target": target,
                "sessions": len(sessions),
                "approved": sum(1 for s in sessions if s.locked and s.locked.reason == "approved"),
                "notes_reflected": sum(heard),
                "notes_sessions": len(heard),
                "verbless_sentences": len(fragments),
                "locked_prompts_read": len(everything),
                "free_text_distinct": len(free_prompts),
                "free_text_sessions": len(free),
            }
        )
    )


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)} ({100 * sum(flags) / max(len(flags), 1):.0f}%)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="sora-2")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.target, args.rounds))
