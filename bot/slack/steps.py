"""The steps that show a saved session in Slack: one named, idempotent function each.

The outbox (`bot.driver`) saves a session together with the names of the steps
left to show it; `STEPS`, at the bottom, maps each name to its function here.
Each runs from the saved session alone, may run again after a crash or a Slack
failure, and repeats nothing: the post ledger records what was posted, the
messages' tags find what was posted but not recorded, and a step Slack refused
for good is recorded as skipped, with one line in the thread saying what a
person can do. Adding a step is one function and one row of `STEPS`.

All model and human text is escaped (see `bot.slack.blocks`), so nothing the
models write can ping anyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bot import render
from bot.config import Settings
from bot.dialogue.agents import COPILOT_ICON
from bot.dialogue.models import Session, SessionStatus, Speaker
from bot.render.jobs import RenderRecord, target_of
from bot.slack.blocks import (
    TURN_CROSSPOST,
    TURN_LOCKED,
    TURN_PAUSED,
    TURN_REPORT,
    TURN_STOPPED,
    USERNAME_MAX_CHARS,
    MessagePart,
    context_block,
    crosspost_parts,
    defuse,
    escape,
    locked_parts,
    message_metadata,
    paused_part,
    report_content,
    report_filename,
    report_title,
    root_blocks,
    root_text,
    stopped_part,
    truncate,
    turn_parts,
)
from bot.slack.errors import slack_error
from bot.slack.live import mark_interrupted
from bot.slack.poster import Thread, agent_turn_number, thread_of
from bot.slack.privacy import LockDecision, decide_at_lock
from bot.slack.renders import (
    TURN_CLIP,
    TURN_CLIP_REFUSED,
    refused_upload,
    render_ledger,
    where_of,
)
from bot.slack.uploads import upload_file

if TYPE_CHECKING:
    from bot.slack.surface import SlackSurface

log = logging.getLogger("sora.slack")

REACTION_HEARD = "white_check_mark"

# Ledger "turns" of this module's own records (see bot.slack.blocks for the others).
TURN_PIN = -6  # part 0: the pinned message's ts
TURN_NOTE = -7  # a "what a person can do" line; its part is the step it explains
TURN_SKIPPED = -8  # a step Slack refused for good; its part is the step's ledger turn (negated)
TURN_DONE = -10  # a lock step that completed; its part is the step's ledger turn (negated)
# A streamed turn's placeholder being replaced by its final text posted anew; its part is
# the agent turn, its value the placeholder's ts ("" once deleted).
TURN_REPLACED = -11

LOCK_DECISIONS_MAX = 10_000

SlackStep = Callable[["SlackSurface", Session, str], Awaitable[None]]


# ---- a turn -------------------------------------------------------------------------------


async def show_turn(s: SlackSurface, session: Session, arg: str) -> None:
    """The final render of agent turn `arg` (0, 1, ...), once, in full, never twice.

    A turn written quietly is posted as new message(s): the per-channel post rate is
    its only wait. A streamed turn's final text goes over its placeholder when the
    workspace's chat.update budget has a call free now; when it has none, the final
    text is posted as new message(s) and then the placeholder is deleted, in that
    order (see `_replace_placeholder`): its final text never waits for the budget.
    """
    agents = session.agent_turns
    n = int(arg)
    if not 0 <= n < len(agents):
        return
    turn = agents[n]
    number = agent_turn_number(session, turn)
    where = thread_of(session)
    live = s.take_live(session.id, number)
    if live is not None:
        await live.close()
    ledger = await s.state.posts.all(session.id)
    replacing = ledger.get(TURN_REPLACED, {}).get(number)
    if replacing == "":
        return  # shown as new messages and the placeholder deleted: done
    parts = dict(live.parts) if live is not None else {}
    parts.update(ledger.get(number, {}))
    if 0 not in parts and (live is None or live.unknown) and replacing is None:
        # Nothing recorded, and no certainty that nothing was posted: look first.
        parts.update(await s.poster.find_tagged_or_none(session.id, where, number))
    username, icon = final_author(session, n)
    final = turn_parts(session, turn)
    try:
        if replacing is None and 0 in parts and not await s.budget.take_now(s.poster.workspace):
            # No chat.update free for the final render over the placeholder.
            replacing = parts[0]
            await s.state.posts.record(session.id, TURN_REPLACED, number, replacing)
        if replacing is not None:
            await _replace_placeholder(s, session, where, number, final, parts, replacing)
            return
        for k, part in enumerate(final):
            await s.poster.put(
                session.id, where, number, k, part, parts.get(k), username, icon, budgeted=k == 0
            )
        for k in sorted(parts):
            if k >= len(final):
                await _delete_extra(s, where.channel, parts[k], number)
    except SlackApiError as e:
        # Refused for good (the thread's channel is gone or archived): the turn
        # is saved, and no retry would show it.
        log.error("session %s: turn %s cannot be shown: %s", session.id, number, e)


async def _replace_placeholder(
    s: SlackSurface,
    session: Session,
    where: Thread,
    number: int,
    final: list[MessagePart],
    parts: dict[int, str],
    placeholder: str,
) -> None:
    """Post a streamed turn's final text as new message(s), then delete its placeholder.

    Crash-safe in that order: the placeholder is recorded (TURN_REPLACED) before
    anything is posted, and each final part's attempt is marked before its post
    (`PostLedger.begin`), so a run after a crash knows that the message tagged as the
    turn's part 0 with that ts is not its final text: it looks for the final parts by
    their tags without it (only if one was tried), posts only the missing ones, then
    deletes the placeholder and records that (an empty TURN_REPLACED). Between the post
    and the delete the thread holds the final text and the placeholder, which says
    "writing…" above a partial text: never two full copies, and never for longer than
    a delete takes (chat.delete has its own Tier 3 budget, which nothing else strains).
    """
    author = final_author(session, number)
    finals = {k: ts for k, ts in parts.items() if ts != placeholder}
    looked = False
    for k, part in enumerate(final):
        if k in finals:
            continue
        # Looked for by its tag only if tried before (conversations.replies is Tier 3).
        if not await s.state.posts.begin(session.id, number, k) and not looked:
            looked = True
            finals.update(
                await s.poster.find_tagged_or_none(session.id, where, number, exclude=placeholder)
            )
            if k in finals:
                continue
        finals[k] = await s.poster.put(
            session.id, where, number, k, part, None, *author, exclude=placeholder
        )
    for k in sorted(finals):
        if k >= len(final):
            await _delete_extra(s, where.channel, finals[k], number)
    await _delete_extra(s, where.channel, placeholder, number)
    await s.state.posts.record(session.id, TURN_REPLACED, number, "")


def final_author(session: Session, number: int) -> tuple[str, str]:
    """The username and icon agent turn `number` is posted under."""
    turn = session.agent_turns[number]
    icon = COPILOT_ICON if turn.speaker == Speaker.COPILOT else session.persona.icon_emoji
    return truncate(turn.author, USERNAME_MAX_CHARS), icon


async def _delete_extra(s: SlackSurface, channel: str, ts: str, turn: int) -> None:
    """An earlier attempt's part that the final text no longer needs."""
    try:
        await s.poster.delete(channel, ts)
    except SlackApiError as e:
        log.warning("cannot delete the extra part %s of turn %s: %s", ts, turn, e)


