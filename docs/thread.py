"""Draws docs/thread.png: a real session's thread, as the fake Slack recorded it.

Runs `sora-copilot dev --offline` against the tests' fake Slack over Socket Mode, types
`/sora …` as Ana, has Bo reply in the thread, waits for the lock, then lays the root and
the thread's messages (their Block Kit blocks, names, reactions) out as an HTML page in
Slack's look and shoots it with Debian's headless Chromium (`apt-get install chromium`):

    .venv/bin/python -m docs.thread            # writes docs/thread.png
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.slack_server import FakeSlack
from tests.slack_signing import thread_reply_event
from tests.support import wait_until
from tests.test_dev_socket_mode import command
from tests.test_e2e_slack import app_env, seed_workspace

HERE = Path(__file__).resolve().parent
CHANNEL, PROMPTS = "C0DEV", "C0DEVPROMPTS"
TEAMMATE = "U0BO"
IDEA = "A lighthouse keeper finds a message in a bottle persona: director rounds: 3"
REPLY = "Could the note be in his own handwriting? That's the twist."
EMOJI = {
    "eyes": "👀",
    "white_check_mark": "✅",
    "clapper": "🎬",
    "pushpin": "📌",
    "information_source": "ℹ️",
    "lock": "🔒",
    "movie_camera": "🎥",
    "warning": "⚠️",
}
AVATARS = {"Sora Copilot": "#4a154b", "Bo": "#2eb67d", "Ana": "#e01e5a"}


def emoji(text: str) -> str:
    return re.sub(r":([a-z_]+):", lambda m: EMOJI.get(m[1], m[0]), text)


def mrkdwn(text: str) -> str:
    """Slack's mrkdwn (already &-escaped by the app) as HTML."""
    out = emoji(text)
    out = re.sub(r"```(.*?)```", lambda m: f"<pre>{m[1]}</pre>", out, flags=re.S)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w*])\*([^*\n]+)\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w_])_([^_\n]+)_", r"<i>\1</i>", out)
    out = re.sub(r"<@(\w+)>", r'<span class="mention">@Ana</span>', out)
    out = re.sub(r"&lt;(https?://[^|&]+)\|([^&]+)&gt;", r'<a href="\1">\2</a>', out)
    return out.replace("\n", "<br>")


_MD = MarkdownIt("commonmark")


def blocks_html(message: dict[str, Any]) -> str:
    parts = []
    for b in message.get("blocks") or []:
        kind = b.get("type")
        if kind == "markdown":
            parts.append(f'<div class="md">{_MD.render(emoji(b["text"]))}</div>')
        elif kind == "section":
            if "text" in b:
                parts.append(f'<div class="section">{mrkdwn(b["text"]["text"])}</div>')
            if "fields" in b:
                cells = "".join(f"<div>{mrkdwn(f['text'])}</div>" for f in b["fields"])
                parts.append(f'<div class="fields">{cells}</div>')
        elif kind == "context":
            text = " ".join(mrkdwn(e.get("text", "")) for e in b["elements"])
            parts.append(f'<div class="context">{text}</div>')
        elif kind == "actions":
            buttons = "".join(
                f'<span class="button {e.get("style", "")}">{html.escape(e["text"]["text"])}</span>'
                for e in b["elements"]
            )
            parts.append(f'<div class="actions">{buttons}</div>')
    if not parts:
        parts.append(f'<div class="section">{mrkdwn(message.get("text", ""))}</div>')
    return "".join(parts)


def message_html(m: dict[str, Any], slack: FakeSlack, *, pinned: set[str]) -> str:
    name = m.get("username") or ("Bo" if m.get("user") == TEAMMATE else "Sora Copilot")
    icon = emoji(m.get("icon_emoji") or "") or name[:1]
    color = AVATARS.get(name, "#1264a3")
    reactions = "".join(
        f'<span class="reaction">{EMOJI.get(r, r)} 1</span>'
        for r in slack.reactions(CHANNEL, m["ts"])
    )
    pin = '<div class="pinned">📌 Pinned by Sora Copilot</div>' if m["ts"] in pinned else ""
    app = '<span class="app">APP</span>' if m.get("bot_id") or m.get("username") else ""
    return (
        f'<div class="message{" pinned-bg" if pin else ""}">{pin}'
        f'<div class="avatar" style="background:{color}">{icon}</div>'
        f'<div class="body"><div class="name">{html.escape(name)} {app}'
        f'<span class="time">10:{int(float(m["ts"])) % 60:02d} AM</span></div>'
        f"{blocks_html(m)}<div>{reactions}</div></div></div>"
    )


