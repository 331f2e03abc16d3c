"""The report: the locked prompt in full, honest counters, UTF-8 end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot.cli import write_report
from bot.dialogue.engine import Engine, add_interjection
from bot.dialogue.models import SessionStatus
from bot.dialogue.report import fence, metadata, render_markdown
from tests.support import ScriptedModel, copilot, draft_json, make_session, persona

EMOJI_PROMPT = (
    "Un gardien de phare 🐋 lit une lettre — 東京の夜, неон и дождь. A single shot, 35mm, slow "
    "push-in; storm light in slate blue and amber; the foghorn answers 🎬. No text on screen."
)


async def locked_session():
    v2 = draft_json(2, title="Threshold.", prompt=EMOJI_PROMPT)
    model = ScriptedModel(
        [
            copilot("Salut 👋 — quick questions first.", draft_json(1)),
            persona("Plus de pluie 🌧️. Caption it 'Threshold.' later."),
            copilot("Done — v2 🎬", v2),
            persona("Yes. Approved ✅", "approve", 2),
        ]
    )
    session = make_session(idea="Un phare 🐋 et une lettre — 東京")
    engine = Engine(model=model)
    await engine.take_turn(session)
    await engine.take_turn(session)
    add_interjection(session, author="Zoë 🦊", text="Make the bottle green glass 🍾")
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    return session


async def test_report_shows_the_locked_prompt_in_full_not_its_caption(tmp_path: Path) -> None:
    session = await locked_session()
    md = render_markdown(session)
    section = md.split("## Locked prompt", 1)[1].split("## Dialogue", 1)[0]
    assert fence(EMOJI_PROMPT, "text") in section
    assert "**Caption**: Threshold." in section
    assert "### Structured parts" in section and "**Camera**: 35mm, slow push-in" in section


async def test_every_counter_in_the_report_agrees_with_the_transcript() -> None:
    session = await locked_session()
    m = metadata(session)
    assert m["rounds"] == max(t.round for t in session.turns) == 2
    assert m["messages"] == len(session.turns) == 5
    assert m["human_interjections"] == 1
    assert m["agent_turns"] == 4
    assert m["prompt_length_chars"] == len(EMOJI_PROMPT)
    assert m["tokens"]["input"] == 400 and m["tokens"]["cache_read"] == 40
    assert m["lock_reason"] == "approved"
    md = render_markdown(session)
    assert f"**Prompt length**: {len(EMOJI_PROMPT)} characters" in md
    assert "**Rounds**: 2 of at most 6" in md
    assert "**Human interjections**: 1" in md
    labels = re.findall(r"^### (Opening|Round \d+) · (.+)$", md, flags=re.M)
    assert labels == [
        ("Opening", "Sora Copilot"),
        ("Round 1", "Tomás Ferreira"),
        ("Round 1", "Zoë 🦊 (interjection)"),
        ("Round 1", "Sora Copilot"),
        ("Round 2", "Tomás Ferreira"),
    ]
    assert "claude-sonnet-5-5-20260815" in md
    assert m["estimated_cost_usd"] is not None and m["estimated_cost_usd"] > 0


async def test_emoji_and_non_latin_text_reach_the_report_files_byte_for_byte(
    tmp_path: Path,
) -> None:
    session = await locked_session()
    md_path, json_path = write_report(session, tmp_path)
    raw = md_path.read_bytes()
    assert EMOJI_PROMPT.encode("utf-8") in raw
    assert "Zoë 🦊".encode() in raw and "Make the bottle green glass 🍾".encode() in raw
    # The mojibake of the seed transcript (UTF-8 read as cp1252) must never appear.
    assert "ðŸ".encode() not in raw and "â€”".encode() not in raw
    data = json.loads(json_path.read_bytes().decode("utf-8"))
    assert data["session"]["locked"]["draft"]["prompt_text"] == EMOJI_PROMPT
    assert data["metadata"]["prompt_length_chars"] == len(EMOJI_PROMPT)


def test_a_fence_is_longer_than_any_backtick_run_in_the_prompt() -> None:
    text = "use ``` inside and ```` too"
    out = fence(text)
    assert out.startswith("`````\n") and out.endswith("\n`````")


async def test_an_unlocked_session_says_so_instead_of_inventing_a_prompt() -> None:
    model = ScriptedModel([copilot("Hi", draft_json(1)), "garbage", "garbage"])
    session = make_session()
    engine = Engine(model=model)
    await engine.take_turn(session)
    try:
        await engine.take_turn(session)
    except Exception:
        pass
    md = render_markdown(session)
    assert "No prompt was locked: the session is paused" in md
    assert metadata(session)["prompt_length_chars"] is None


def test_the_locked_prompt_is_ready_to_use_with_its_parameters_and_how_to_paste_it() -> None:
    from bot.dialogue.agents import DraftOut, make_draft
    from bot.dialogue.profiles import resolve_target
    from bot.dialogue.report import ready_prompt, render_ready_prompt

    raw = draft_json(1, duration=8, size="16:9")
    raw["parts"]["avoid"] = ["on-screen text, captions", "logos"]
    d = make_draft(DraftOut.model_validate(raw), version=1, target=resolve_target("veo-3.1"))
    veo = resolve_target("veo-3.1")
    r = ready_prompt(d, veo)
    assert r.prompt_text == d.prompt_text
    assert ("Negative prompt", "on-screen text, captions; logos") in r.parameters
    assert ("Aspect ratio", "16:9") in r.parameters and ("Audio", "on") in r.parameters
    assert r.how_to_use.startswith("Paste into Veo 3.1 in Flow or the Gemini API, 8 s, 16:9")
    md = render_ready_prompt(d, veo)
    assert md.count(d.prompt_text) == 1 and "- **Negative prompt**:" in md
    # A target without a negative prompt field shows none; a retired one says what still works.
    sora = render_ready_prompt(d, resolve_target("sora-2"))
    assert "Negative prompt" not in sora and "still works in the Sora app" in sora


async def test_the_report_lists_the_prompt_check_of_the_locked_draft() -> None:
    session = await locked_session()
    md = render_markdown(session)
    section = md.split("### Prompt check", 1)[1].split("###", 1)[0]
    assert section.strip()
    assert not md.startswith("> **Offline**")  # a session a real model wrote has no banner


async def test_the_locked_reply_in_slack_is_ready_to_use_too() -> None:
    from bot.slack.blocks import locked_markdown

    v1 = draft_json(1, duration=8, size="16:9", resolution="1080p")
    model = ScriptedModel(
        [
            copilot("Opening", v1),
            persona("Wetter."),
            copilot("Wetter", draft_json(2, duration=8, size="9:16", resolution="1080p")),
            persona("Yes.", "approve", 2),
        ]
    )
    session = make_session(target="veo-3.1")
    engine = Engine(model=model)
    while session.status == SessionStatus.RUNNING:
        await engine.take_turn(session)
    md = locked_markdown(session)
    assert md.count(session.drafts[1].prompt_text) == 1
    assert "- **Aspect ratio**: 9:16" in md and "- **Negative prompt**: on-screen text" in md
    assert "**How to use it**: Paste into Veo 3.1 in Flow or the Gemini API, 8 s, 9:16" in md
