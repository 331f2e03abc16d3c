"""Text anyone typed, or a model wrote, is shown as text: never a link, a mention, a control
character or a bidirectional override, in any block type, file or report; and no NUL ever
reaches the store, the model or a file."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.cli import write_report
from bot.dialogue.engine import Engine, add_interjection
from bot.dialogue.models import Draft, LockedPrompt, LockReason, Session, SessionStatus
from bot.dialogue.profiles import resolve_persona
from bot.dialogue.report import render_markdown
from bot.dialogue.text import ZWSP, as_markdown, as_text, clean
from bot.llm.offline import OfflineModel
from bot.slack.blocks import (
    crosspost_parts,
    escape,
    locked_parts,
    report_content,
    report_title,
    root_blocks,
    root_text,
    turn_parts,
)
from state import State
from tests.redis_fixtures import *  # noqa: F403
from tests.redis_fixtures import make_draft, make_session

EVIL_LINK = "[Official IT Security](https://evil.example/p)"
CONTROLS = (
    "\x00\x01\x07\x08\x0b\x0c\r\x1b[31m\x7f\x80\x9b"
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# A live Markdown link: `]` followed at once by `(`, `[` or `:` (CommonMark).
LIVE_LINK = re.compile(r"\][(\[:]")


def removed(text: str) -> bool:
    return not any(c in text for c in CONTROLS if c not in "[31m")


def test_clean_removes_c0_c1_and_bidi_controls_but_keeps_newlines_and_tabs() -> None:
    assert clean(f"a{CONTROLS}b\n\tc") == "a[31mb\n\tc"
    assert clean("é 🍾 — ok") == "é 🍾 — ok"


def test_markdown_link_syntax_shows_as_typed_but_is_never_a_link() -> None:
    for typed in (EVIL_LINK, "![x](https://evil.example/i.png)", "[a][ref]\n[ref]: https://e.x"):
        shown = as_text(typed)
        assert not LIVE_LINK.search(shown)
        assert shown.replace(ZWSP, "") == typed
    assert as_text(EVIL_LINK, code=True) == EVIL_LINK  # code copies exactly


def test_as_markdown_leaves_fenced_code_exact() -> None:
    md = f"See {EVIL_LINK}\n\n```text\n{EVIL_LINK}\n```\nafter {EVIL_LINK}"
    shown = as_markdown(md)
    assert f"```text\n{EVIL_LINK}\n```" in shown
    assert shown.count(ZWSP) == 2


def evil_session() -> Session:
    persona = resolve_persona(EVIL_LINK)
    session = make_session(idea=f"A lighthouse\u202e{CONTROLS} {EVIL_LINK}", persona=EVIL_LINK)
    assert session.persona.display_name == persona.display_name
    draft = make_draft().model_copy(
        update={"title": f"Title {EVIL_LINK}\u202e", "prompt_text": f"Prompt {EVIL_LINK}."}
    )
    return session.model_copy(
        update={
            "status": SessionStatus.LOCKED,
            "locked": LockedPrompt(
                draft=draft,
                locked_by=f"Mara {EVIL_LINK}",
                locked_at=datetime.now(UTC),
                reason=LockReason.APPROVED,
            ),
        }
    )


def test_the_models_keep_no_control_character() -> None:
    session = make_session(idea=f"idea{CONTROLS}")
    assert session.idea == "idea[31m"
    add_interjection(session, author="grace\x00", text=f"note\u202e{CONTROLS}")
    assert session.turns[-1].text == "note[31m" and session.turns[-1].author == "grace"
    draft = Draft.model_validate({**make_draft().model_dump(), "title": "t\x00\u2066"})
    assert draft.title == "t"


def texts(blocks: Any) -> list[str]:
    """Every string in a Block Kit structure, whatever its block or element type."""
    if isinstance(blocks, str):
        return [blocks]
    if isinstance(blocks, dict):
        return [t for v in blocks.values() for t in texts(v)]
    if isinstance(blocks, list | tuple):
        return [t for v in blocks for t in texts(v)]
    return []


def assert_shown_as_text(strings: list[str], *, code_allowed: str = "") -> None:
    for s in strings:
        assert removed(s), repr(s)
        outside = s.replace("```\n" + code_allowed, "") if code_allowed else s
        # The only live link syntax allowed is inside the copy-ready code block.
        for m in LIVE_LINK.finditer(outside):
            assert "```" in outside[: m.start()], repr(s)


def test_every_slack_block_shows_typed_and_written_text_as_text() -> None:
    session = evil_session()
    assert_shown_as_text([root_text(session), *texts(root_blocks(session))])
    for part in locked_parts(session):
        assert_shown_as_text([part.text, *texts(part.blocks)])
    for part in crosspost_parts(session, "https://slack.example/archives/C1/p1"):
        strings = [part.text, *texts(part.blocks)]
        assert_shown_as_text(strings)
        assert any("Official IT Security" in s for s in strings)
    assert "](https://evil" not in escape(session.persona.display_name)


async def test_turns_the_models_write_are_shown_as_text() -> None:
    session = make_session()
    await Engine(model=OfflineModel()).take_turn(session)
    turn = session.turns[-1].model_copy(update={"text": f"Look: {EVIL_LINK} <!channel>"})
    for part in turn_parts(session, turn):
        for s in [part.text, *texts(part.blocks)]:
            assert "](" not in s and "<!channel>" not in s


def test_the_report_and_its_file_carry_no_link_and_no_control(tmp_path: Path) -> None:
    session = evil_session()
    md = render_markdown(session)
    assert removed(md)
    prose = re.sub(r"```text\n.*?\n```", "", md, flags=re.S)
    assert not LIVE_LINK.search(prose)
    assert f"Prompt {EVIL_LINK}." in md  # the copy-ready block is exact
    content = report_content(session).decode()
    assert "\x00" not in content and "\x1b" not in content
    assert removed(report_title(session))
    path, js = write_report(session, tmp_path)
    raw = path.read_bytes()
    assert b"\x00" not in raw and b"\x1b" not in raw and "\u202e".encode() not in raw
    assert "\\u0000" not in js.read_text() and "\\u001b" not in js.read_text()


async def test_no_nul_reaches_the_store(real_state: State) -> None:
    session = make_session(idea="nul\x00 and esc\x1b here")
    await real_state.sessions.create(session)
    raw = await real_state.redis.hget(real_state.keys.session(session.id), "json")
    assert raw is not None and "\\u0000" not in raw and "\\u001b" not in raw
    assert json.loads(raw)["idea"] == "nul and esc here"
