"""System-prompt size per agent per target: what each request carries before the dialogue.

    python -m bench.prompt_sizes [--persona NAME]

Tokens are counted as the fake API and `bench.cache` count them (four characters a
token). Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json

from bot.dialogue.agents import copilot_system, persona_system
from bot.dialogue.models import Session
from bot.dialogue.profiles import resolve_persona, resolve_target, targets


def sizes(persona: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name in sorted(targets()):
        session = Session(
            idea="A lighthouse keeper finds a message in a bottle",
            persona=resolve_persona(persona),
            target=resolve_target(name),
            max_rounds=6,
        )
        out[name] = {
            "copilot": len(copilot_system(session)) // 4,
            "persona": len(persona_system(session)) // 4,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persona", default="director")
    args = parser.parse_args()
    table = sizes(args.persona)
    print(f"System-prompt tokens (persona {args.persona}; 4 characters a token)")
    print(f"{'target':<16}{'copilot':>9}{'persona':>9}")
    for name, row in table.items():
        print(f"{name:<16}{row['copilot']:>9}{row['persona']:>9}")
    print(json.dumps({"bench": "prompt_sizes", "persona": args.persona, "tokens": table}))


if __name__ == "__main__":
    main()
