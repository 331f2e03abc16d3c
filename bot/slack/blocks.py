"""How a session looks in Slack: the root message, turns, the locked prompt.

Pure functions from domain objects to Block Kit JSON. All Slack limits the app
respects live here, and so does the splitting of a turn too long for one
message into several (never inside a code fence, if that can be avoided).
Model and human text is escaped before it reaches Slack, so it can never ping
`@channel`, `@here` or anyone: `<!channel>` becomes the harmless text
`&lt;!channel&gt;`, and messages are posted without `link_names`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.dialogue.models import Draft, LockReason, Session, SessionStatus, TargetProfile, Turn
from bot.dialogue.report import (
    LOCK_REASONS,
    fence,
    metadata,
    ready_prompt,
    render_markdown,
    render_parts,
)
from bot.dialogue.text import as_markdown, as_text
from bot.llm.offline import OFFLINE_MODEL

# Slack's limits (one place for each).
MARKDOWN_BLOCK_MAX_CHARS = 12_000  # markdown blocks of one message, together
SECTION_TEXT_MAX_CHARS = 3_000
MESSAGE_TEXT_MAX_CHARS = 40_000
MAX_BLOCKS = 50
STREAM_UPDATE_MIN_INTERVAL_S = 1.0  # post-then-update fallback: at most one update a second
# A message's `text` beside its blocks is a summary for notifications and screen readers:
# Slack recommends at most 4,000 characters there, and chat.update has been reported to
# answer msg_too_long above 4,000 bytes (docs.slack.dev/reference/methods/chat.postMessage,
# "Truncating content"), so the Markdown is not sent a second time.
FALLBACK_TEXT_MAX_CHARS = 300

# Interactivity.
ACTION_STOP = "sora_stop"
ACTION_LOCK = "sora_lock"
ACTION_RETRY = "sora_retry"
ACTION_DELETE = "sora_delete"  # on the locked reply: delete the session and its library entry
# Render: on the locked reply (draft) and on a render's done message (master); its value is
# "<session>:<tier>". The ephemeral confirmation's Confirm carries the render id too
# ("<session>:<tier>:<render id>"), so a second press finds the render it made.
ACTION_RENDER = "sora_render"
ACTION_RENDER_CONFIRM = "sora_render_confirm"
ACTION_RENDER_CANCEL = "sora_render_cancel"
_VERSION_SEP = ":v"  # in the Lock button's value, between the session id and the version
MODAL_CALLBACK = "sora_new_session"
METADATA_EVENT = "sora_turn"  # message metadata tag of every post the app makes

STATUS_LABELS = {
    SessionStatus.RUNNING: ":hourglass_flowing_sand: Running",
    SessionStatus.PAUSED: ":warning: Paused",
    SessionStatus.LOCKED: ":lock: Locked",
    SessionStatus.STOPPED: ":black_square_for_stop: Stopped",
}


def escape(text: str, *, code: bool = False) -> str:
    """Text as written, for any Slack block (`markdown`, `mrkdwn`, `plain_text`) or
    notification: `as_text` (no control characters, bidi overrides or Markdown links;
    `code` for a code fence's content, which only loses the first two), then Slack's
    control characters escaped, so it pings no one and makes no `<url|label>` link."""
    text = as_text(text, code=code)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Where Slack's mention syntax starts: `<!channel>`, `<!here>`, `<@U…>`, `<#C…>`, `<!subteam^…>`.
_MENTION_START = re.compile(r"<(?=[!@#])")


def defuse(text: str) -> str:
    """Plain text that no escaping reaches (file titles and contents), with no mention syntax.

    Slack's `&lt;` escaping is for mrkdwn; a file shows its text as it is. So only
    the `<` that would open a mention becomes a look-alike, and the rest reads as typed.
    """
    return _MENTION_START.sub("‹", as_markdown(text))


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _button(text: str, action_id: str, session_id: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": session_id,
    }
    if style:
        b["style"] = style
    return b


OFFLINE_NOTE = (
    ":information_source: *Offline model*: a deterministic stand-in writes this dialogue, "
    "not Claude (the worker has no ANTHROPIC_API_KEY, or runs with --offline)."
)


def root_text(session: Session) -> str:
    """Notification text of the root message: escaped, since notifications use it."""
    return _safe_prefix(f"Sora Copilot session: {escape(session.idea)}", 300)


def lock_value(session_id: str, version: int) -> str:
    """The Lock button's value: the session and the draft version on screen."""
    return f"{session_id}{_VERSION_SEP}{version}"


def control_target(value: str) -> tuple[str, int | None]:
    """A control button's value read back: the session id, and the draft version a Lock
    button carries (None for Stop and Retry, and for Lock buttons rendered before the
    version was carried)."""
    sid, sep, version = value.rpartition(_VERSION_SEP)
    if sep and sid and version.isdigit():
        return sid, int(version)
    return value, None


def _persona_line(session: Session) -> str:
    """Who the persona is, in one line: a free-text persona by the name and role its sheet
    gave it (written before turn 0), or the words it is being written from."""
    p = session.persona
    if p.pending:
        return f"{truncate(p.description, 200)} (being written)"
    return truncate(f"{p.display_name}, {p.role}", 300)


def root_blocks(session: Session, notice: str | None = None) -> list[dict[str, Any]]:
    """The thread root: idea, persona, who started it, status, round, tokens, controls.

    `notice` is a passing state shown after the status ("Claude is overloaded; ...").
    """
    o = session.origin
    starter = f"<@{o.user_id}>" if o.user_id else escape(o.user_name or "someone")
    status = STATUS_LABELS[session.status]
    if session.status == SessionStatus.LOCKED and session.locked is not None:
        status += f" (v{session.locked.draft.version}, {session.locked.reason.value})"
    if session.status == SessionStatus.PAUSED and session.error:
        status += f": {escape(truncate(session.error, 300))}"
    if notice:
        status += f" ({escape(notice)})"
    usage = session.usage
    fields = [
        f"*Persona:* {escape(_persona_line(session))}",
        f"*Target:* {escape(session.target.name)}",
        f"*Started by:* {starter}",
        f"*Round:* {session.rounds} of {session.max_rounds}",
        f"*Status:* {status}",
        f"*Tokens:* {usage.total:,}",
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(
                    f":clapper: *Sora Copilot* — {escape(session.idea)}", SECTION_TEXT_MAX_CHARS
                ),
            },
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if OFFLINE_MODEL in session.models:
        # Said where everyone looks, not only in the worker's log and the report.
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": OFFLINE_NOTE}]})
    buttons: list[dict[str, Any]] = []
    if session.status in (SessionStatus.RUNNING, SessionStatus.PAUSED):
        latest = session.latest_draft
        if latest is not None:
            # The button names and carries the version on screen: that one is locked,
            # whatever the turn in flight when it is pressed goes on to write.
            lock = _button(f"Lock draft v{latest.version}", ACTION_LOCK, session.id, "primary")
            lock["value"] = lock_value(session.id, latest.version)
            buttons.append(lock)
        buttons.append(_button("Stop", ACTION_STOP, session.id, "danger"))
    if session.status == SessionStatus.PAUSED:
        buttons.append(_button("Retry", ACTION_RETRY, session.id))
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


# ---- message metadata and the post ledger ------------------------------------------------

# Ledger "turns" of the posts that are not agent turns (agent turns are 0, 1, ...).
# Each is recorded in the post ledger and tagged in message metadata like a turn,
# so a redone step finds what it already posted instead of posting it twice.
TURN_LOCKED = -1  # the locked-prompt reply in the thread (parts 0, 1, ...)
TURN_PAUSED = -2  # the "paused, Retry" message; its part is the turn that failed
TURN_STOPPED = -3  # the "Stopped by X" message
TURN_CROSSPOST = -4  # the locked prompt cross-posted to the prompts channel
TURN_REPORT = -5  # the uploaded session report (the ledger holds its file id)

PLACEHOLDER = "…"  # a turn's message before its first words arrive
WRITING = "writing…"  # what a message still being written says, until its final render
USERNAME_MAX_CHARS = 80  # chat:write.customize usernames


def message_metadata(session_id: str, turn: int, part: int) -> dict[str, Any]:
    """The metadata tag of every message the app posts: which session, turn, part."""
    return {
        "event_type": METADATA_EVENT,
        "event_payload": {"session": session_id, "turn": turn, "part": part},
    }


def report_filename(session: Session) -> str:
    return f"sora-session-{session.id}.md"


def report_title(session: Session) -> str:
    title = session.locked.draft.title if session.locked else "Sora Copilot session"
    return defuse(f"Session report: {title}")


def report_content(session: Session) -> bytes:
    """The session report as uploaded to the thread: Markdown, UTF-8, pinging no one."""
    return defuse(render_markdown(session)).encode("utf-8")


# ---- splitting Markdown into messages -------------------------------------------------------

_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_MIN_SPLIT_LIMIT = 64


@dataclass(frozen=True)
class _Fence:
    start: int  # offset of the opening line
    end: int  # offset just past the closing line (the text's end if never closed)
    opener: str  # the opening line, without its newline
    marker: str  # the backticks or tildes that close it


def _fences(text: str) -> list[_Fence]:
    """The fenced code blocks of CommonMark text, as offsets."""
    fences: list[_Fence] = []
    pos = 0
    current: tuple[int, str, str] | None = None
    for line in text.split("\n"):
        if current is None:
            m = _FENCE_OPEN.fullmatch(line)
            # A backtick fence's info string may not contain a backtick (CommonMark).
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                current = (pos, line, m.group(1))
        else:
            start, opener, marker = current
            closing = line.strip()
            if (
                len(line) - len(line.lstrip(" ")) <= 3
                and len(closing) >= len(marker)
                and set(closing) == {marker[0]}
            ):
                fences.append(_Fence(start, min(pos + len(line) + 1, len(text)), opener, marker))
                current = None
        pos += len(line) + 1
    if current is not None:
        fences.append(_Fence(current[0], len(text), current[1], current[2]))
    return fences


def _best_cut(text: str, start: int, end: int, fences: list[_Fence]) -> int | None:
    """Where to end a piece that starts at `start` and may end at `end` at the latest.

    Prefers the end of a paragraph, then of a line, then of a word, as long as the
    piece stays at least half full; never inside a code fence. None when every
    possible cut is inside a fence.
    """

    def allowed(p: int) -> bool:
        return start < p <= end and not any(f.start < p < f.end for f in fences)

    half = start + (end - start) // 2
    fallback: int | None = None
    for sep in ("\n\n", "\n", " "):
        i = text.rfind(sep, start, end)
        while i != -1 and not allowed(i + len(sep)):
            i = text.rfind(sep, start, i + len(sep) - 1)
        if i == -1:
            continue
        cut = i + len(sep)
        if cut >= half:
            return cut
        fallback = max(fallback or 0, cut)
    return fallback


def _hard_cut(text: str, start: int, end: int) -> int:
    """A cut at `end`, moved back so it does not split an entity such as `&amp;`."""
    amp = text.rfind("&", max(start + 1, end - 5), end)
    if amp != -1 and ";" not in text[amp:end]:
        return amp
    return max(end, start + 1)


def split_markdown(text: str, limit: int = MARKDOWN_BLOCK_MAX_CHARS) -> list[str]:
    """Cut Markdown into pieces of at most `limit` characters, in order.

    Cuts fall between paragraphs, lines or words, and never inside a code fence
    when that can be avoided: then the pieces, joined, are exactly `text`. Only a
    single fence longer than `limit` is cut inside; each of its pieces is closed
    and the next reopened, so every piece still renders as code.
    """
    if limit < _MIN_SPLIT_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_SPLIT_LIMIT}")
    if len(text) <= limit:
        return [text] if text else []
    fences = _fences(text)
    pieces: list[str] = []
    start = 0
    reopen = ""  # the opening line of a fence cut in two, to begin the next piece
    while len(reopen) + len(text) - start > limit:
        end = start + limit - len(reopen)
        # The fence the piece would end in, if it is too long for any one piece:
        # then cutting it is inevitable, and cutting before it would only waste room.
        fence = next((f for f in fences if f.start < end < f.end), None)
        if fence is not None and fence.end - fence.start <= limit:
            fence = None
        cut = None if fence is not None else _best_cut(text, start, end, fences)
        if cut is None and fence is None:  # one word longer than a message
            cut = _hard_cut(text, start, end)
        if cut is not None:
            pieces.append(reopen + text[start:cut])
            reopen, start = "", cut
            continue
        assert fence is not None
        # A fence longer than a message: cut it at a line, close it, reopen it next.
        lowest = start if reopen else fence.start + len(fence.opener) + 1
        room = end - len(fence.marker) - 1
        newline = text.rfind("\n", lowest, room)
        cut = newline + 1 if newline != -1 else _hard_cut(text, lowest, room)
        chunk = text[start:cut]
        pieces.append(reopen + chunk + ("" if chunk.endswith("\n") else "\n") + fence.marker)
        reopen, start = fence.opener + "\n", cut
    pieces.append(reopen + text[start:])
    return pieces


