"""What the model sees: the exact requests a session would send, for review in one screen.

`sora-copilot prompts --target veo-3.1 --persona "a pastry chef"` prints, for that target
and persona, each agent's system prompt, its first user message and its reply schema,
and for a free-text persona the sheet request too. The requests are built by the same
code a session uses (`bot.dialogue.agents`); the only stand-in is the offline model,
which writes the persona sheet and the Copilot's opening (the persona's first message
carries that opening), so the command needs no network and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.dialogue import agents, sheets
from bot.dialogue.engine import Engine
from bot.dialogue.models import Session
from bot.llm.base import ModelRequest
from bot.llm.offline import OfflineModel

EXAMPLE_IDEA = "A lighthouse keeper finds a message in a bottle"


@dataclass(frozen=True)
class Section:
    title: str
    kind: str  # "system" | "message" | "schema"
    agent: str  # "sheet" | "copilot" | "persona"
    text: str


def _sections(agent: str, request: ModelRequest, *, note: str = "") -> list[Section]:
    label = {"sheet": "Persona sheet", "copilot": "Copilot", "persona": "Persona"}[agent]
    first = next(m.content for m in request.messages if m.role == "user")
    return [
        Section(f"{label} · system prompt{note}", "system", agent, request.system),
        Section(f"{label} · first user message{note}", "message", agent, first),
        Section(f"{label} · reply schema", "schema", agent, json.dumps(request.schema, indent=2)),
    ]


async def review(session: Session, *, max_tokens: int = 16_000) -> list[Section]:
    """Every request a session starts with, in order: the persona sheet (free text only),
    the Copilot's first request, and the persona's first (after an offline opening).
    `session` is advanced in place (its persona written, turn 0 taken)."""
    out: list[Section] = []
    engine = Engine(model=OfflineModel(), max_tokens=max_tokens)
    if session.persona.pending:
        out += _sections("sheet", sheets.sheet_request(session, max_tokens=max_tokens))
        await engine.expand_persona(session)
    out += _sections("copilot", agents.build_request(session, max_tokens=max_tokens))
    await engine.take_turn(session)
    out += _sections(
        "persona",
        agents.build_request(session, max_tokens=max_tokens),
        note=" (after an offline opening)",
    )
    return out


def approx_tokens(text: str) -> int:
    """About four characters a token, as the fake API and the cache bench count."""
    return len(text) // 4


def render(sections: list[Section], session: Session) -> str:
    p = session.persona
    head = [
        f"What the model sees for target {session.target.name} and persona "
        f"{p.display_name} ({p.role}).",
        "Offline stand-ins: "
        + (
            "the persona sheet and the Copilot's opening are written by the offline model."
            if p.description
            else "the Copilot's opening is written by the offline model."
        ),
    ]
    lines = head
    for s in sections:
        size = f"{len(s.text):,} characters, about {approx_tokens(s.text):,} tokens"
        lines += ["", f"══ {s.title} ({size}) ══", s.text]
    return "\n".join(lines) + "\n"
