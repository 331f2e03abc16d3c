"""Uploading a file into a thread, once, with Slack's external upload.

Get an upload URL (a file id), send the bytes, then complete, which shares the
file as a message in the thread. The file id is recorded in the post ledger
before the share (part 1 of the upload's ledger turn), so an attempt after a
crash or a lost answer looks for that file's message in the thread instead of
sharing twice; the shared file is recorded as part 0 once it is in the thread.
Slack: `files.completeUploadExternal` needs the bot to be a member of the
channel, even where `chat:write.public` lets it post, and shares asynchronously
without returning a message ts (bolt-js#2115, python-slack-sdk#1329). So the share
is confirmed with `files.info` (Tier 4; slack_sdk's `files_upload_v2` names it as the
step after completing) before the upload counts as done and anything announces it.
A file over the workspace's upload limit is refused by `files.getUploadURLExternal`
with `file_upload_size_restricted` (an admin's setting), before any byte is sent.
"""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.slack.errors import CONNECTION_ERRORS, http_error, status_of
from bot.slack.poster import BACKOFF_FIRST_S, BACKOFF_MAX_S, REPLIES_PAGE, Poster, Thread

log = logging.getLogger("sora.slack")

PENDING_PART = 1  # the ledger part holding the file id before its share is confirmed
# How long files.info is asked before a completed upload counts as shared anyway: Slack
# accepted the completion, and its share lands later (a second upload would share twice).
CONFIRM_WITHIN_S = 30.0
CONFIRM_FIRST_S = 0.1


async def upload_file(
    poster: Poster,
    sid: str,
    where: Thread,
    ledger_turn: int,
    *,
    content: bytes,
    filename: str,
    title: str,
) -> str:
    """Upload `content` as a file shared in the thread, once; its file id."""
    ledger = await poster.state.posts.get(sid, ledger_turn)
    if 0 in ledger:
        return ledger[0]
    pending = ledger.get(PENDING_PART)
    if pending is not None and await file_shared(poster, where, pending):
        await poster.state.posts.record(sid, ledger_turn, 0, pending)
        return pending
    got = await poster.call(
        where.channel,
        lambda: poster.client.files_getUploadURLExternal(filename=filename, length=len(content)),
    )
    file_id, url = str(got["file_id"]), str(got["upload_url"])
    await poster.state.posts.record(sid, ledger_turn, PENDING_PART, file_id)
    await send_bytes(poster, url, content)
    files: list[dict[str, str | None]] = [{"id": file_id, "title": title}]
    delay = BACKOFF_FIRST_S
    while True:
        # The share is a message in the thread: it takes a post token too.
        await poster.state.ratelimit.wait(where.channel, team=poster.workspace)
        try:
            await poster.member(
                where.channel,
                lambda: poster.client.files_completeUploadExternal(
                    files=files, channel_id=where.channel, thread_ts=where.ts
                ),
                posting=True,
            )
            break
        except SlackApiError as e:
            if status_of(e) < 500:
                raise
        except CONNECTION_ERRORS as e:
            log.info("upload share: no answer, looking for it: %r", e)
        await poster.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)
        if await file_shared(poster, where, file_id):
            break
    await confirm_shared(poster, where, file_id)
    await poster.state.posts.record(sid, ledger_turn, 0, file_id)
    return file_id


async def confirm_shared(
    poster: Poster, where: Thread, file_id: str, *, within_s: float = CONFIRM_WITHIN_S
) -> bool:
    """Wait until `files.info` shows file `file_id` shared in the thread's channel (the
    share is asynchronous); False, with one log line, if it did not within `within_s`."""
    waited, delay = 0.0, CONFIRM_FIRST_S
    while True:
        try:
            info = await poster.call(where.channel, lambda: poster.client.files_info(file=file_id))
            shares = (info.get("file") or {}).get("shares") or {}
            if any(where.channel in by_channel for by_channel in shares.values()):
                return True
        except SlackApiError as e:
            log.info("files.info %s: %s", file_id, e.response.get("error"))
        if waited >= within_s:
            log.warning("file %s: not shown as shared in %s yet; going on", file_id, where.channel)
            return False
        await poster.sleep(delay)
        waited += delay
        delay = min(delay * 2, BACKOFF_MAX_S)


async def send_bytes(poster: Poster, url: str, content: bytes) -> None:
    """POST the file's bytes to its upload URL (safe to repeat: same file id)."""
    delay = BACKOFF_FIRST_S
    while True:
        session = poster.client.session
        own = session is None or session.closed
        http = aiohttp.ClientSession() if own else session
        assert http is not None
        try:
            async with http.post(url, data=content) as res:
                if res.status < 500:
                    if res.status >= 400:
                        raise http_error(f"upload refused: HTTP {res.status}", res.status)
                    return
                log.info("upload: HTTP %s, retrying", res.status)
        except CONNECTION_ERRORS as e:
            log.info("upload: connection failed, retrying: %r", e)
        finally:
            if own:
                await http.close()
        await poster.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


async def file_shared(poster: Poster, where: Thread, file_id: str) -> bool:
    """Whether file `file_id` is already shared as a message in the thread."""
    try:
        page_cursor: str | None = None
        while True:
            page = await poster.member(
                where.channel,
                lambda c=page_cursor: poster.client.conversations_replies(  # type: ignore[misc]
                    channel=where.channel, ts=where.ts, limit=REPLIES_PAGE, cursor=c
                ),
            )
            for m in page.get("messages") or []:
                if any(f.get("id") == file_id for f in m.get("files") or []):
                    return True
            page_cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page_cursor:
                return False
    except SlackApiError as e:
        log.warning("cannot look for the shared file in %s: %s", where.channel, e)
        return False
