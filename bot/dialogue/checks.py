"""The prompt check: a deterministic review of one draft against its target's rules.

It runs on every draft. Its findings reach the Copilot in its next request, the
way a colleague's note would, and the report lists them. It never blocks a turn:
what must hold (legal duration and size, length bounds) is enforced by the reply
schema and by validation; the check also catches what only reading the prompt
shows (a structured part that never made it into the text, on-screen text, two
camera moves in one shot, an avoided thing asked for).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from bot.dialogue.models import Draft, PartName, PromptParts, TargetProfile

_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")
_STOP = frozenset(
    """
    a an the and or but of in on at to for from with without into onto over under as by
    is are be was were been being it its this that these those there their they them he
    she his her hers its our your you we i me my one two then than very just only also
    each every some any all no not nor so such same while when where who whom which what
    how about above after again against before below between both down during few more
    most other out own through too until up off once here why can will would should could
    shot frame scene camera light lighting style sound seconds second clip video
    """.split()
)
# A phrase asking for text on screen. Negated mentions ("no on-screen text") are fine.
_ON_SCREEN_TEXT = re.compile(
    r"on[- ]screen text|text overlay|title card|lower[- ]third|subtitles?\b"
    r"|captions? (?:reads?|says)"
    r"|(?:sign|banner|text|title|headline|logo|words?) (?:that )?(?:reads?|says|saying|spells?)"
    r"|superimposed (?:text|words|title)|(?:the )?words? [\"“']"
)
_CAMERA_MOVE = re.compile(
    r"push(?:es|ing)?[- ]in|pull(?:s|ing)?[- ](?:back|out)|dolly|dollies|dollying"
    r"|\bpan(?:s|ning)?\b(?: (?:left|right|across|over|up|down|to|from))?|whip[- ]pan"
    r"|\btilt(?:s|ing)? (?:up|down)|\btilts\b|tracking shot"
    r"|\btracks? (?:with|alongside|behind|along)"
    r"|crane shot|\bcranes? (?:up|down|over)|\borbit(?:s|ing)?\b|\bzoom(?:s|ing)?\b(?! lens)"
    r"|\barcs? (?:around|round)|\btruck(?:s|ing)? (?:left|right)|\bboom(?:s|ing)? (?:up|down)"
)
# Where a prompt says a new shot begins: "Shot 2:", "Cut to", "[0-4s]", "0–3 s:".
_SHOT_BREAK = re.compile(
    r"(?im)^\s*(?:[-*•]\s*)?(?:shot \d+\b|cut to\b|\[?\d+(?:\.\d+)?\s*[-–]\s*\d+(?:\.\d+)?\s*s\b)"
)
_NEGATION = re.compile(
    r"\b(?:no|not|never|without|avoid|avoiding|free of|clean of|instead of|rather than|nor)\b"
)
_NEGATION_WINDOW = 32  # characters before a match in which a negation cancels it
_SOUND_LABEL = re.compile(r"(?im)^\s*(?:sound|audio|music|dialogue)\s*:")
# A sentence broken off: a dash with nothing after it, a fragment glued on with a
# semicolon and a capital, a sentence that ends on an article or a preposition.
_BROKEN = re.compile(
    r"[—–]\s*(?=$|[.;:,!?…])"
    r"|;\s+[A-Z](?:[a-z]|\s)"
    r"|\b(?:a|an|the|and|or|but|of|to|with|from|into|onto)\s*[.!?;](?=\s|$)",
    re.M,
)


@dataclass(frozen=True)
class Finding:
    """One thing the check noticed; `code` is stable, `message` is for people."""

    code: str
    message: str


def words(text: str) -> list[str]:
    """Content words of `text`, lower-cased and crudely singularised."""
    out = []
    for w in _WORD.findall(text.lower()):
        if len(w) < 4 or w in _STOP or w.isdigit():
            continue
        out.append(_stem(w))
    return out


def _stem(w: str) -> str:
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("s") and not w.endswith("ss") and len(w) > 4:
        return w[:-1]
    return w


def part_texts(parts: PromptParts) -> dict[PartName, list[str]]:
    """Each structured part of a draft as the texts that should show in the prompt."""
    return {
        "style": [parts.style],
        "subject": [parts.subject],
        "setting": [parts.setting],
        "action": list(parts.action_beats),
        "camera": [parts.camera],
        "lighting": [parts.lighting_palette],
        "sound": [parts.sound],
    }


def reflected(part: str, prompt_words: set[str]) -> bool:
    """True when enough of `part`'s content words appear in the prompt (a third, or three)."""
    ws = set(words(part))
    if not ws:
        return True
    hits = len(ws & prompt_words)
    return hits >= min(3, math.ceil(len(ws) / 3))


def _negated(text: str, start: int) -> bool:
    window = text[max(0, start - _NEGATION_WINDOW) : start]
    # Only the clause the match is in: a full stop or a semicolon ends a negation's reach.
    window = re.split(r"[.;:\n]", window)[-1]
    return _NEGATION.search(window) is not None


def _asserted(pattern: re.Pattern[str], text: str) -> list[str]:
    return [m.group(0) for m in pattern.finditer(text) if not _negated(text, m.start())]


