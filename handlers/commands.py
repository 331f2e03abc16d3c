"""`/sora`: start a session, open the new-session modal, or answer help, personas, library.

Slack waits at most 3 s for the acknowledgement, and a slow one shows the user
an error. So the listener validates first (no I/O), answers bad input in the
ack itself as an ephemeral message, and acks a good request at once; posting
the thread root, creating the session and queueing its first turn happen after
the ack (handed to `after_ack.submit`, so the listener returns and Bolt answers Slack).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AfterAck
from bot.config import MAX_ROUNDS, MIN_ROUNDS
from bot.dialogue.models import Session
from bot.dialogue.profiles import targets
from bot.sessions import (
    BadInput,
    CommandRequest,
    Invoker,
    Refused,
    Sessions,
    parse_command_text,
    store_failed,
)
from bot.slack.blocks import escape, truncate
from handlers import plain_text, start, tell
from handlers.views import new_session_modal
from state import LibraryEntry
from state.personas import TeamPersona

COMMAND = "/sora"
EXCERPT_CHARS = 200


def register(app: AsyncApp) -> None:
    app.command(COMMAND)(on_sora)


def usage(sessions: Sessions) -> str:
    s = sessions.settings
    return "\n".join(
        [
            "*Sora Copilot* — a persona and the Sora Copilot write a text-to-video prompt "
            "together in a thread.",
            f"• `{COMMAND} <idea>` starts a session here, e.g. "
            f"`{COMMAND} a lighthouse at dusk persona: a 1970s Italian horror director "
            "rounds: 4 target: sora-2-pro`",
            f"   `persona:` a name from `{COMMAND} personas` or a few words of your own "
            f"(default {s.default_persona}); `rounds:` {MIN_ROUNDS}-{MAX_ROUNDS} "
            f"(default {s.default_rounds}); `target:` the video model (default "
            f"{s.default_target}). `persona:` takes the words up to the next option.",
            "   Targets: "
            + ", ".join(f"`{t}`" for t in sorted(targets(s.extra_profiles_dir)))
            + " (Sora 2's API is retired; its prompts still work in OpenAI's Sora app).",
            f"• `{COMMAND}` alone opens a form.",
            f"• `{COMMAND} personas` lists the personas; `{COMMAND} library` shows the "
            "latest locked prompts of this channel.",
            f"• `{COMMAND} persona save <name>: <description>` saves a persona for the whole "
            f"workspace (`persona: <name>` then uses it); `{COMMAND} persona delete <name>` "
            "removes it (its author or an admin).",
            f"• `{COMMAND} delete <session id>` deletes a session you started (or any, for an "
            "admin) and its library entry from the app's store; so does Delete on its "
            "locked prompt.",
            "Reply in a session's thread and both agents hear you on their next turn. "
            "The buttons on the thread's first message stop it or lock the latest draft.",
        ]
    )


def personas_text(sessions: Sessions, team: list[TeamPersona] | None = None) -> str:
    lines = ["*Personas* (use the name after `persona:`, or describe your own):"]
    for p in sorted(sessions.personas(), key=lambda p: p.name):
        lines.append(f"• `{p.name}`: *{escape(p.display_name)}*, {escape(p.role)}")
    if team:
        lines.append("*This workspace's personas* (`/sora persona save <name>: <description>`):")
        for t in team:
            lines.append(
                f"• `{t.name}`: {escape(truncate(t.description, EXCERPT_CHARS))} "
                f"(saved by <@{t.author_id}>)"
            )
    return "\n".join(lines)


async def _personas_command(request: CommandRequest, invoker: Invoker, sessions: Sessions) -> str:
    """List, save or delete the workspace's personas; the answer for the person who asked."""
    team, user, name = invoker.team_id, invoker.user_id, request.persona or ""
    try:
        if request.kind == "persona_save":
            return await sessions.save_team_persona(
                team_id=team, user_id=user, name=name, description=request.idea
            )
        if request.kind == "persona_delete":
            return await sessions.delete_team_persona(team_id=team, user_id=user, name=name)
    except Refused as e:
        return f":warning: {e}"
    raise ValueError(f"not a persona command: {request.kind}")