async def mark_heard(s: SlackSurface, session: Session, source_id: str) -> None:
    """✅ on a human's reply that the agents heard."""
    if not source_id or not session.origin.channel_id:
        return
    if not any(t.source_id == source_id for t in session.turns):
        return
    channel = session.origin.channel_id
    try:
        await s.poster.call(
            channel,
            lambda: s.client.reactions_add(
                channel=channel, timestamp=source_id, name=REACTION_HEARD
            ),
        )
    except SlackApiError as e:
        if slack_error(e) not in ("already_reacted", "message_not_found"):
            log.warning("session %s: cannot react to %s: %s", session.id, source_id, e)


async def update_root(s: SlackSurface, session: Session, arg: str = "") -> None:
    """Show the session's round, tokens, status and buttons on the thread root.

    Coalesced: while the session runs, its root is updated at most every
    ROOT_EVERY_S seconds (the window kept in Redis, so workers coalesce together:
    `state.updates.RootWindows`), and only with a call the budget can spare now, as an
    interim update would (the states in between are skipped: the next shows
    more). A finished or paused session's root must land, and waits for the
    budget. Waits out rate limits; a refusal is only logged (the root may not
    be the app's to edit).
    """
    where = thread_of(session)
    settled = session.status != SessionStatus.RUNNING
    if not settled and (
        not await s.root_due(session.id) or not await s.budget.take(s.poster.workspace)
    ):
        log.debug("session %s: root update skipped (a later one shows more)", session.id)
        return
    part = MessagePart(tail=tuple(root_blocks(session)), fallback=root_text(session))
    try:
        await s.poster.call(
            where.channel,
            lambda: s.poster.update(where.channel, where.ts, part, budgeted=not settled),
        )
    except SlackApiError as e:
        log.warning("session %s: cannot update the thread root: %s", session.id, e)


