"""The offline model reads the idea and the persona, and ends on a prompt worth pasting."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from bench.offline_quality import IDEAS, PERSONAS, run_session
from bot.dialogue.checks import check_draft
from bot.dialogue.engine import Engine, add_interjection
from bot.dialogue.models import LockReason, Session, SessionStatus
from bot.dialogue.profiles import resolve_persona, resolve_target, targets
from bot.dialogue.report import render_markdown
from bot.llm.idea import read_idea
from bot.llm.offline import OfflineModel

run = run_session


async def _all() -> dict[tuple[str, str], Session]:
    return {(i, p): await run(i, p) for i in IDEAS for p in PERSONAS}


@pytest.fixture(scope="module")
def eighteen() -> dict[tuple[str, str], Session]:
    # Deterministic and cheap: run once for the module, outside any test's event loop.
    return asyncio.run(_all())


def test_the_idea_is_read_for_subject_place_time_and_objects() -> None:
    idea = read_idea("A lighthouse keeper finds a message in a bottle at dawn")
    assert idea.subject == "a lighthouse keeper"
    assert idea.place == "the lighthouse" and idea.time == "at dawn"
    assert idea.objects == ["a message", "a bottle"]
    station = read_idea("A retired jazz pianist plays one last song in an empty train station")
    assert station.place == "an empty train station" and station.objects == ["one last song"]


async def test_eighteen_sessions_lock_eighteen_different_prompts_about_their_ideas(
    eighteen: dict[tuple[str, str], Session],
) -> None:
    prompts = {}
    for (idea, who), session in eighteen.items():
        assert session.status == SessionStatus.LOCKED, (idea, who)
        assert session.locked is not None
        text = session.locked.draft.prompt_text
        words = set(re.findall(r"[a-z]+", text.lower()))
        assert len(IDEAS[idea] & words) >= 2, (idea, who, text)
        for must in session.persona.must_haves:
            assert must.lower().rstrip(".") not in text.lower(), (who, must)
        prompts[(idea, who)] = text
    assert len(set(prompts.values())) == len(prompts) == 18


async def test_the_persona_pushes_back_and_each_revision_answers_its_objection(
    eighteen: dict[tuple[str, str], Session],
) -> None:
    for session in eighteen.values():
        objections = [t.text for t in session.turns if t.verdict and t.verdict.decision == "revise"]
        assert objections, session.persona.name
        assert len(set(objections)) == len(objections)  # never the same objection twice
        assert session.locked is not None and session.locked.reason == LockReason.APPROVED
        # After every objection the next Copilot turn brings a new draft.
        for a, b in itertools.pairwise(session.turns):
            if a.verdict and a.verdict.decision == "revise" and a.round < session.max_rounds:
                assert b.draft is not None, (session.persona.name, a.text)


async def test_rounds_to_lock_vary_with_idea_and_persona_and_with_the_round_limit(
    eighteen: dict[tuple[str, str], Session],
) -> None:
    rounds = {s.rounds for s in eighteen.values()}
    assert len(rounds) >= 2 and max(rounds) <= 6
    idea = next(iter(IDEAS))
    longer = [await run(idea, p, rounds=12) for p in PERSONAS]
    shorter = [eighteen[(idea, p)] for p in PERSONAS]
    assert any(a.rounds != b.rounds for a, b in zip(longer, shorter, strict=True))
    assert all(s.rounds <= 12 for s in longer)
    tight = [await run(idea, p, rounds=2) for p in PERSONAS]
    assert all(s.status == SessionStatus.LOCKED and s.rounds <= 2 for s in tight)


async def test_each_personas_taste_drives_camera_light_and_palette(
    eighteen: dict[tuple[str, str], Session],
) -> None:
    idea = next(iter(IDEAS))
    for who in PERSONAS:
        session = eighteen[(idea, who)]
        assert session.locked is not None
        parts = session.locked.draft.parts
        look = session.persona.look
        assert look.palette.split(",")[0] in parts.lighting_palette
        assert look.style in parts.style
    cameras = {eighteen[(idea, p)].locked.draft.parts.camera for p in PERSONAS}  # type: ignore[union-attr]
    assert len(cameras) == len(PERSONAS)


async def test_no_turn_or_caption_says_offline_and_free_text_is_not_greeted_by_first_word(
    eighteen: dict[tuple[str, str], Session],
) -> None:
    for (_, who), session in eighteen.items():
        for t in session.turns:
            assert "offline" not in t.text.lower()
            if t.draft:
                assert "offline" not in t.draft.title.lower()
        if who.startswith("a "):
            assert not session.turns[0].text.startswith(("A,", "Hi A", "A "))
    md = render_markdown(eighteen[(next(iter(IDEAS)), "director")])
    banner = md.replace("offline-deterministic", "")  # the model id in the metadata
    assert banner.lower().count("offline") == 1 and md.startswith("> **Offline**")


async def test_an_interjection_is_taken_up_in_the_next_draft() -> None:
    session = Session(
        idea=next(iter(IDEAS)),
        persona=resolve_persona("director"),
        target=resolve_target("sora-2"),
        max_rounds=6,
    )
    engine = Engine(model=OfflineModel())
    await engine.take_turn(session)
    await engine.take_turn(session)
    add_interjection(session, author="Ana", text="Could we have fog rolling in?")
    turn = (await engine.take_turn(session)).turn
    assert turn.draft is not None and "in low fog" in turn.draft.prompt_text
    assert "Ana, taken" in turn.text
    # The persona speaks after the Copilot answered: it does not answer Ana again.
    after = (await engine.take_turn(session)).turn
    assert "Ana" not in after.text
    # An interjection the persona answers first reaches the next draft without a second answer.
    add_interjection(session, author="Bo", text="What about snow instead?")
    await engine.take_turn(session)  # the Copilot answers Bo
    add_interjection(session, author="Cy", text="Make it slower")
    answered_by_persona = (await engine.take_turn(session)).turn
    assert "Cy, noted" in answered_by_persona.text and "Bo" not in answered_by_persona.text
    if session.status == SessionStatus.RUNNING:
        nxt = (await engine.take_turn(session)).turn
        assert "Cy, taken" not in nxt.text
        assert nxt.draft is None or "Cy's note is in this draft" in nxt.text


@pytest.mark.parametrize("target", sorted(targets()))
async def test_every_shipped_target_locks_a_draft_that_passes_its_check(target: str) -> None:
    for who in ("director", "brand", "a pastry chef who hates fuss"):
        session = await run(next(iter(IDEAS)), who, target=target)
        assert session.locked is not None, (target, who)
        # Every objection was answered with a new draft until the persona approved.
        assert session.locked.reason == LockReason.APPROVED, (target, who)
        d = session.locked.draft
        t = session.target
        assert check_draft(d, t) == [], (target, who, d.prompt_text)
        assert t.prompt_min_chars <= len(d.prompt_text) <= t.prompt_max_chars
