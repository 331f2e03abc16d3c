"""The session report: Markdown for people, JSON for machines.

The final prompt shown is the locked draft itself, never text found in the
dialogue; every number is computed from the transcript (see `metadata`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.dialogue import checks
from bot.dialogue.agents import draft_parameters
from bot.dialogue.models import Draft, LockReason, Session, Speaker, TargetProfile, Turn
from bot.dialogue.text import as_markdown
from bot.llm.offline import OFFLINE_MODEL
from bot.llm.prices import estimate_cost

# A report of a session the offline model wrote opens with one banner saying so.
OFFLINE_BANNER = (
    "> **Offline**: a deterministic stand-in model wrote this dialogue, without calling Claude."
)

LOCK_REASONS = {
    LockReason.APPROVED: "the persona approved the latest draft",
    LockReason.HUMAN: "a person in the team locked the latest draft",
    LockReason.ROUND_LIMIT: "the round limit was reached; the Copilot's final draft was locked",
    LockReason.NO_PROGRESS: "two replies in a row brought no new draft; the latest was locked",
}


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


def session_cost(session: Session) -> float | None:
    """Estimated USD cost, or None when some model's price is unknown."""
    total = 0.0
    # The persona sheet's call is priced at the session's first model (the same client).
    sheet = [(session.models[0], session.persona_usage)] if session.models else []
    for model, usage in [*sheet, *((t.model, t.usage) for t in session.turns)]:
        if model is None or not usage.total:
            continue
        cost = estimate_cost(model, usage)
        if cost is None:
            return None
        total += cost
    return total


def metadata(session: Session) -> dict[str, Any]:
    usage = session.usage
    locked = session.locked
    cost = session_cost(session)
    return {
        "status": session.status.value,
        "rounds": session.rounds,
        "max_rounds": session.max_rounds,
        "messages": session.messages,
        "agent_turns": len(session.agent_turns),
        "human_interjections": len(session.interjections),
        "notes_not_heard": len(session.unheard),
        "drafts": len(session.drafts),
        "prompt_length_chars": len(locked.draft.prompt_text) if locked else None,
        "prompt_check": (
            [f.code for f in checks.check_draft(locked.draft, session.target)] if locked else None
        ),
        "models": session.models,
        "tokens": {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "thinking": usage.thinking_tokens,  # part of output
            "cache_read": usage.cache_read_tokens,
            "cache_write": usage.cache_write_tokens,
            "total": usage.total,
        },
        "estimated_cost_usd": round(cost, 6) if cost is not None else None,
        "started_at": _iso(session.created_at),
        "locked_at": _iso(locked.locked_at) if locked else None,
        "lock_reason": locked.reason.value if locked else None,
        "locked_by": locked.locked_by if locked else None,
    }


def render_json(session: Session) -> str:
    payload = {
        "session": session.model_dump(mode="json"),
        "metadata": metadata(session),
    }
    return json.dumps(payload, ensure_ascii=False, indent=2)


def fence(text: str, info: str = "") -> str:
    """A code fence longer than any backtick run inside, so the text shows verbatim."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


@dataclass(frozen=True)
class ReadyPrompt:
    """A locked draft as a person uses it: the exact text, its parameters, and where to paste.

    Surface-neutral: the Slack surface and the report render it, each in its own markup.
    """

    prompt_text: str
    parameters: list[tuple[str, str]]
    how_to_use: str
    retired: str


def ready_prompt(d: Draft, t: TargetProfile) -> ReadyPrompt:
    params = draft_parameters(d, t)
    where = t.use_in or f"Paste into {t.model_name}"
    shape = ", ".join(v for k, v in params if k in ("Duration", t.size_label.capitalize()))
    how = f"{where}, {shape}."
    if t.negative_prompt and d.parts.avoid:
        how = f"{where}, {shape}, with the negative prompt in its own field."
    return ReadyPrompt(
        prompt_text=d.prompt_text, parameters=params, how_to_use=how, retired=t.retired
    )


def render_ready_prompt(d: Draft, t: TargetProfile) -> str:
    """Markdown: the prompt in one copy-ready block, the parameters beside it, how to use it."""
    r = ready_prompt(d, t)
    lines = [fence(r.prompt_text, "text"), ""]
    lines += [f"- **{k}**: {v}" for k, v in r.parameters]
    lines += ["", f"**How to use it**: {r.how_to_use}"]
    if r.retired:
        lines.append(f"*{r.retired}.*")
    return "\n".join(lines)


def render_findings(d: Draft, t: TargetProfile) -> str:
    findings = checks.check_draft(d, t)
    if not findings:
        return f"The prompt check for {t.model_name} found nothing to fix."
    return "\n".join(f"- {f.message}" for f in findings)


def render_parts(d: Draft) -> str:
    p = d.parts
    beats = "\n".join(f"  {i}. {b}" for i, b in enumerate(p.action_beats, 1))
    avoid = "; ".join(p.avoid) if p.avoid else "(nothing listed)"
    lines = [
        f"- **Subject**: {p.subject}",
        f"- **Setting**: {p.setting}",
        f"- **Action beats**:\n{beats}",
        f"- **Camera**: {p.camera}",
        f"- **Lighting and palette**: {p.lighting_palette}",
        f"- **Sound**: {p.sound}" if p.sound else "",  # none for a silent model
        f"- **Style**: {p.style}",
        f"- **Avoid**: {avoid}",
    ]
    return "\n".join(line for line in lines if line)


def _turn_heading(t: Turn) -> str:
    who = f"{t.author} (interjection)" if t.speaker == Speaker.HUMAN else t.author
    label = "Opening" if t.round == 0 else f"Round {t.round}"
    return f"### {label} · {who}"


def _render_turn(t: Turn, session: Session) -> str:
    out = [_turn_heading(t), "", t.text]
    if t.draft is not None:
        d = t.draft
        out += [
            "",
            f"**Draft v{d.version}**: {d.title} · {d.duration_seconds}s · {d.size}",
            "",
            fence(d.prompt_text, "text"),
        ]
        findings = checks.check_draft(d, session.target)
        if findings:
            out += ["", "*Prompt check:*", *(f"- {f.message}" for f in findings)]
    if t.verdict is not None:
        verdict = f"approve v{t.verdict.version}" if t.verdict.decision == "approve" else "revise"
        out += ["", f"*Verdict: {verdict}*"]
    return "\n".join(out)


def _render_sheet(session: Session) -> str:
    """A free-text persona's sheet, as it was written before the first turn."""
    p = session.persona
    lines = [
        "## Persona",
        "",
        f"- **Voice**: {p.voice}",
        f"- **Taste**: {p.taste}",
        "- **Must-haves**: " + "; ".join(p.must_haves),
    ]
    if p.pet_peeves:
        lines.append("- **Pet peeves**: " + "; ".join(p.pet_peeves))
    return "\n".join(lines)


