"""The prompt check: each target's rules read off the prompt text, deterministically."""

from __future__ import annotations

from typing import Any

from bot.dialogue.agents import DraftOut, make_draft
from bot.dialogue.checks import check_draft, negative_prompt
from bot.dialogue.models import Draft
from bot.dialogue.profiles import resolve_target
from tests.support import draft_json

# A prompt that carries every part of `draft_json`'s parts.
GOOD = (
    "Cinematic realism. An old lighthouse keeper on a lighthouse stair during a storm, at "
    "dusk. He climbs; he uncorks the bottle; he reads and freezes. 35mm, slow push-in. Storm "
    "light, slate blue and amber. Wind, a foghorn, paper unfolding."
)


def draft(target: str = "sora-2", **over: Any) -> Draft:
    over.setdefault("prompt", GOOD)
    raw = draft_json(1, **{k: v for k, v in over.items() if k in ("prompt", "duration", "size")})
    parts = over.get("parts")
    if parts:
        raw["parts"] = {**raw["parts"], **parts}
    return make_draft(DraftOut.model_validate(raw), version=1, target=resolve_target(target))


def codes(d: Draft, target: str) -> list[str]:
    return [f.code for f in check_draft(d, resolve_target(target))]


def test_a_draft_whose_prompt_carries_its_parts_passes_on_sora() -> None:
    assert codes(draft(), "sora-2") == []
    # The shared test draft's prompt leaves most of its parts out: the check says which.
    loose = draft(prompt=draft_json(1)["prompt_text"])
    assert {"part:style", "part:action", "part:sound"} <= set(codes(loose, "sora-2"))


def test_illegal_duration_size_and_size_duration_pairs_are_named() -> None:
    assert {"duration", "size"} <= set(codes(draft(duration=10, size="16:9"), "sora-2"))
    hailuo = draft("hailuo-02", duration=10, size="1080P")
    findings = check_draft(hailuo, resolve_target("hailuo-02"))
    assert [f.code for f in findings if f.code.startswith("size")] == ["size_duration"]
    assert "At 1080P, MiniMax Hailuo-02 takes only 6 s, not 10 s." in findings[0].message


def test_a_part_that_never_reaches_the_prompt_text_is_named() -> None:
    d = draft(parts={"camera": "overhead drone orbit with anamorphic flare"})
    assert "part:camera" in codes(d, "sora-2")
    # Runway's structure has no sound part (the model is silent): sound is not required.
    silent = draft(parts={"sound": "choir of distant whales"})
    assert "part:sound" not in codes(silent, "runway-gen-4.5")
    assert "part:sound" in codes(silent, "sora-2")


def test_text_on_screen_is_flagged_but_a_negated_mention_is_not() -> None:
    base = GOOD
    asks = draft(prompt=base + " A neon sign that reads OPEN hangs over the stair.")
    assert "on_screen_text" in codes(asks, "sora-2")
    clean = draft(prompt=base + " The walls are bare, with no on-screen text anywhere.")
    assert "on_screen_text" not in codes(clean, "sora-2")


def test_two_camera_moves_in_one_shot_break_the_vendor_guide_but_two_shots_do_not() -> None:
    base = GOOD
    crowded = draft(prompt=base + " The camera then pans left and zooms out to the sea.")
    assert "camera_moves" in codes(crowded, "sora-2")
    split = draft(
        prompt=base + "\nShot 2: the camera pans left across the sea, storm light, the bottle."
    )
    assert "camera_moves" not in codes(split, "sora-2")


def test_avoid_items_are_honoured_and_phrased_for_the_target() -> None:
    base = GOOD
    logo = {"avoid": ["logos"]}
    asks = draft(prompt=base + " A brass logo glints on the lamp.", parts=logo)
    assert "avoid" in codes(asks, "sora-2")
    negated = draft(prompt=base + " There are no logos anywhere.", parts=logo)
    # Sora has no negative prompt: naming the thing is discouraged, say what is there instead.
    assert "avoid_phrasing" in codes(negated, "sora-2")
    assert "avoid_phrasing" not in codes(negated, "kling-3.0")


def test_a_negative_prompt_joins_items_with_semicolons_when_they_hold_commas() -> None:
    d = draft(parts={"avoid": ["text, captions or subtitles", "logos"]})
    assert negative_prompt(d.parts) == "text, captions or subtitles; logos"
    assert negative_prompt(draft(parts={"avoid": ["logos", "lens flare."]}).parts) == (
        "logos, lens flare"
    )
