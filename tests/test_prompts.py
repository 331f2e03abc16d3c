"""What each agent is told: system prompts, the drafts it sees, the notes it gets."""

from __future__ import annotations

import itertools
import re

import pytest

from bot.dialogue.agents import (
    MIN_CACHEABLE_SYSTEM_CHARS,
    article,
    build_request,
    copilot_system,
    persona_system,
)
from bot.dialogue.engine import Engine, add_interjection
from bot.dialogue.models import Session, SessionStatus
from bot.dialogue.profiles import personas, targets
from tests.fakes.anthropic_server import MIN_CACHE_TOKENS, tokens
from tests.support import ScriptedModel, copilot, draft_json, make_session, persona

CACHED_MODELS = ("claude-sonnet-5", "claude-sonnet-5-5", "claude-opus-5-5")
FREE_TEXT = ["a 1970s Italian horror director", "a pastry chef who hates fuss"]


@pytest.mark.parametrize("target", sorted(targets()))
@pytest.mark.parametrize("who", [*sorted(personas()), *FREE_TEXT])
def test_every_system_prompt_is_long_enough_to_be_cached_from_the_first_request(
    target: str, who: str
) -> None:
    session = make_session(persona=who, target=target)
    for system in (copilot_system(session), persona_system(session)):
        assert len(system) >= MIN_CACHEABLE_SYSTEM_CHARS
        # And by the fake API's own counting, above the largest minimum of the models we run.
        assert tokens(system) >= max(MIN_CACHE_TOKENS[m] for m in CACHED_MODELS)
        # Nothing that changes during a session: no round number, no idea, no time.
        assert session.idea not in system and not re.search(r"Round \d", system)


def test_both_agents_are_told_the_targets_limits_and_the_persona_the_round_limit_rule() -> None:
    session = make_session(persona="director", target="veo-3.1")
    for system in (copilot_system(session), persona_system(session)):
        assert "Legal durations: 4, 6, 8 seconds" in system
        assert "Legal aspect ratio values: 16:9, 9:16" in system
        assert "At most 1 camera move per shot".lower() in system.lower()
        assert "On-screen text, captions and logos: not allowed" in system
    p = persona_system(session)
    assert "the Copilot's next draft is\n  locked as final without your review" in p
    assert "You are Tomás Ferreira, an indie film director." in p
    assert ".." not in p.replace("...", "")


def test_the_copilot_is_told_the_vendors_structure_and_how_to_handle_avoid() -> None:
    sora = copilot_system(make_session(target="sora-2"))
    assert "`Cinematography:` block" in sora and "`Actions:` block" in sora
    assert "Negative prompt: none" in sora and "positive statement" in sora
    assert "retired" not in sora.lower() or "shut down the Sora 2 API" in sora
    veo = copilot_system(make_session(target="veo-3.1"))
    assert (
        "Negative prompt: a separate field" in veo and "Do not repeat them in `prompt_text`" in veo
    )
    runway = copilot_system(make_session(target="runway-gen-4.5"))
    assert "in the vendor's order above: motion, not appearance" in runway
    assert "subject, action, camera, context (place and time), style" in runway
    # A silent model: said once, and nothing else about sound anywhere.
    assert "the video is silent" in runway and "sound" not in runway.lower()


def test_articles_follow_the_sound_of_the_word() -> None:
    assert article("indie film director") == "an indie film director"
    assert article("brand marketing lead") == "a brand marketing lead"
    assert article("user researcher") == "a user researcher"
    assert article("hour-long take") == "an hour-long take"


async def _three_drafts() -> tuple[Session, ScriptedModel]:
    model = ScriptedModel(
        [
            copilot("Opening", draft_json(1)),
            persona("Wetter."),
            copilot("Same again", draft_json(1)),  # unchanged: not a new version
            persona("Still wetter."),
            copilot("Now wetter", draft_json(2)),
            persona("Colder."),
            copilot("Colder", draft_json(3)),
            persona("Good.", "approve", 3),
        ]
    )
    session = make_session()
    engine = Engine(model=model)
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    return session, model