# ---- the lock: locked reply, report, root, pin, cross-post; each once, each alone ----------


async def post_locked(s: SlackSurface, session: Session, arg: str = "") -> None:
    """The locked prompt as a reply in the thread.

    It comes first among the lock's steps (which all run again after a crash), so it
    also names the starter for the report and the cross-post after it.
    """
    await s.abandon_live(session.id)
    if session.locked is None:
        return
    await _name_starter(s, session)
    s.lock_decisions.pop(session.id, None)  # the place is asked of Slack again at the lock
    decision = await _lock_decision(s, session)
    where = thread_of(session)
    try:
        await s.poster.post_parts(
            session.id,
            where.channel,
            TURN_LOCKED,
            locked_parts(
                session,
                decision.stays,
                render=render.for_slack(target_of(session, s.settings), s.settings) is not None,
            ),
            await s.state.posts.get(session.id, TURN_LOCKED),
            thread_ts=where.ts,
        )
    except SlackApiError as e:
        # The prompt is saved and in the library; the thread cannot take more, and
        # the lock's other steps find no locked reply and skip.
        log.error("session %s: the locked prompt cannot be shown in its thread: %s", session.id, e)


async def pin_locked(s: SlackSurface, session: Session, arg: str = "") -> None:
    """Pin the locked reply in the thread."""
    reply = await _locked_reply(s, session)
    if reply is None:
        return
    where = thread_of(session)

    async def pin() -> None:
        if (await s.state.posts.get(session.id, TURN_PIN)).get(0):
            return
        try:
            await s.poster.member(
                where.channel, lambda: s.client.pins_add(channel=where.channel, timestamp=reply)
            )
        except SlackApiError as e:
            if slack_error(e) != "already_pinned":
                raise
        await s.state.posts.record(session.id, TURN_PIN, 0, reply)

    await _lock_step(s, session, where, TURN_PIN, pin)


async def upload_report(s: SlackSurface, session: Session, arg: str = "") -> None:
    """The session report, uploaded into the thread as a Markdown file."""
    if await _locked_reply(s, session) is None:
        return
    where = thread_of(session)

    async def upload() -> None:
        await upload_file(
            s.poster,
            session.id,
            where,
            TURN_REPORT,
            content=report_content(session),
            filename=report_filename(session),
            title=report_title(session),
        )

    await _lock_step(s, session, where, TURN_REPORT, upload)


async def cross_post(s: SlackSurface, session: Session, arg: str = "") -> None:
    """The locked prompt in the prompts channel, linking its thread.

    It runs last: it waits for the prompts channel's post rate, which every
    session's lock shares, so it must delay nothing in this thread.
    """
    if await _locked_reply(s, session) is None:
        return
    # Never out of a private place: where the prompt may be collected, if anywhere.
    channel = (await _lock_decision(s, session)).collect_in
    if not channel:
        return
    where = thread_of(session)

    async def post() -> None:
        link = await s.poster.call(
            where.channel,
            lambda: s.client.chat_getPermalink(channel=where.channel, message_ts=where.ts),
        )
        parts = crosspost_parts(session, str(link["permalink"]))
        ledger = await s.state.posts.get(session.id, TURN_CROSSPOST)
        for k, part in enumerate(parts):
            if k in ledger:
                continue
            meta = message_metadata(session.id, TURN_CROSSPOST, k)
            ts = await s.poster.post(channel, part, meta)
            await s.state.posts.record(session.id, TURN_CROSSPOST, k, ts)

    await _lock_step(s, session, where, TURN_CROSSPOST, post)


async def _lock_decision(s: SlackSurface, session: Session) -> LockDecision:
    """Where the locked prompt may go (`bot.slack.privacy`), decided once per lock by this
    process (again after a take-over), and the place it found put in the session."""
    decision = s.lock_decisions.get(session.id)
    if decision is None:
        # The workspace's admins may have chosen their own prompts channel (Home tab).
        defaults = await s.state.defaults.get(session.origin.team_id)
        decision = await decide_at_lock(
            s.places, s.client, session, defaults.applied_to(s.settings)
        )
        if len(s.lock_decisions) >= LOCK_DECISIONS_MAX:
            s.lock_decisions.clear()
        s.lock_decisions[session.id] = decision
    session.origin = session.origin.model_copy(update={"place": decision.place})
    return decision


