"""A render in its Slack thread: one progress message, then the clip, uploaded once.

The worker's render jobs (`bot.render.jobs`) call `SlackRenderShow.show` for each saved
step of a render; each call is idempotent, so a step redone after a crash repeats nothing:

* `progress`: ONE message in the thread, posted once (tagged and recorded in the post
  ledger of `render-<rid>`, so a redo finds it) and updated in place: queued, rendering
  (elapsed), done, refused or failed with the vendor's reason in one line. Slack's
  chat.update is Tier 3 for the whole workspace (~50 a minute, shared with every turn's
  updates: `state.updates`): an interim state takes a call only if one is free now and is
  skipped otherwise (the next shows more); a final state always lands, waiting for a call.
  Its first post spends a chat.postMessage of the channel (about one a second).
* `deliver`: the clip, uploaded into the thread by the `upload_clip` step of
  `bot.slack.steps` (the same upload, ledger, membership and files.info confirmation as
  the session report, `bot.slack.uploads`), before the progress message says done. A
  refusal (`file_upload_size_restricted`, an admin's limit; not in the channel) is kept
  in the record and the done message says it in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bot.render.jobs import RenderRecord, Step
from bot.slack.blocks import (
    MessagePart,
    context_block,
    escape,
    render_button,
    truncate,
)
from bot.slack.errors import slack_error
from bot.slack.poster import Thread

if TYPE_CHECKING:
    from bot.slack.surface import SlackSurface

log = logging.getLogger("sora.slack")

# Ledger "turns" of a render's own ledger (`render_ledger`): its progress message, its clip.
TURN_RENDER_PROGRESS = -20
TURN_CLIP = -21
TURN_CLIP_REFUSED = -22  # part 0: the Slack error that refused the clip's upload

SurfaceFor = Callable[[str], Awaitable["SlackSurface"]]


def render_ledger(rid: str) -> str:
    """The post ledger (and message tags) of render `rid`: a session may render many times,
    so each render has its own."""
    return f"render-{rid}"


def where_of(rec: RenderRecord) -> Thread:
    return Thread(rec.channel_id, rec.thread_ts)


def money(usd: float | None) -> str:
    return "cost unknown" if usd is None else f"${usd:.2f}"


def _minutes(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def progress_text(rec: RenderRecord) -> str:
    """The progress message's one line (escaped: vendor text never pings or links)."""
    plan = rec.plan
    what = f"{plan.seconds} s {plan.resolution} {plan.aspect}, {plan.model} ({plan.tier})"
    what = escape(what)
    who = f" for {escape(truncate(rec.user_name, 80))}" if rec.user_name else ""
    reason = escape(truncate(" ".join(rec.reason.split()), 300))
    if rec.status == "queued":
        return f":hourglass: Render queued{who}: {what}, about {money(plan.cost)}."
    if rec.status == "running":
        pct = f", {round(rec.progress * 100)} %" if rec.progress is not None else ""
        return (
            f":movie_camera: Rendering on {escape(plan.vendor)}{who}: {what}. "
            f"{_minutes(rec.elapsed_s)} so far{pct}."
        )
    if rec.status == "done":
        line = (
            f":white_check_mark: Rendered in {_minutes(rec.elapsed_s)}: {what}, {money(plan.cost)}."
        )
        problem = rec.shown.get("clip_error")
        if problem:
            line += " " + clip_problem(problem, rec)
        return line
    back = "" if rec.charged else " Not charged: its seconds are back in today's budget."
    if rec.status == "refused":
        return f":no_entry: {escape(plan.vendor)} refused this prompt: {reason}.{back}"
    if rec.status == "cancelled":
        return f":black_square_for_stop: The render was cancelled: {reason}.{back}"
    return f":warning: The render failed: {reason}.{back}"