async def test_the_copilot_sees_every_past_draft_labelled_with_its_version() -> None:
    session, model = await _three_drafts()
    last = [r for r in model.requests if r.agent == "copilot"][-1]
    users = "\n".join(m.content for m in last.messages if m.role == "user")
    assert "(Your reply above carried your draft v1. v1 is " in users
    assert "no new draft; the latest is still your draft v1" in users  # the skipped repeat
    assert "(Your reply above carried your draft v2. v2 is " in users
    assert "characters of the 4,000 OpenAI Sora 2 takes.)" in users
    assert [d.version for d in session.drafts] == [1, 2, 3]


async def test_the_persona_sees_each_draft_once_as_its_prompt_and_parameters() -> None:
    # Each draft where it arrived, never shortened later (a message that changes after it was
    # sent voids the prompt cache), and its parts are not repeated after the prompt.
    session, model = await _three_drafts()
    last = [r for r in model.requests if r.agent == "persona"][-1]
    text = "\n".join(m.content for m in last.messages)
    for d in session.drafts:
        assert text.count(f"Draft v{d.version}:") == 1
        assert text.count(d.prompt_text) == 1
    latest = text.split("Draft v3:", 1)[1]
    assert "Parameters: Duration: 8 s; Size: 1280x720; Audio: on" in latest
    assert "Parts:" not in text and "- Subject:" not in text
    assert session.drafts[-1].parts.subject not in latest.split("Parameters:", 1)[1]
    assert ".." not in latest.replace("...", "")
    # The earlier requests are prefixes of the last: nothing already sent was re-rendered.
    earlier = [r for r in model.requests if r.agent == "persona"][-2]
    assert [m.content for m in earlier.messages[:-1]] == [
        m.content for m in last.messages[: len(earlier.messages) - 1]
    ]


async def test_the_prompt_checks_findings_reach_the_copilot_like_a_note() -> None:
    crowded = draft_json(1)
    crowded["prompt_text"] += " The camera pans left, then zooms out to the sea."
    model = ScriptedModel([copilot("Opening", crowded), persona("Wetter.")])
    session = make_session()
    engine = Engine(model=model)
    await engine.take_turn(session)
    await engine.take_turn(session)
    request = build_request(session, max_tokens=100)
    newest = request.messages[-1].content
    assert "Note from the prompt check on your draft v1 for OpenAI Sora 2:" in newest
    assert "camera moves in the shot" in newest


async def test_an_interjection_is_answered_once_and_labelled_as_a_teammate() -> None:
    model = ScriptedModel(
        [copilot("Opening", draft_json(1)), persona("Wetter."), copilot("Ok", draft_json(2))]
    )
    session = make_session(persona=FREE_TEXT[0])
    engine = Engine(model=model)
    await engine.take_turn(session)
    add_interjection(session, author="Ana Lima", text="Green glass bottle?")
    persona_request = build_request(session, max_tokens=100)
    assert persona_request.agent == "persona"
    assert "A teammate, Ana Lima, wrote in the thread" in persona_request.messages[-1].content
    assert "Answer the teammate's interjection" in persona_request.messages[-1].content
    await engine.take_turn(session)
    copilot_request = build_request(session, max_tokens=100)
    newest = copilot_request.messages[-1].content
    assert "Answer the teammate's interjection" not in newest
    assert "add to it only if it changes the plan" in newest


def test_free_text_personas_get_a_taste_from_their_own_words() -> None:
    horror, chef = (make_session(persona=p).persona for p in FREE_TEXT)
    assert "blood red" in horror.look.palette and "zoom" in horror.look.camera
    assert "flour" in chef.look.palette
    assert horror.look != chef.look
    for a, b in itertools.combinations(personas().values(), 2):
        assert a.look != b.look
