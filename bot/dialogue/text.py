"""Text that people and models wrote, made safe to keep and to show: one place for both.

`clean` is what may be kept: C0 controls but newline and tab (NUL, ESC, CR, ...), DEL,
C1 controls, and the bidirectional embeddings, overrides and isolates (U+202A-U+202E,
U+2066-U+2069: an RTL override makes "gpj.exe" read "exe.jpg") are removed. Every model
of `bot.dialogue.models` passes its strings through it (`Clean`), so no such character
reaches the store, the model or a file.

`as_text` is what may be shown: `clean`, and Markdown's link syntax broken, so that
`[Official IT Security](https://evil.example)` shows as typed instead of as a live link
with a hidden target. A zero-width space after the `]` of `[label](url)`, `[label][ref]`
and `[ref]: url` does it: CommonMark makes a link only when `(`, `[` or `:` follows the
`]` at once, whatever renders it (Slack's `markdown` blocks, a report viewer). Every
renderer uses it: Slack's `escape` and `defuse`, the report, the terminal. Slack's own
syntax (`<url|label>`, `<!channel>`, `<@U…>`) is `escape`'s to defuse, per surface.
Code (a fenced prompt) cannot link, and must copy byte for byte: `as_text(s, code=True)`
only cleans.
"""

from __future__ import annotations

import re
from typing import Any

_REMOVED = (
    [c for c in range(0x00, 0x20) if c not in (0x09, 0x0A)]
    + [0x7F]
    + list(range(0x80, 0xA0))
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)
_CLEAN = dict.fromkeys(_REMOVED)
_LINK = re.compile(r"\](?=[(\[:])")
ZWSP = "\u200b"


def clean(text: str) -> str:
    """`text` without control characters (newline and tab kept) and bidi overrides."""
    return text.translate(_CLEAN)


def as_text(text: str, *, code: bool = False) -> str:
    """`text` as it was typed, to be shown: cleaned, and no Markdown link (unless `code`)."""
    text = clean(text)
    return text if code else _LINK.sub("]" + ZWSP, text)


def clean_value(value: Any) -> Any:
    """`clean` applied to a string, or to each string of a list (pydantic's before-validator)."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [clean(v) if isinstance(v, str) else v for v in value]
    return value


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def as_markdown(markdown: str) -> str:
    """`as_text` over a whole Markdown document: its prose loses link syntax, its fenced
    code is only cleaned (a prompt in a fence copies exactly as it was locked)."""
    out: list[str] = []
    prose: list[str] = []
    marker: str | None = None
    for line in clean(markdown).split("\n"):
        m = _FENCE.match(line)
        if marker is None:
            if m:
                if prose:
                    out.append(as_text("\n".join(prose)))
                prose = []
                marker = m.group(1)
                out.append(line)
            else:
                prose.append(line)
        else:
            out.append(line)
            closing = line.strip()
            if m and set(closing) == {marker[0]} and len(closing) >= len(marker):
                marker = None
    if prose:
        out.append(as_text("\n".join(prose)))
    return "\n".join(out)
