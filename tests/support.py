"""Test doubles for the dialogue: a scripted model, a recording sink, reply builders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from bot.dialogue.models import Session
from bot.dialogue.profiles import resolve_persona, resolve_target
from bot.dialogue.sheets import parse_sheet
from bot.llm.base import ModelError, ModelReply, ModelRequest, TextCallback
from bot.llm.offline_sheet import sheet_from_words
from bot.llm.usage import Usage

Reply = str | ModelReply | ModelError | Callable[[ModelRequest], str]


def message_body(message: dict[str, Any]) -> str:
    """A Slack message's body as the app writes it: its first Markdown block (its `text` is
    only a short summary)."""
    blocks = message.get("blocks") or []
    if blocks and blocks[0].get("type") == "markdown":
        return str(blocks[0]["text"])
    return ""


def make_session(
    idea: str = "A lighthouse keeper finds a message in a bottle",
    *,
    expand: bool = True,
    **kw: Any,
) -> Session:
    """A session; a free-text persona's sheet is written by the offline model unless
    `expand` is False (then the session's first model call writes it)."""
    chosen = resolve_persona(kw.pop("persona", "director"))
    if expand and chosen.pending:
        chosen = parse_sheet(json.dumps(sheet_from_words(chosen.description)), chosen.description)
    return Session(
        idea=idea,
        persona=chosen,
        target=resolve_target(kw.pop("target", "sora-2")),
        max_rounds=kw.pop("max_rounds", 6),
        **kw,
    )


def draft_json(
    n: int = 1,
    *,
    title: str = "Threshold.",
    prompt: str | None = None,
    duration: int = 8,
    size: str = "1280x720",
    resolution: str | None = None,
) -> dict[str, Any]:
    extra = {"resolution": resolution} if resolution is not None else {}
    return {
        **extra,
        "title": title,
        "prompt_text": prompt
        or (
            f"Version {n}: a single continuous shot of a lighthouse keeper on a wet stone stair, "
            "35mm lens, slow push-in, storm light through salt-crusted glass, the sea breathing "
            "below. He uncorks a bottle; the note inside is in his own handwriting."
        ),
        "duration_seconds": duration,
        "size": size,
        "parts": {
            "subject": "an old lighthouse keeper",
            "setting": "a lighthouse stair during a storm, dusk",
            "action_beats": ["he climbs", "he uncorks the bottle", "he reads and freezes"],
            "camera": "35mm, slow push-in",
            "lighting_palette": "storm light, slate blue and amber",
            "sound": "wind, a foghorn, paper unfolding",
            "style": "cinematic realism",
            "avoid": ["on-screen text"],
        },
    }


def copilot(message: str, draft: dict[str, Any] | None = None) -> str:
    return json.dumps({"message": message, "draft": draft}, ensure_ascii=False)


def persona(message: str, decision: str = "revise", version: int | None = None) -> str:
    return json.dumps(
        {"message": message, "verdict": {"decision": decision, "version": version}},
        ensure_ascii=False,
    )


class ScriptedModel:
    """Replies from a list, in order; records every request it was given."""

    def __init__(self, replies: list[Reply], *, model: str = "claude-sonnet-5-5-20260815"):
        self.replies = list(replies)
        self.requests: list[ModelRequest] = []
        self.model = model

    @property
    def offline(self) -> bool:
        return False

    async def complete(
        self, request: ModelRequest, on_text: TextCallback | None = None
    ) -> ModelReply:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError("the script ran out of replies")
        item = self.replies.pop(0)
        if isinstance(item, ModelError):
            raise item
        if isinstance(item, ModelReply):
            reply = item
        else:
            text = item(request) if callable(item) else item
            reply = ModelReply(
                text=text,
                stop_reason="end_turn",
                usage=Usage(
                    input_tokens=100, output_tokens=50, cache_read_tokens=10, cache_write_tokens=5
                ),
                model=self.model,
            )
        if on_text is not None:
            for i in range(0, len(reply.text), 7):
                await on_text(reply.text[i : i + 7])
        return reply


class RecordingSink:
    def __init__(self) -> None:
        self.text = ""
        self.resets = 0

    async def delta(self, text: str) -> None:
        self.text += text

    async def reset(self) -> None:
        self.text = ""
        self.resets += 1


async def wait_until(pred: Callable[[], Any], what: str = "condition", within: float = 15.0) -> Any:
    """Poll `pred` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# Settings a developer's shell may hold that would change what the CLI does under test.
_CLI_ENV_DROPPED = ("ANTHROPIC_", "SLACK_", "REDIS_URL", "PORT", "GEMINI_", "RUNWAYML_")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`sora-copilot <args>` as a process in `cwd`, without the caller's Anthropic, Slack,
    Redis and port settings, plus `env`; stdout and stderr as bytes."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_CLI_ENV_DROPPED)}
    # The folder's own .env, if any; never the project's (a developer's real keys).
    base["SORA_ENV_FILE"] = str(cwd / ".env") if (cwd / ".env").is_file() else os.devnull
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=base,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


@contextlib.asynccontextmanager
async def app_processes(
    commands: list[tuple[str, ...]], *, env: dict[str, str], url: str
) -> AsyncIterator[None]:
    """`sora-copilot <command>` for each command, as processes with `env`, until the block
    ends; `url` (the one running `serve`) answers /healthz first. Afterwards each must have
    written no traceback and no token to its stderr."""
    import aiohttp

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            *command,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for command in commands
    ]
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"{url}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, "serve to answer /healthz", within=30)
        yield
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), timeout=15)
            except TimeoutError:
                p.kill()
        for p in procs:
            assert p.stderr is not None
            err = (await p.stderr.read()).decode(errors="replace")
            assert "Traceback" not in err, err
            assert "xoxb-" not in err  # no token is ever printed


async def lookup(state: Any, channel: str, thread_ts: str, teams: Iterable[str]) -> str | None:
    """The session in a thread of any of `teams` (a fake Slack's channel ids repeat across
    its workspaces, as real ones may: each workspace has its own thread index)."""
    for team in teams:
        sid = await state.threads.lookup(team, channel, thread_ts)
        if sid is not None:
            return str(sid)
    return None