CSS = """
body { font-family: 'Lato', 'DejaVu Sans', 'Noto Color Emoji', sans-serif;
       font-size: 15px; margin: 0; background: #fff; color: #1d1c1d; width: 860px; }
.header { padding: 12px 20px; border-bottom: 1px solid #ddd; font-weight: 900; }
.header small { font-weight: 400; color: #616061; }
.message { display: flex; padding: 8px 20px; }
.pinned-bg { background: #fef9ec; flex-wrap: wrap; }
.pinned { width: 100%; font-size: 12px; color: #616061; margin-left: 48px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; color: #fff; font-size: 20px;
          display: flex; align-items: center; justify-content: center; flex: none;
          margin-right: 10px; }
.body { flex: 1; min-width: 0; }
.name { font-weight: 900; }
.app { font-size: 10px; background: #e8e8e8; color: #616061; padding: 1px 3px;
       border-radius: 2px; font-weight: 700; }
.time { font-weight: 400; color: #616061; font-size: 12px; margin-left: 6px; }
.section, .md { line-height: 1.45; }
.md p { margin: 2px 0 6px; }
.md ul, .md ol { margin: 2px 0 6px; padding-left: 22px; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; margin: 6px 0; }
.context { color: #616061; font-size: 13px; margin: 4px 0; }
.actions { margin: 8px 0 4px; }
.button { display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 3px 12px;
          font-weight: 700; font-size: 13px; margin-right: 8px; }
.button.primary { background: #007a5a; color: #fff; border-color: #007a5a; }
.button.danger { color: #e01e5a; border-color: #e01e5a; }
.reaction { display: inline-block; border: 1px solid #1d9bd1; background: #e8f5fa;
            border-radius: 12px; padding: 0 6px; font-size: 12px; margin-top: 4px; }
code { background: #f6f6f6; border: 1px solid #ddd; border-radius: 3px; padding: 0 3px;
       color: #e01e5a; font-size: 12px; }
pre code { color: inherit; background: none; border: none; padding: 0; }
pre { background: #f8f8f8; border: 1px solid #ddd; border-radius: 4px; padding: 8px;
      white-space: pre-wrap; font-size: 12px; }
.mention { background: #e8f5fa; color: #1264a3; }
.replies { color: #616061; font-size: 13px; padding: 4px 20px 4px 66px;
           border-bottom: 1px solid #eee; }
"""


async def record_thread() -> tuple[FakeSlack, str, str]:
    """Run a session through dev and the fake Slack; the fake (still open) and the page."""
    slack = FakeSlack()
    await slack.__aenter__()
    async with FakeAnthropic() as claude:
        seed_workspace(slack, claude, channel=CHANNEL, prompts=PROMPTS)
        env = app_env(slack, claude, prompts=PROMPTS, SLACK_APP_TOKEN=slack.app_token)
        env.pop("ANTHROPIC_API_KEY", None)
        env["SORA_ENV_FILE"] = os.devnull
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "dev",
            "--offline",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await slack.wait_socket(within=60)
            await slack.socket_ack(await slack.socket_send("slash_commands", command(IDEA)))

            def root() -> dict[str, Any] | None:
                tops = [m for m in slack.messages(CHANNEL) if m.get("thread_ts") in (None, m["ts"])]
                return tops[0] if tops else None

            root_ts = (await wait_until(root, "the root", within=30))["ts"]
            await wait_until(lambda: len(slack.thread(CHANNEL, root_ts)) >= 2, "the opening", 30)
            reply_ts = slack.seed_message(CHANNEL, REPLY, user=TEAMMATE, thread_ts=root_ts)
            event = thread_reply_event(
                channel=CHANNEL,
                user=TEAMMATE,
                text=REPLY,
                ts=reply_ts,
                thread_ts=root_ts,
                event_id="Ev0PICTURE",
            )
            await slack.socket_ack(await slack.socket_send("events_api", event))
            await wait_until(
                lambda: (
                    "Locked" in str(slack.message(CHANNEL, root_ts)) and slack.messages(PROMPTS)
                ),
                "the lock",
                within=90,
            )
            await wait_until(
                lambda: "white_check_mark" in slack.reactions(CHANNEL, reply_ts), "the ✅", 30
            )
        finally:
            proc.terminate()
            await proc.wait()
    return slack, root_ts, page(slack, root_ts)


def page(slack: FakeSlack, root_ts: str) -> str:
    thread = slack.thread(CHANNEL, root_ts)
    pinned = set(slack.pins(CHANNEL))
    root, replies = thread[0], thread[1:]
    body = [
        '<div class="header">Thread <small># video</small></div>',
        message_html(root, slack, pinned=pinned),
        f'<div class="replies">{len(replies)} replies</div>',
        *(message_html(m, slack, pinned=pinned) for m in replies),
    ]
    return f"<!doctype html><meta charset=utf-8><style>{CSS}</style>{''.join(body)}"


def shoot(html_path: Path, png: Path, *, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size=860,{height}",
            html_path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def main_async(out: Path, height: int, html_dir: Path) -> None:
    slack, _root, text = await record_thread()
    try:
        html_path = html_dir / "thread.html"
        html_path.write_text(text, encoding="utf-8")
        shoot(html_path, out, height=height)
    finally:
        await slack.__aexit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "thread.png")
    parser.add_argument("--height", type=int, default=2900, help="page height in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main_async(args.out.absolute(), args.height, Path(tmp)))
    print(args.out)


if __name__ == "__main__":
    main()