async def library_text(client: AsyncWebClient, entries: list[LibraryEntry]) -> str:
    if not entries:
        return "No prompt has been locked in this channel yet. Start one with `/sora <idea>`."

    async def link(entry: LibraryEntry) -> str | None:
        if not entry.channel_id or not entry.thread_ts:
            return None
        try:
            reply = await client.chat_getPermalink(
                channel=entry.channel_id, message_ts=entry.thread_ts
            )
        except SlackApiError:
            return None  # the thread was deleted; the prompt is still worth listing
        return str(reply["permalink"])

    links = await asyncio.gather(*(link(e) for e in entries))
    lines = [f"*The {len(entries)} latest locked prompts in this channel*"]
    for entry, url in zip(entries, links, strict=True):
        draft = entry.locked.draft
        who = f"<@{entry.user_id}>" if entry.user_id else escape(entry.user_name or "someone")
        where = f" · <{url}|thread>" if url else ""
        lines.append(
            f"• *{escape(draft.title)}* ({escape(draft.target)}, v{draft.version})\n"
            f"> {escape(truncate(' '.join(draft.prompt_text.split()), EXCERPT_CHARS))}\n"
            f"   _{escape(entry.persona)}_ · started by {who}{where}"
        )
    return "\n".join(lines)


async def _session_for(
    request: CommandRequest, command: dict[str, Any], sessions: Sessions
) -> Session:
    """The session `/sora` asks for, with the workspace's defaults (BadInput otherwise).
    Those defaults are cached in the process; a persona name that is not a shipped one
    costs one read of the workspace's own personas."""
    try:
        return await sessions.build_for_team(request, command.get("team_id"))
    except RedisError as e:
        raise BadInput(store_failed(e)) from e


async def on_sora(
    ack: AsyncAck,
    command: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    try:
        request = parse_command_text(plain_text(str(command.get("text") or "")))
    except BadInput as e:
        await ack(text=f":warning: {e}", response_type="ephemeral")
        return
    session: Session | None = None
    if request.kind == "start":
        try:
            session = await _session_for(request, command, sessions)
        except BadInput as e:
            await ack(text=f":warning: {e}", response_type="ephemeral")
            return
    if request.kind == "help":
        await ack(text=usage(sessions), response_type="ephemeral")
        return
    if request.kind == "personas":
        try:  # one read: the workspace's own personas beside the shipped ones
            team = await sessions.team_personas(command.get("team_id"))
        except RedisError:
            team = []
        await ack(text=personas_text(sessions, team), response_type="ephemeral")
        return
    await ack()
    await after_ack.submit(
        _after_sora(request, session, command, client, respond, sessions, after_ack)
    )


async def _after_sora(
    request: CommandRequest,
    session: Session | None,
    command: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond | None,
    sessions: Sessions,
    after_ack: AfterAck,
) -> None:
    invoker = Invoker(
        channel_id=str(command["channel_id"]),
        user_id=str(command["user_id"]),
        team_id=command.get("team_id"),
        user_name=command.get("user_name"),
    )
    if request.kind == "modal":
        await client.views_open(
            trigger_id=command["trigger_id"],
            view=new_session_modal(sessions, channel_id=invoker.channel_id),
        )
        return
    if request.kind == "delete":
        try:
            text = await sessions.delete(
                session_id=request.idea, user_id=invoker.user_id, team_id=invoker.team_id
            )
        except Refused as e:
            text = f":warning: {e}"
        await tell(
            client, channel=invoker.channel_id, user=invoker.user_id, text=text, respond=respond
        )
        return
    if request.kind in ("persona_save", "persona_delete"):
        text = await _personas_command(request, invoker, sessions)
        await tell(
            client, channel=invoker.channel_id, user=invoker.user_id, text=text, respond=respond
        )
        return
    if request.kind == "library":
        entries = await sessions.recent_prompts(invoker.channel_id, team_id=invoker.team_id)
        text = await library_text(client, entries)
        await tell(
            client, channel=invoker.channel_id, user=invoker.user_id, text=text, respond=respond
        )
        return
    assert session is not None  # kind == "start"
    await start(
        session, invoker, sessions=sessions, after_ack=after_ack, client=client, respond=respond
    )