async def _locked_reply(s: SlackSurface, session: Session) -> str | None:
    """The ts of the locked reply's first part; None when it is not (or cannot be) shown."""
    if session.locked is None:
        return None
    return (await s.state.posts.get(session.id, TURN_LOCKED)).get(0)


async def _lock_step(
    s: SlackSurface,
    session: Session,
    where: Thread,
    key: int,
    run: Callable[[], Awaitable[None]],
) -> None:
    """One step of the lock, unless done or skipped before; a refusal is recorded as
    skipped, and the thread says in one line what a person can do. (A crash between
    the step and its record runs it again: each step repeats nothing it finds done.)"""
    ledger = await s.state.posts.all(session.id)
    if -key in ledger.get(TURN_DONE, {}) or -key in ledger.get(TURN_SKIPPED, {}):
        return
    try:
        await run()
        await s.state.posts.record(session.id, TURN_DONE, -key, "1")
    except SlackApiError as e:
        error = slack_error(e) or f"HTTP {e.response.status_code}"
        log.warning("session %s: lock step %s refused: %s", session.id, key, error)
        await s.state.posts.record(session.id, TURN_SKIPPED, -key, error)
        await _note(s, session, where, key, what_to_do(key, error, s.settings))


async def _note(s: SlackSurface, session: Session, where: Thread, key: int, text: str) -> None:
    """One line in the thread, once per step, saying why a step was skipped."""
    if (await s.state.posts.get(session.id, TURN_NOTE)).get(-key):
        return
    part = MessagePart(tail=(context_block(text),), fallback=text)
    try:
        ts = await s.poster.post(
            where.channel,
            part,
            message_metadata(session.id, TURN_NOTE, -key),
            thread_ts=where.ts,
        )
    except SlackApiError as e:
        log.warning("session %s: cannot post a note in its thread: %s", session.id, e)
        return
    await s.state.posts.record(session.id, TURN_NOTE, -key, ts)


async def _name_starter(s: SlackSurface, session: Session) -> None:
    """Put the starter's display name in the session, for the report and the cross-post.

    `/sora` stores the handle its payload carries and leaves this Slack call
    out of the ack's path; the lock is the first place a name is shown. A
    failed lookup keeps the handle.
    """
    origin = session.origin
    if not origin.user_id:
        return
    person = await s.people.get(origin.user_id)
    if person.name != origin.user_id:
        session.origin = origin.model_copy(update={"user_name": person.name})


def what_to_do(key: int, error: str, settings: Settings) -> str:
    """The one line the thread shows when a lock step is refused for good."""
    what = {
        TURN_PIN: "pin the prompt",
        TURN_CROSSPOST: f"post this prompt to <#{settings.prompts_channel}>",
        TURN_REPORT: "upload the session report",
    }.get(key, "finish a step")
    where = f"<#{settings.prompts_channel}>" if key == TURN_CROSSPOST else "this channel"
    if error in ("not_in_channel", "method_not_supported_for_channel_type", "channel_not_found"):
        gets = {
            TURN_CROSSPOST: "prompts collected there",
            TURN_REPORT: "the report here",
        }.get(key, "prompts pinned here")
        fix = f"Invite @Sora Copilot to {where} to get {gets}."
    elif error == "is_archived":
        fix = f"{where.capitalize()} is archived" + (
            "; set PROMPTS_CHANNEL to another channel." if key == TURN_CROSSPOST else "."
        )
    elif error == "missing_scope":
        fix = "The app lacks a permission; an admin can reinstall it from slack-manifest.yml."
    else:
        fix = "The prompt is locked and in the library either way."
    return f":information_source: I could not {what} (`{escape(error)}`). {fix}"


# ---- paused, stopped ----------------------------------------------------------------------


