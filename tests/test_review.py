"""What the model sees, for every shipped target × every shipped persona and two free-text ones:
each fact once, only facts that apply, nothing left unfilled."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from bot import review
from bot.cli import main
from bot.dialogue.agents import ReplyInvalid, parse_copilot
from bot.dialogue.profiles import personas, targets
from bot.dialogue.sheets import PLACEHOLDER
from tests.support import copilot, draft_json, make_session

FREE_TEXT = ["a skeptical sustainability journalist who hates greenwashing", "a pastry chef"]
WHO = [*sorted(personas()), *FREE_TEXT]
# Template text that was never filled: {slots}, Python's None or [], doubled articles,
# the old free-text placeholders.
UNFILLED = re.compile(
    r"\{[a-z_ ]*\}|\bNone\b|\[\]|\b(?:a|an|the) (?:a|an|the)\b|this persona|would insist"
    r"|\bSpeaks as\b|\bThe taste of\b|,\s*,|,\s*\.(?!\.)|\s\.(?:\s|$)"
)


def _fields(schema: object) -> set[str]:
    """Every property name anywhere in a JSON schema."""
    out: set[str] = set()
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "properties" and isinstance(v, dict):
                out |= set(v)
            out |= _fields(v)
    elif isinstance(schema, list):
        for v in schema:
            out |= _fields(v)
    return out


@pytest.mark.parametrize("target", sorted(targets()))
@pytest.mark.parametrize("who", WHO)
async def test_what_each_agent_sees_states_each_fact_once_and_only_what_applies(
    target: str, who: str
) -> None:
    session = make_session(persona=who, target=target, expand=False)
    t = session.target
    sections = await review.review(session)
    assert {s.agent for s in sections} == (
        {"sheet", "copilot", "persona"} if who in FREE_TEXT else {"copilot", "persona"}
    )
    for agent in ("copilot", "persona"):
        text = "\n".join(s.text for s in sections if s.agent == agent and s.kind != "schema")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().strip("`")]
        repeated = [ln for ln, n in Counter(lines).items() if n > 1]
        assert not repeated, (agent, repeated)
        assert not UNFILLED.search(text), (agent, UNFILLED.search(text))
        for fact in ("Legal durations:", f"Legal {t.size_label} values:", "Prompt length:"):
            assert text.count(fact) == 1, (agent, fact)
        assert text.count("in the vendor's order:") <= 1  # the order, stated once
        if t.silent:
            # Said once ("the video is silent"), and nothing else about sound.
            assert "the video is silent" in text
            assert not re.search(r"(?i)\bsound|\baudio:? (?!none)", text), agent
        schema = next(s for s in sections if s.agent == agent and s.kind == "schema")
        fields = _fields(json.loads(schema.text))
        assert ("sound" in fields) == (agent == "copilot" and not t.silent)
        assert ("resolution" in fields) == (agent == "copilot" and bool(t.resolution_choices))
    copilot_system = next(s.text for s in sections if s.agent == "copilot" and s.kind == "system")
    assert t.model_name in copilot_system.splitlines()[0]
    p = session.persona
    assert len(p.must_haves) == 3 and not any(PLACEHOLDER.search(m) for m in p.must_haves)
    persona_system = next(s.text for s in sections if s.agent == "persona" and s.kind == "system")
    assert persona_system.count(p.display_name) == 1


def test_the_prompts_command_prints_what_the_model_sees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "--target", "veo-3.1", "--persona", "a pastry chef"]) == 0
    out = capsys.readouterr().out
    for title in (
        "Persona sheet · system prompt",
        "Copilot · system prompt",
        "Copilot · first user message",
        "Copilot · reply schema",
        "Persona · system prompt",
        "Persona · first user message",
    ):
        assert f"══ {title}" in out
    assert out.splitlines()[0].startswith("What the model sees for target veo-3.1")
    assert "You write text-to-video prompts for Google Veo 3.1" in out


def test_a_resolution_that_needs_a_longer_clip_is_sent_back_with_the_rule() -> None:
    session = make_session(target="veo-3.1")
    bad = copilot("Here.", draft_json(1, duration=4, size="16:9", resolution="4k"))
    with pytest.raises(ReplyInvalid, match="4k only at 8 seconds, not 4"):
        parse_copilot(bad, session)
    ok = copilot("Here.", draft_json(1, duration=8, size="16:9", resolution="4k"))
    assert parse_copilot(ok, session)[1] is not None
    with pytest.raises(ReplyInvalid, match="resolution"):
        parse_copilot(copilot("Here.", draft_json(1, duration=8, size="16:9")), session)


def test_a_draft_over_the_limit_is_told_how_much_to_cut() -> None:
    session = make_session(target="veo-3.1")
    long = copilot("Here.", draft_json(1, prompt="x" * 1024, size="16:9", resolution="720p"))
    why = "1,024 characters; Google Veo 3.1 takes at most 1,000: cut at least 24"
    with pytest.raises(ReplyInvalid, match=re.escape(why)):
        parse_copilot(long, session)