def clip_problem(error: str, rec: RenderRecord) -> str:
    """Why the clip is not in the thread, and what a person can do: one line."""
    if error == "file_upload_size_restricted":
        return (
            "The clip is larger than this workspace's file upload limit, which its admins "
            "set, so it could not be posted here."
        )
    if error in ("not_in_channel", "channel_not_found", "method_not_supported_for_channel_type"):
        return "I could not post the clip: invite @Sora Copilot to this channel."
    if error == "session_deleted":
        return "The session was deleted meanwhile, so the clip was not posted."
    if error == "is_archived":
        return "I could not post the clip: this channel is archived."
    return f"I could not post the clip ({escape(truncate(error, 120))})."


def progress_part(rec: RenderRecord) -> MessagePart:
    """The progress message: its line, and once a draft is done, Master with its cost."""
    text = progress_text(rec)
    blocks: list[dict[str, object]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    ]
    if rec.status == "done" and rec.master is not None:
        m = rec.master
        blocks.append(
            context_block(
                escape(f"Master at full quality: {m.resolution} on {m.model}, ")
                + f"about {money(m.cost)} for {m.seconds} s."
            )
        )
        label = f"Master ({money(m.cost)})" if m.cost is not None else "Master"
        blocks.append(
            {"type": "actions", "elements": [render_button(rec.session_id, "master", label)]}
        )
    return MessagePart(tail=tuple(blocks), fallback=truncate(text, 300))


class SlackRenderShow:
    """Shows renders in their threads, through the Slack surface of their workspace."""

    def __init__(self, surface_for: SurfaceFor) -> None:
        self.surface_for = surface_for

    async def show(self, step: Step, record: RenderRecord, clip: Path | None) -> dict[str, str]:
        s = await self.surface_for(record.team_id)
        if step == "deliver":
            return await deliver(s, record, clip)
        await show_progress(s, record)
        return {}


async def show_progress(s: SlackSurface, rec: RenderRecord) -> None:
    """Post the render's progress message once, then update it (see the module's doc)."""
    led, where = render_ledger(rec.id), where_of(rec)
    part = progress_part(rec)
    try:
        ts = (await s.state.posts.get(led, TURN_RENDER_PROGRESS)).get(0)
        if ts is None:
            await s.poster.post_parts(
                led, where.channel, TURN_RENDER_PROGRESS, [part], {}, thread_ts=where.ts
            )
            return
        budgeted = False
        if not rec.finished:
            # An interim state: only a call the budget can spare now, else skipped.
            if not await s.budget.take(s.poster.workspace):
                log.debug("render %s: progress update skipped (a later one shows more)", rec.id)
                return
            budgeted = True
        await s.poster.put(led, where, TURN_RENDER_PROGRESS, 0, part, ts, budgeted=budgeted)
    except SlackApiError as e:
        # The thread cannot take it (archived, gone): the render goes on, and is recorded.
        log.warning("render %s: cannot show its progress: %s", rec.id, e)


async def deliver(s: SlackSurface, rec: RenderRecord, clip: Path | None) -> dict[str, str]:
    """Upload the clip through the `upload_clip` step; what to keep: its file id, or why
    it could not be posted."""
    if clip is None:
        return {}  # the record says why (`clip_error`)
    session = await s.state.sessions.load(rec.session_id)
    if session is None:
        return {"clip_error": "session_deleted"}
    await s.steps["upload_clip"](session, str(clip))
    led = render_ledger(rec.id)
    ledger = await s.state.posts.all(led)
    file_id = ledger.get(TURN_CLIP, {}).get(0)
    if file_id is None:
        return {"clip_error": ledger.get(TURN_CLIP_REFUSED, {}).get(0) or "not_posted"}
    try:
        await s.home.changed(s.client, session)  # the starter's Home shows the new clip
    except Exception as e:  # best effort: the clip is in the thread
        log.info("render %s: Home not refreshed: %r", rec.id, e)
    return {"file_id": file_id}


def refused_upload(e: SlackApiError) -> str:
    return slack_error(e) or f"HTTP {e.response.status_code}"
