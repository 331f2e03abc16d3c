"""Personas and target profiles are data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.dialogue.profiles import ProfileError, personas, resolve_persona, resolve_target, targets


def test_shipped_personas_are_four_different_people_with_must_haves() -> None:
    shipped = personas()
    assert {"founder", "director", "brand", "photographer"} <= set(shipped)
    names = {p.display_name for p in shipped.values()}
    assert len(names) == len(shipped)
    for p in shipped.values():
        assert p.must_haves and p.voice and p.taste and p.icon_emoji.startswith(":")


def test_shipped_targets_have_their_legal_durations_and_sizes() -> None:
    t = targets()
    assert t["sora-2"].durations == [4, 8, 12]
    assert set(t["sora-2"].sizes) == {"1280x720", "720x1280"}
    assert set(t["sora-2-pro"].sizes) == {"1280x720", "720x1280", "1792x1024", "1024x1792"}
    assert "generic" in t


def test_a_free_text_persona_waits_for_its_sheet() -> None:
    p = resolve_persona("a 1970s Italian horror director")
    assert p.name == "custom" and p.pending
    assert p.description == "a 1970s Italian horror director"
    # Until its sheet is written it shows as the words it was asked for with.
    assert p.display_name == "A 1970s Italian horror director"
    assert not p.must_haves and not p.voice


@pytest.mark.parametrize("words", ["!!!", "X?", "ab cd", "  ??  "])
def test_a_persona_with_no_word_of_three_letters_is_refused(words: str) -> None:
    with pytest.raises(ProfileError, match="Describe the persona in words"):
        resolve_persona(words)


def test_an_unknown_single_word_persona_is_an_error_not_a_free_text_persona() -> None:
    with pytest.raises(ProfileError, match="Unknown persona 'fonder'"):
        resolve_persona("fonder")
    with pytest.raises(ProfileError, match="Unknown target"):
        resolve_target("sora-9")


def test_adding_a_target_model_is_a_data_file(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "veo-4.toml").write_text(
        'model_name = "Veo 4"\ndurations = [5, 10]\nsizes = ["16:9"]\n'
        'prompt_min_chars = 50\nprompt_max_chars = 3000\nrules = ["Be concrete."]\n',
        encoding="utf-8",
    )
    t = resolve_target("veo-4", str(tmp_path))
    assert t.model_name == "Veo 4" and t.durations == [5, 10]
    assert "sora-2" in targets(str(tmp_path))


def test_a_malformed_profile_file_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "bad.toml").write_text('model_name = "X"\n', encoding="utf-8")
    with pytest.raises(ProfileError, match="target 'bad' is malformed"):
        targets(str(tmp_path))
