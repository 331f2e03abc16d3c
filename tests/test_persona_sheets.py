"""A free-text persona becomes a person: one sheet call before turn 0, stored, never redone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.dialogue.agents import COPILOT_NAME, persona_system
from bot.dialogue.engine import Engine, TurnFailed
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.report import render_markdown
from bot.dialogue.sheets import PLACEHOLDER, parse_sheet
from bot.llm.anthropic_model import AnthropicModel
from bot.llm.offline import OfflineModel, persona_needs
from bot.llm.offline_sheet import sheet_from_words
from bot.slack.blocks import root_blocks
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support import (
    RecordingSink,
    ScriptedModel,
    copilot,
    draft_json,
    make_session,
    persona,
)

WORDS = "a skeptical sustainability journalist who hates greenwashing"
SHEET: dict[str, Any] = {
    "name": "Ines Okafor-Lind",
    "role": "investigative sustainability journalist",
    "voice": "Blunt, short sentences; asks what each shot proves.",
    "taste": "Real places and real costs; nothing that flatters.",
    "look": {
        "camera": "handheld at shoulder height, one slow pan",
        "lens": "28mm lens",
        "light": "available daylight",
        "palette": "slate grey, rust and faded green",
        "style": "observational documentary",
        "sound": "location sound only",
        "mood": "sober, exact",
    },
    "must_haves": [
        "the factory's exhaust stack visible behind the product",
        "a price tag readable in one close shot",
        "daylight from a real window in frame",
    ],
    "pet_peeves": ["leaves superimposed on a logo"],
}


def sheet(**over: Any) -> str:
    return json.dumps({**SHEET, **over})


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(min_cache_tokens=0) as server:
        yield server


def engine_for(fake: FakeAnthropic) -> Engine:
    model = AnthropicModel(
        api_key=fake.api_key, model="claude-sonnet-5-5", base_url=fake.base_url, max_retries=0
    )
    return Engine(model=model)


def kind(body: dict[str, Any]) -> str:
    props = body["output_config"]["format"]["schema"]["properties"]
    return "sheet" if "must_haves" in props else "copilot" if "draft" in props else "persona"


async def test_a_free_text_persona_is_written_once_before_turn_0_and_every_request_carries_it(
    fake: FakeAnthropic,
) -> None:
    for reply in [
        sheet(),
        copilot("Opening.", draft_json(1)),
        persona("The exhaust stack. Show it."),
        copilot("Stack added.", draft_json(2)),
        persona("Yes.", "approve", 2),
    ]:
        fake.enqueue_text(reply)
    session = make_session(persona=WORDS, expand=False)
    engine = engine_for(fake)
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session, RecordingSink())
    kinds = [kind(b) for b in fake.requests]
    assert kinds == ["sheet", "copilot", "persona", "copilot", "persona"]
    p = session.persona
    assert p.display_name == "Ines Okafor-Lind" and p.description == WORDS and not p.pending
    for body, k in zip(fake.requests, kinds, strict=True):
        system = body["system"][0]["text"]
        sent = json.dumps(body, ensure_ascii=False)
        # The description is read once, quoted as data in the sheet request, and never again.
        assert sent.count(WORDS) == (1 if k == "sheet" else 0)
        if k == "persona":
            assert system.startswith("You are Ines Okafor-Lind, an investigative sustainability")
            assert all(m in system for m in SHEET["must_haves"])
            assert "this persona would" not in system
    # The sheet's call is counted with the session's tokens.
    assert session.persona_usage.total > 0
    assert session.usage.total == session.persona_usage.total + sum(
        t.usage.total for t in session.turns
    )


async def test_a_stored_sheet_is_never_written_again_and_its_prompts_stay_byte_identical() -> None:
    session = make_session(persona=WORDS, expand=False)
    model = ScriptedModel([sheet(), copilot("Opening.", draft_json(1))])
    await Engine(model=model).take_turn(session)
    before = persona_system(session)
    # What a resumed or reclaimed session reads back from the store.
    stored = Session.model_validate_json(session.model_dump_json())
    assert stored.persona == session.persona and not stored.persona.pending
    assert persona_system(stored) == before
    model2 = ScriptedModel([persona("Not yet.")])
    await Engine(model=model2).take_turn(stored)
    assert [r.agent for r in model2.requests] == ["persona"]
    assert model2.requests[0].system == before


async def test_a_refused_sheet_gets_one_repair_call() -> None:
    from bot.llm.base import ModelReply
    from bot.llm.usage import Usage

    refusal = ModelReply(
        text="", stop_reason="refusal", usage=Usage(), model="m", refusal="not a person"
    )
    model = ScriptedModel([refusal, sheet(), copilot("Opening.", draft_json(1))])
    session = make_session(persona=WORDS, expand=False)
    await Engine(model=model).take_turn(session)
    assert [r.agent for r in model.requests] == ["sheet", "sheet", "copilot"]
    assert "was declined" in model.requests[1].messages[-1].content
    assert session.persona.display_name == "Ines Okafor-Lind"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"must_haves": ["one concrete detail that only this persona would insist on"] * 3}, ""),
        ({"must_haves": SHEET["must_haves"][:2]}, "exactly 3"),
        ({"name": WORDS}, "a person's name"),
        ({"voice": "See https://example.com for my style"}, "link"),
        (
            {
                "must_haves": [
                    "camera and light described in words this persona would use",
                    "a",
                    "b",
                ]
            },
            "",
        ),
    ],
)
async def test_an_invalid_sheet_twice_stops_the_session_with_a_clear_error_and_no_turn(
    bad: dict[str, Any], why: str
) -> None:
    model = ScriptedModel([sheet(**bad), sheet(**bad)])
    session = make_session(persona=WORDS, expand=False)
    with pytest.raises(TurnFailed) as failed:
        await Engine(model=model).take_turn(session)
    assert failed.value.kind == "persona"
    assert [r.agent for r in model.requests] == ["sheet", "sheet"]  # one repair, no turn
    assert session.status == SessionStatus.STOPPED and session.finished
    assert session.turns == [] and session.persona.pending
    assert session.stopped_by == COPILOT_NAME
    assert session.error is not None and session.error.startswith("No persona could be written")
    assert why in session.error
    # Slack's root says what happened, as text.
    root = json.dumps(root_blocks(session))
    assert "being written" in root


def test_sheet_text_is_untrusted_and_made_safe() -> None:
    p = parse_sheet(sheet(name="Ana\u0000 Ruiz\u202e"), WORDS)
    assert p.display_name == "Ana Ruiz"
    # Markup that could ping someone or become a link is sent back for repair, in any field.
    for field, bad in [
        ("name", "<!channel> Ana"),
        ("voice", "<@U123> says hi"),
        ("taste", "Ana <https://x.io|Ruiz>"),
        ("role", "critic at www.example.org"),
    ]:
        with pytest.raises(ValueError, match="link or markup"):
            parse_sheet(sheet(**{field: bad}), WORDS)


async def test_the_report_and_the_root_introduce_the_written_persona() -> None:
    model = ScriptedModel([sheet(), copilot("Opening.", draft_json(1))])
    session = make_session(persona=WORDS, expand=False)
    await Engine(model=model).take_turn(session)
    md = render_markdown(session)
    assert "- **Persona**: Ines Okafor-Lind, investigative sustainability journalist" in md
    assert f"(written from “{WORDS}”)" in md and "- **Must-haves**: the factory's" in md
    assert "Ines Okafor-Lind, investigative sustainability journalist" in json.dumps(
        root_blocks(session), ensure_ascii=False
    )


FREE = [
    WORDS,
    "a 1970s Italian horror director",
    "a pastry chef who hates fuss",
    "someone who restores old boats",
    "a kindergarten teacher",
    "an architect obsessed with concrete",
    # Markup typed in the words never reaches the sheet (it would be refused there).
    "a director who shouts <!channel> <@U0BOSS> see https://x.io",
]


def test_offline_sheets_are_people_with_concrete_must_haves_the_offline_model_can_meet() -> None:
    people = [parse_sheet(json.dumps(sheet_from_words(w)), w) for w in FREE]
    assert len({p.display_name for p in people}) == len(people)
    assert len({tuple(p.must_haves) for p in people}) == len(people)
    for p in people:
        assert len(p.must_haves) == 3
        assert not any(PLACEHOLDER.search(m) for m in p.must_haves)
        # Each must-have is one the offline model recognises, raises and meets.
        needs = persona_needs(p.model_dump(), {"audio": "dialogue"})
        assert len(needs) == 3, p.must_haves


async def test_the_offline_model_writes_the_sheet_through_the_same_call() -> None:
    session = make_session(persona="a pastry chef who hates fuss", expand=False)
    await Engine(model=OfflineModel()).take_turn(session)
    assert not session.persona.pending
    assert any("flour" in m for m in session.persona.must_haves)
