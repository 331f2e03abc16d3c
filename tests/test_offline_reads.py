"""The offline model reads what it is told: notes change the draft, a fox has no face, every
sentence is whole, and an idea is never pasted back as typed."""

from __future__ import annotations

import asyncio
import re

import pytest

from bench.offline_quality import NOTES, reflects, run_session
from bot.config import load_settings
from bot.dialogue.checks import check_draft
from bot.dialogue.models import Session
from bot.llm.idea import kind_of, verbless
from bot.sessions import BadInput, parse_command_text, session_for, validate_idea
from tests.support import make_session

IDEAS = [
    "A lighthouse keeper finds a message in a bottle",
    "A fox crosses a frozen river at dawn",
    "An old piano stands in an empty ballroom",
    "Two kids race paper boats down a flooded street after a summer storm",
    "Un zorro cruza un río helado al amanecer",
    "A city at night",
]
WHO = ["founder", "director", "brand", "photographer", "a pastry chef", "a stop-motion animator"]
NOT_PEOPLE = IDEAS[1:3]


def _sessions(targets_: list[str]) -> list[Session]:
    async def all_() -> list[Session]:
        return [
            await run_session(i, p, target=t, rounds=4)
            for t in targets_
            for i in IDEAS
            for p in WHO
        ]

    return asyncio.run(all_())


@pytest.fixture(scope="module")
def many() -> list[Session]:
    # One layout of each kind: Sora's blocks, prose, Runway's motion-first, Seedance's shots.
    return _sessions(["sora-2", "veo-3.1", "runway-gen-4.5", "seedance-2.0"])


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def test_every_sentence_of_every_draft_has_a_verb_and_the_check_finds_nothing_broken(
    many: list[Session],
) -> None:
    assert len(many) == 4 * len(IDEAS) * len(WHO)
    for s in many:
        for d in s.drafts:
            assert verbless(d.prompt_text) == [], (s.idea, s.persona.name, d.prompt_text)
            codes = [f.code for f in check_draft(d, s.target)]
            assert "broken_sentence" not in codes, d.prompt_text


def test_an_idea_is_never_pasted_into_the_prompt_as_typed(many: list[Session]) -> None:
    for s in many:
        for d in s.drafts:
            assert _normal(s.idea) not in _normal(d.prompt_text), (s.idea, d.prompt_text)


def test_a_subject_that_is_not_a_person_never_gets_a_face_or_a_person(
    many: list[Session],
) -> None:
    assert kind_of("a fox") == "animal" and kind_of("an old piano") == "thing"
    assert kind_of("a lighthouse keeper") == "person"
    for s in many:
        if s.idea not in NOT_PEOPLE:
            continue
        for t in s.turns:
            if t.draft is not None:
                low = t.draft.prompt_text.lower()
                assert not re.search(r"\bfaces?\b|\bperson\b|\bpeople\b", low), low
        asks = " ".join(t.text for t in s.turns if t.speaker.value == "persona")
        assert "a person" not in asks and "on a face" not in asks


@pytest.mark.parametrize("note", sorted(NOTES))
def test_a_teammates_note_changes_the_next_draft_visibly(note: str) -> None:
    for who in ("founder", "director", "a pastry chef"):
        s = asyncio.run(run_session(IDEAS[0], who, target="veo-3.1", note=note))
        assert reflects(s, note), (who, note, s.locked and s.locked.draft.prompt_text)
        # The Copilot's reply to the note says what it took.
        [answer] = [t for t in s.turns if t.speaker.value == "copilot" and "Ana" in t.text]
        assert "taken" in answer.text or "note is in this draft" in answer.text


def test_night_and_a_storm_replace_the_morning_and_its_light() -> None:
    s = asyncio.run(
        run_session(
            "A lighthouse keeper finds a message in a bottle in the morning",
            "founder",  # whose look is "clean morning light"
            target="veo-3.1",
            note="Make it at night, in a storm, with rain on the glass",
        )
    )
    assert s.locked is not None
    text = s.locked.draft.prompt_text.lower()
    assert "at night" in text and "storm" in text and "rain running down the glass" in text
    assert "morning" not in text


def test_the_prompt_check_flags_a_dangling_dash_and_a_glued_fragment() -> None:
    session = make_session(target="sora-2")
    from bot.dialogue.agents import DraftOut, make_draft
    from tests.support import draft_json

    broken = (
        "In the first two seconds, a lighthouse keeper finds — close on the face of a "
        "lighthouse keeper; A lighthouse keeper alone, a message close at hand. The sea "
        "breathes below the stair under a grey sky at dusk, lit by the lamp."
    )
    d = make_draft(
        DraftOut.model_validate(draft_json(1, prompt=broken)), version=1, target=session.target
    )
    found = [f for f in check_draft(d, session.target) if f.code == "broken_sentence"]
    assert found and "; A lighthouse keeper" in found[0].message
    for bad in ("A keeper finds —. The sea breathes.", "He walks to the. The sea breathes."):
        d2 = d.model_copy(update={"prompt_text": bad + " " + d.prompt_text[200:]})
        assert "broken_sentence" in [f.code for f in check_draft(d2, session.target)], bad


@pytest.mark.parametrize("idea", ["!!!", "x", "ab cd ef", "12 34", "?? !!"])
def test_an_idea_with_no_word_of_three_letters_is_refused_in_one_line(idea: str) -> None:
    with pytest.raises(BadInput, match="The idea needs words") as e:
        validate_idea(idea)
    assert "\n" not in str(e.value)
    with pytest.raises(BadInput, match="The idea needs words"):
        session_for(parse_command_text(idea), load_settings())