def _summary(text: str, limit: int) -> str:
    """The start of `text`, at most `limit` characters, cut after a word where it is cut."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit // 2, limit)
    if cut == -1:
        cut = _hard_cut(text, 0, limit - 1)
    return text[:cut].rstrip() + "…"


def _safe_prefix(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (with an ellipsis when cut)."""
    if len(text) <= limit:
        return text
    return text[: _hard_cut(text, 0, limit - 1)] + "…"


# ---- turns -------------------------------------------------------------------------------


def markdown_block(text: str) -> dict[str, Any]:
    return {"type": "markdown", "text": text}


def context_block(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


@dataclass(frozen=True)
class MessagePart:
    """One Slack message: `body` (escaped Markdown, shown first) and the blocks after it.

    `text` is the message's fallback text, a short summary: the body's start (at most
    FALLBACK_TEXT_MAX_CHARS), or `fallback` when there is no body.
    A streamed message shows `body` as its streamed text and gets `tail` at the end.
    """

    body: str = ""
    tail: tuple[dict[str, Any], ...] = ()
    fallback: str = PLACEHOLDER

    @property
    def text(self) -> str:
        if not self.body:
            return self.fallback
        return _summary(self.body, FALLBACK_TEXT_MAX_CHARS)

    @property
    def blocks(self) -> list[dict[str, Any]]:
        head = [markdown_block(self.body)] if self.body else []
        return [*head, *self.tail]


def turn_label(session: Session, turn: Turn) -> str:
    return "Opening" if turn.round == 0 else f"Round {turn.round} of {session.max_rounds}"


def draft_markdown(draft: Draft) -> str:
    """A draft: caption, duration and size, and the prompt in a code block that copies exactly."""
    return (
        f"**Draft v{draft.version}: {escape(draft.title)}**\n"
        f"{draft.duration_seconds} s · {escape(draft.size)} · {escape(draft.target)}\n\n"
        + fence(escape(draft.prompt_text, code=True))
    )


def _footer(session: Session, turn: Turn) -> str:
    bits = [turn_label(session, turn)]
    if turn.draft is not None:
        bits.append(f"draft v{turn.draft.version}")
    if turn.verdict is not None:
        if turn.verdict.decision == "approve":
            bits.append(f":white_check_mark: approves v{turn.verdict.version}")
        else:
            bits.append("asks for a revision")
    return " · ".join(bits)


def turn_parts(session: Session, turn: Turn) -> list[MessagePart]:
    """An agent turn as one or more messages: its Markdown, then its draft and a footer.

    Each message's markdown blocks stay within MARKDOWN_BLOCK_MAX_CHARS; the
    bodies, joined, are the escaped message text.
    """
    entries: list[tuple[str, list[dict[str, Any]], str]] = [
        (chunk, [], PLACEHOLDER) for chunk in split_markdown(escape(turn.text))
    ]
    if turn.draft is not None:
        caption = f"Draft v{turn.draft.version}: {escape(turn.draft.title)}"
        draft_md = draft_markdown(turn.draft)
        if entries and len(entries[-1][0]) + len(draft_md) <= MARKDOWN_BLOCK_MAX_CHARS:
            entries[-1][1].append(markdown_block(draft_md))
        else:
            entries += [("", [markdown_block(p)], caption) for p in split_markdown(draft_md)]
    if not entries:
        entries.append(("", [], PLACEHOLDER))
    entries[-1][1].append(context_block(escape(_footer(session, turn))))
    return [MessagePart(body, tuple(tail), fallback) for body, tail, fallback in entries]


def writing_part() -> MessagePart:
    """A turn's placeholder, before its first words: only the "writing…" line."""
    return MessagePart(tail=(context_block(f":writing_hand: _{WRITING}_"),), fallback=WRITING)


def preview_part(text_so_far: str) -> MessagePart:
    """What a turn's message shows while it is written: the text so far, then the
    "writing…" line, so that nobody copies half a draft (the final render drops it)."""
    return MessagePart(
        body=_safe_prefix(escape(text_so_far), MARKDOWN_BLOCK_MAX_CHARS),
        tail=writing_part().tail,
    )


def interrupted_part() -> MessagePart:
    """A turn's message whose turn failed: the Retry writes it again."""
    note = "_This turn failed before it was complete; Retry writes it again._"
    return MessagePart(tail=(context_block(note),), fallback="This turn failed.")


# ---- the end of a session --------------------------------------------------------------


def locked_markdown(session: Session, stays: str | None = None) -> str:
    """The locked-prompt reply: the prompt, its structured parts and the session's numbers.

    `stays`: for a prompt made in a private place, the line saying where it stays
    (`bot.slack.privacy.stays_line`)."""
    locked = session.locked
    if locked is None:
        raise ValueError("the session is not locked")
    d = locked.draft
    m = metadata(session)
    tok = m["tokens"]
    cost = m["estimated_cost_usd"]
    models = ", ".join(m["models"]) or "none"
    lines = [
        f":lock: **Locked prompt: v{d.version} {escape(d.title)}**",
        _lock_line(session),
        *([stays] if stays else []),
        "",
        f"**Caption**: {escape(d.title)} · **Target**: {escape(session.target.model_name)}",
        "",
        *ready_prompt_lines(d, session.target),
        "",
        "**Structured parts**",
        "",
        escape(render_parts(d)),
        "",
        "**Metadata**",
        "",
        f"- **Rounds**: {m['rounds']} of at most {m['max_rounds']}",
        f"- **Messages**: {m['messages']} ({m['agent_turns']} agent turns, "
        f"{m['human_interjections']} human)",
        f"- **Human interjections**: {m['human_interjections']}",
        f"- **Prompt length**: {m['prompt_length_chars']} characters",
        f"- **Model**: {escape(models)}",
        f"- **Tokens**: {tok['total']:,} ({tok['input']:,} input, {tok['output']:,} output, "
        f"{tok['cache_read']:,} cache read, {tok['cache_write']:,} cache write)",
        "- **Estimated cost**: "
        + (f"${cost:.4f}" if cost is not None else "unknown (no price for a model)"),
        f"- **Lock reason**: {m['lock_reason']}",
    ]
    return "\n".join(lines)


def ready_prompt_lines(d: Draft, target: TargetProfile) -> list[str]:
    """The locked prompt ready to use: one copy-ready block, its parameters, where to paste."""
    r = ready_prompt(d, target)
    lines = [fence(escape(r.prompt_text, code=True)), ""]
    lines += [f"- **{k}**: {escape(v)}" for k, v in r.parameters]
    lines.append(f"**How to use it**: {escape(r.how_to_use)}")
    if r.retired:
        lines.append(f"_{escape(r.retired)}._")
    return lines


def _lock_line(session: Session) -> str:
    """Who locked which version, and why; a newer draft than the locked one is named as such."""
    locked = session.locked
    assert locked is not None
    v = locked.draft.version
    if locked.reason != LockReason.HUMAN:
        return f"Locked by {escape(locked.locked_by)}: {LOCK_REASONS[locked.reason]}."
    line = f"Locked v{v} (pressed by {escape(locked.locked_by)})."
    newer = [f"v{d.version}" for d in session.drafts if d.version > v]
    if newer:
        verb = "is" if len(newer) == 1 else "are"
        line += f" {', '.join(newer)}, written after Lock was pressed, {verb} not locked."
    return line


def delete_button(session_id: str) -> dict[str, Any]:
    """Delete, with Slack's confirmation dialog: the starter or an admin removes the
    session and its library entry from the app's store for good."""
    button = _button("Delete", ACTION_DELETE, session_id, "danger")
    button["confirm"] = {
        "title": {"type": "plain_text", "text": "Delete this session?"},
        "text": {
            "type": "plain_text",
            "text": "Its transcript and its prompt in the library are deleted for good. "
            "The messages in this thread stay.",
        },
        "confirm": {"type": "plain_text", "text": "Delete"},
        "deny": {"type": "plain_text", "text": "Keep it"},
        "style": "danger",
    }
    return button


def render_value(session_id: str, tier: str, render_id: str = "") -> str:
    """A Render button's value: the session, the tier, and (Confirm) the render's id."""
    return ":".join(p for p in (session_id, tier, render_id) if p)


def render_target(value: str) -> tuple[str, str, str]:
    """A Render button's value read back: (session id, tier, render id or "")."""
    sid, _, rest = value.partition(":")
    tier, _, rid = rest.partition(":")
    return sid, tier or "draft", rid


def render_button(session_id: str, tier: str = "draft", label: str = "Render") -> dict[str, Any]:
    """Render (or Master): asks for an ephemeral confirmation with the cost first."""
    return _button(label, ACTION_RENDER, render_value(session_id, tier), "primary")


def locked_parts(
    session: Session, stays: str | None = None, *, render: bool = False
) -> list[MessagePart]:
    """The locked reply; `render`: with a Render button (a renderer is configured for its
    target)."""
    md = locked_markdown(session, stays)
    title = session.locked.draft.title if session.locked else ""
    fallback = f"Locked prompt: {escape(truncate(title, 200))}"
    parts = [MessagePart(body=p, fallback=fallback) for p in split_markdown(md)]
    buttons = [render_button(session.id)] if render else []
    actions = {"type": "actions", "elements": [*buttons, delete_button(session.id)]}
    parts[-1] = MessagePart(body=parts[-1].body, tail=(actions,), fallback=fallback)
    return parts


def crosspost_parts(session: Session, permalink: str) -> list[MessagePart]:
    """The locked prompt for the prompts channel, with a link to its thread. Pings no one."""
    locked = session.locked
    if locked is None:
        raise ValueError("the session is not locked")
    d = locked.draft
    who = f", started by {escape(session.origin.user_name)}" if session.origin.user_name else ""
    md = "\n".join(
        [
            f":clapper: **{escape(d.title)}** (v{d.version} · {escape(d.target)} · "
            f"{d.duration_seconds} s · {escape(d.size)})",
            "",
            fence(escape(d.prompt_text, code=True)),
            "",
            f"Written with {escape(session.persona.display_name)}{who}: "
            f"[open the thread]({permalink})",
        ]
    )
    fallback = f"Locked prompt: {escape(truncate(d.title, 200))} {permalink}"
    return [MessagePart(body=p, fallback=fallback) for p in split_markdown(md)]


def paused_part(session: Session) -> MessagePart:
    """The thread message of a paused session: what failed, and a Retry button."""
    error = escape(truncate(session.error or "A turn failed.", 2_500))
    section = {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": f":warning: *The session is paused.* {error}\n"
            "Retry resumes it from the same transcript.",
        },
    }
    actions = {"type": "actions", "elements": [_button("Retry", ACTION_RETRY, session.id)]}
    return MessagePart(tail=(section, actions), fallback=f"The session is paused: {error}")


def stopped_part(session: Session) -> MessagePart:
    who = escape(truncate(session.stopped_by or "someone", 200))
    text = f":black_square_for_stop: Stopped by {who}. No prompt was locked."
    if session.error:
        text += f"\n{escape(truncate(session.error, 500))}"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return MessagePart(tail=(section,), fallback=f"Stopped by {who}.")