def render_markdown(session: Session) -> str:
    m = metadata(session)
    p = session.persona
    t = session.target
    locked = session.locked
    lines = [OFFLINE_BANNER, ""] if OFFLINE_MODEL in session.models else []
    lines += [
        f"# {locked.draft.title if locked else 'Sora Copilot session'}",
        "",
        f"- **Idea**: {session.idea}",
        f"- **Persona**: {p.display_name}, {p.role}"
        + (f" (written from “{p.description}”)" if p.description else ""),
        f"- **Target**: {t.model_name} (`{t.name}`)",
        f"- **Status**: {session.status.value}",
        "",
    ]
    if p.description and not p.pending:
        lines += [_render_sheet(session), ""]
    lines += ["## Locked prompt", ""]
    if locked:
        d = locked.draft
        lines += [
            f"Draft v{d.version}, locked by {locked.locked_by}: {LOCK_REASONS[locked.reason]}.",
            "",
            f"- **Caption**: {d.title}",
            "",
            render_ready_prompt(d, t),
            "",
            "### Prompt check",
            "",
            render_findings(d, t),
            "",
            "### Structured parts",
            "",
            render_parts(d),
        ]
    else:
        why = f" ({session.error})" if session.error else ""
        lines.append(f"No prompt was locked: the session is {session.status.value}{why}.")
        latest = session.latest_draft
        if latest is not None:  # a stopped or paused session still has work worth keeping
            lines += [
                "",
                f"The latest draft, v{latest.version}, not locked: {latest.title} · "
                f"{latest.duration_seconds} s · {latest.size}",
                "",
                fence(latest.prompt_text, "text"),
            ]
    lines += ["", "## Dialogue", ""]
    for turn in session.turns:
        lines += [_render_turn(turn, session), ""]
    for note in session.unheard:
        lines += [f"### Not heard · {note.author} (after the session ended)", "", note.text, ""]
    tok = m["tokens"]
    cost = m["estimated_cost_usd"]
    lines += [
        "## Metadata",
        "",
        f"- **Rounds**: {m['rounds']} of at most {m['max_rounds']} (the opening is round 0)",
        f"- **Messages**: {m['messages']} ({m['agent_turns']} agent turns, "
        f"{m['human_interjections']} human)",
        f"- **Human interjections**: {m['human_interjections']}",
        f"- **Notes not heard** (typed after the last turn started): {m['notes_not_heard']}",
        f"- **Drafts**: {m['drafts']}",
        "- **Prompt length**: "
        + (f"{m['prompt_length_chars']} characters" if locked else "no locked prompt"),
        f"- **Model**: {', '.join(m['models']) or 'none'}",
        f"- **Tokens**: {tok['input']} input, {tok['output']} output, "
        f"{tok['cache_read']} cache read, {tok['cache_write']} cache write "
        f"({tok['total']} in all)",
        "- **Estimated cost**: " + (f"${cost:.4f}" if cost is not None else "unknown model price"),
        f"- **Started**: {m['started_at']}",
        f"- **Locked**: {m['locked_at'] or 'not locked'}",
        f"- **Lock reason**: {m['lock_reason'] or 'not locked'}",
        "",
    ]
    return as_markdown("\n".join(lines))