async def show_paused(s: SlackSurface, session: Session, arg: str = "") -> None:
    """Say in the thread that the session paused, with a Retry button; one message per
    failed turn (a repeat, or the same turn failing again after Retry, updates it)."""
    where = thread_of(session)
    failed_turn = int(arg) if arg else session.next_turn
    live = s.take_live(session.id)
    if live is not None:
        await live.abandon()
    else:
        # Set aside by another process (a dead worker's turn): its message, if
        # any, would otherwise show a half-written turn forever.
        earlier = (await s.state.posts.get(session.id, failed_turn)).get(0)
        if earlier is not None:
            await mark_interrupted(s.poster, session.id, where, failed_turn, earlier)
    part = paused_part(session)
    meta = message_metadata(session.id, TURN_PAUSED, failed_turn)
    ts = (await s.state.posts.get(session.id, TURN_PAUSED)).get(failed_turn)
    poster = s.poster
    try:
        if ts is not None:
            earlier_ts = ts
            try:
                await poster.call(
                    where.channel, lambda: poster.update(where.channel, earlier_ts, part, meta)
                )
            except SlackApiError as e:
                if slack_error(e) != "message_not_found":
                    raise
                ts = None
        if ts is None:
            found = await poster.find_tagged_or_none(session.id, where, TURN_PAUSED)
            ts = found.get(failed_turn)
            if ts is None:
                ts = await poster.post(where.channel, part, meta, thread_ts=where.ts)
            else:
                found_ts = ts
                await poster.call(
                    where.channel, lambda: poster.update(where.channel, found_ts, part, meta)
                )
            await s.state.posts.record(session.id, TURN_PAUSED, failed_turn, ts)
    except SlackApiError as e:
        log.error("session %s: cannot say in its thread that it paused: %s", session.id, e)


async def show_stopped(s: SlackSurface, session: Session, arg: str = "") -> None:
    """Say in the thread who stopped the session."""
    await s.abandon_live(session.id)
    where = thread_of(session)
    try:
        await s.poster.post_parts(
            session.id,
            where.channel,
            TURN_STOPPED,
            [stopped_part(session)],
            await s.state.posts.get(session.id, TURN_STOPPED),
            thread_ts=where.ts,
        )
    except SlackApiError as e:
        log.error("session %s: cannot say in its thread that it stopped: %s", session.id, e)


# ---- a render's clip ------------------------------------------------------------------------


async def upload_clip(s: SlackSurface, session: Session, arg: str) -> None:
    """Upload the clip: a finished render's video (`arg`, the file on this worker's disk,
    named after its render id; see bot.render.jobs) into the session's thread, once.

    The same upload as the report (`bot.slack.uploads`: the file id in the ledger before
    the share, membership, files.info confirming the share), in the render's own ledger;
    a refusal (`file_upload_size_restricted`, `not_in_channel`...) is recorded there and
    the render's done message says it.
    """
    path = Path(arg)
    rid = path.stem
    led = render_ledger(rid)
    ledger = await s.state.posts.all(led)
    if ledger.get(TURN_CLIP, {}).get(0) or ledger.get(TURN_CLIP_REFUSED, {}).get(0):
        return
    loaded = await s.state.renders.load(rid, team=session.origin.team_id)
    if loaded is None:
        return
    rec = RenderRecord.model_validate_json(loaded[0])
    plan = rec.plan
    title = session.locked.draft.title if session.locked else "Sora Copilot clip"
    try:
        data = await asyncio.to_thread(path.read_bytes)
        await upload_file(
            s.poster,
            led,
            where_of(rec),
            TURN_CLIP,
            content=data,
            filename=f"sora-{session.id}-{plan.tier}-{rid}.mp4",
            title=defuse(f"{title} ({plan.tier}, {plan.model}, {plan.seconds} s)"),
        )
    except SlackApiError as e:
        error = refused_upload(e)
        log.warning("render %s: the clip cannot be posted: %s", rid, error)
        await s.state.posts.record(led, TURN_CLIP_REFUSED, 0, error)


async def refresh_home(s: SlackSurface, session: Session, arg: str = "") -> None:
    """The starter's Home tab shows the lock or pause too (coalesced, best effort)."""
    await s.home.changed(s.client, session)


# The outbox's steps, by name (see bot.driver.steps_after for when each is saved).
STEPS: dict[str, SlackStep] = {
    "mark_heard": mark_heard,
    "show_turn": show_turn,
    "update_root": update_root,
    "post_locked": post_locked,
    "pin_locked": pin_locked,
    "upload_report": upload_report,
    "cross_post": cross_post,
    "show_paused": show_paused,
    "show_stopped": show_stopped,
    "refresh_home": refresh_home,
    "upload_clip": upload_clip,
}
