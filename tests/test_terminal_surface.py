"""The terminal's parts: the reading pace, the keyboard's line editing, rich rendering."""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console

from bot.dialogue.engine import Engine
from bot.llm.base import ModelRequest
from bot.llm.paced import PacedModel
from bot.surfaces.keyboard import Keyboard
from bot.surfaces.terminal import PlainSurface, RichSurface, rounds_phrase
from tests.support import ScriptedModel, copilot, draft_json, make_session, persona

REQUEST = ModelRequest(agent="copilot", system="s", messages=[], schema={}, max_tokens=100)


async def test_pace_costs_time_for_the_message_only_and_changes_nothing() -> None:
    message = "Here is a first draft, built from the idea."
    reply = copilot(message, draft_json())
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    paced = PacedModel(ScriptedModel([reply]), chars_per_second=100, think_seconds=0.5, sleep=sleep)
    seen: list[str] = []

    async def on_text(delta: str) -> None:
        seen.append(delta)

    result = await paced.complete(REQUEST, on_text)
    assert result.text == reply and "".join(seen) == reply
    assert slept[0] == 0.5  # thinking, once
    # Then the message's characters at 100 a second; the draft's JSON costs nothing.
    assert sum(slept[1:]) == pytest.approx(len(message) / 100)


async def test_pace_without_a_listener_is_instant() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    paced = PacedModel(ScriptedModel([copilot("hi")]), chars_per_second=10, sleep=sleep)
    await paced.complete(REQUEST)
    assert slept == []


def test_pace_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PacedModel(ScriptedModel([]), chars_per_second=0)


def _keyboard(edit: bool) -> tuple[Keyboard, list[str], list[str]]:
    lines: list[str] = []
    edits: list[str] = []
    r, w = os.pipe()
    os.close(w)
    kb = Keyboard(on_line=lines.append, on_edit=edits.append, edit=edit, max_chars=20, fd=r)
    os.close(r)
    return kb, lines, edits


def test_the_line_editor_handles_backspace_kill_and_arrow_keys() -> None:
    kb, lines, edits = _keyboard(edit=True)
    kb._keys("more fgo\x7f\x7fog\x1b[D\x1bOA please\r")
    kb._keys("scrap this\x15keep it all\x17\r")  # Ctrl-U, then Ctrl-W
    kb._keys("   \r")  # blank: not an interjection
    assert lines == ["more fog please", "keep it"]
    assert edits[-1] == ""


def test_the_line_editor_caps_a_line() -> None:
    kb, lines, _ = _keyboard(edit=True)
    kb._keys("x" * 30 + "\r")
    assert lines == ["x" * 20]


def test_rounds_are_counted_in_english() -> None:
    assert rounds_phrase(1) == "at most 1 round"
    assert rounds_phrase(6) == "at most 6 rounds"


async def _show(surface: RichSurface | PlainSurface) -> None:
    from bot.driver import drive_turn

    model = ScriptedModel(
        [
            copilot("A **bold** start.\n\n- one\n- two\n\nThe end.", draft_json()),
            persona("Not yet: `v1` needs fog.", "revise"),
            copilot("Fog is in. This is my final draft.", draft_json(2)),
        ]
    )
    engine = Engine(model=model, max_tokens=1000)
    session = make_session(max_rounds=1)
    for _ in range(3):
        await drive_turn(engine, session, surface)


async def test_rich_renders_markdown_and_colours_speakers() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system="standard")
    surface = RichSurface(console)
    surface.start()
    await _show(surface)
    surface.close()
    raw = buf.getvalue()
    assert "\x1b[1;36m" in raw and "\x1b[1;35m" in raw  # copilot cyan, persona magenta
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "**bold**" not in out and "A bold start." in out  # rendered, not raw
    assert "• one" in out and "`v1`" not in out and "v1 needs fog" in out
    assert "Locked: v2" in out


async def test_plain_keeps_the_text_as_written() -> None:
    buf = io.StringIO()
    await _show(PlainSurface(buf))
    out = buf.getvalue()
    assert "A **bold** start." in out and "\x1b[" not in out


async def test_rich_says_when_claude_is_waited_for() -> None:
    buf = io.StringIO()
    surface = RichSurface(Console(file=buf, force_terminal=True, width=100))
    surface.start()
    await surface.model_waiting(make_session(), 2.2, "overloaded_error")
    surface.close()
    assert "Claude is overloaded; retrying in 3 s (overloaded_error)" in buf.getvalue()


def test_a_paragraph_taller_than_the_screen_shows_its_newest_lines_while_it_streams() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=40, height=10)
    surface = RichSurface(console, interactive=True)
    surface.stream(" ".join(f"word{i}" for i in range(200)))  # one paragraph, ~40 lines
    lines = console.render_lines(surface._region(), console.options, pad=False)
    assert len(lines) <= 10
    text = "".join(seg.text for line in lines for seg in line)
    assert "word199" in text and "word0 " not in text