def shots(prompt: str) -> list[str]:
    """The prompt cut where it says a new shot starts; one shot when it never does."""
    starts = [m.start() for m in _SHOT_BREAK.finditer(prompt)]
    if not starts:
        return [prompt]
    bounds = [0, *starts, len(prompt)] if starts[0] > 0 else [*starts, len(prompt)]
    pieces = [prompt[a:b] for a, b in itertools.pairwise(bounds)]
    return [p for p in pieces if p.strip()]


def avoid_phrase(item: str) -> str:
    """The thing an avoid item names: 'No on-screen text.' -> 'on-screen text'."""
    s = " ".join(item.lower().split()).strip(" .;,")
    s = re.sub(r"^(?:no|any|avoid|without|never)\s+", "", s)
    return s


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """`phrase` as a pattern that also matches its singular or plural words."""
    ws = _WORD.findall(phrase)
    body = r"\W+".join(re.escape(_stem(w)) + r"(?:e?s)?" for w in ws)
    return re.compile(rf"\b{body}\b")


def negative_prompt(parts: PromptParts) -> str:
    """The avoid items as one negative prompt; '; ' when an item has a comma of its own."""
    items = [a.strip().rstrip(".") for a in parts.avoid if a.strip()]
    sep = "; " if any("," in a for a in items) else ", "
    return sep.join(items)


def check_draft(draft: Draft, target: TargetProfile) -> list[Finding]:
    """Everything in `draft` that breaks `target`'s rules or its vendor's guide."""
    out: list[Finding] = []
    text = draft.prompt_text
    low = " ".join(text.lower().split())
    name = target.model_name
    if draft.duration_seconds not in target.durations:
        legal = ", ".join(str(d) for d in target.durations)
        out.append(
            Finding(
                "duration",
                f"{draft.duration_seconds} s is not a duration {name} takes ({legal} s).",
            )
        )
    if draft.size not in target.sizes:
        out.append(
            Finding(
                "size",
                f"{draft.size} is not a {target.size_label} {name} takes "
                f"({', '.join(target.sizes)}).",
            )
        )
    allowed = target.size_durations.get(draft.size)
    if allowed is not None and draft.duration_seconds not in allowed:
        out.append(
            Finding(
                "size_duration",
                f"At {draft.size}, {name} takes only "
                f"{', '.join(str(d) for d in allowed)} s, not {draft.duration_seconds} s.",
            )
        )
    n = len(text)
    if n < target.prompt_min_chars or n > target.prompt_max_chars:
        out.append(
            Finding(
                "length",
                f"The prompt is {n} characters; {name} takes "
                f"{target.prompt_min_chars} to {target.prompt_max_chars}.",
            )
        )
    prompt_words = set(words(text))
    texts = part_texts(draft.parts)
    for part in target.structure:
        missing = [t for t in texts[part] if t.strip() and not reflected(t, prompt_words)]
        if missing:
            label = "action beat" if part == "action" else part
            shown = "; ".join(f"“{m}”" for m in missing[:2])
            out.append(
                Finding(
                    f"part:{part}",
                    f"The {label} in the parts is not in the prompt text: {shown}.",
                )
            )
    if target.forbids_on_screen_text:
        asked = _asserted(_ON_SCREEN_TEXT, low)
        if asked:
            out.append(
                Finding(
                    "on_screen_text",
                    f"The prompt asks for text on screen (“{asked[0]}”); {name} renders it "
                    "badly and the team ruled it out.",
                )
            )
    limit = target.max_camera_moves_per_shot
    cut = shots(text.lower())
    for i, shot in enumerate(cut, 1):
        moves = _asserted(_CAMERA_MOVE, " ".join(shot.split()))
        if len(moves) > limit:
            where = f"shot {i}" if len(cut) > 1 else "the shot"
            out.append(
                Finding(
                    "camera_moves",
                    f"{len(moves)} camera moves in {where} ({', '.join(moves[:4])}); "
                    f"{name}'s guide asks for at most {limit} per shot.",
                )
            )
    if target.audio == "none" and _SOUND_LABEL.search(text):
        out.append(
            Finding("audio", f"{name} makes no sound; the prompt's sound section is wasted.")
        )
    broken = _BROKEN.search(text)
    if broken:
        start = max(0, broken.start() - 40)
        excerpt = " ".join(text[start : broken.end() + 20].split())
        out.append(
            Finding(
                "broken_sentence",
                f"A sentence is broken off near “…{excerpt}…”: write it whole, with its "
                "subject and its verb.",
            )
        )
    for item in draft.parts.avoid:
        phrase = avoid_phrase(item)
        if len(phrase) < 3:
            continue
        for m in _phrase_pattern(phrase).finditer(low):
            if not _negated(low, m.start()):
                out.append(
                    Finding(
                        "avoid", f"The prompt asks for “{phrase}”, which the avoid list rules out."
                    )
                )
                break
            if not target.negative_prompt:
                out.append(
                    Finding(
                        "avoid_phrasing",
                        f"“{phrase}” is named in the prompt as a negative; {name} has no negative "
                        "prompt, so say what the frame shows instead.",
                    )
                )
                break
    return out


def passes(draft: Draft, target: TargetProfile) -> bool:
    return not check_draft(draft, target)


def render_findings(findings: list[Finding]) -> str:
    return "\n".join(f"- {f.message}" for f in findings)
