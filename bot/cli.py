"""The `sora-copilot` command: run a session in the terminal, or the app's processes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from bot.config import MAX_INTERJECTION_CHARS, MAX_ROUNDS, MIN_ROUNDS, Settings, load_settings
from bot.dialogue.engine import Engine, stop
from bot.dialogue.models import Origin, Session, SessionStatus
from bot.dialogue.report import render_json, render_markdown
from bot.driver import make_engine
from bot.llm.base import ChatModel
from bot.llm.offline import OfflineModel
from bot.sessions import BadInput, new_session
from bot.surfaces.base import Surface
from bot.surfaces.recording import RecordingSurface
from bot.surfaces.terminal import TerminalSurface
from bot.worker import Worker, WorkerConfig
from state import EMBEDDED_NOTICE, InboxEntry, State, StateUnavailable, connect, is_embedded

EXIT_OK = 0
EXIT_NOT_LOCKED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def choose_model(settings: Settings, *, offline: bool, err: TextIO) -> ChatModel:
    if offline:
        err.write("Running offline: a deterministic model writes the dialogue (--offline).\n")
        return OfflineModel()
    if settings.anthropic_api_key is None:
        err.write(
            "Running offline: ANTHROPIC_API_KEY is not set, so a deterministic model "
            "writes the dialogue.\n"
        )
        return OfflineModel()
    from bot.llm.anthropic_model import AnthropicModel

    return AnthropicModel.from_settings(settings)


async def _stdin_lines(on_line: Callable[[str], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            await on_line(line.rstrip("\n"))


async def open_state(settings: Settings, *, prefix: str, err: TextIO) -> State:
    """The shared store, or the embedded one (saying so) when REDIS_URL is unset."""
    redis = await connect(settings.redis_url, tls_verify=settings.redis_tls_verify)
    if is_embedded(redis):
        err.write(EMBEDDED_NOTICE + "\n")
    state = State.create(redis, prefix=prefix, settings=settings)
    await state.queue.ensure_group()
    return state


async def run_session(
    session: Session,
    *,
    state: State,
    engine: Engine,
    out: TextIO,
    interactive: bool = False,
    author: str = "you",
) -> Session:
    """Run `session` to its end through the store and an in-process worker."""
    finished = asyncio.Event()
    worker = Worker(
        state=state,
        engine=engine,
        surface=TerminalSurface(out),
        config=WorkerConfig(concurrency=1, block_ms=100, reclaim_every_s=3600),
        on_finished=lambda s: finished.set() if s.id == session.id else None,
    )
    await state.sessions.create(session, enqueue=True)
    stopping = asyncio.Event()
    work = asyncio.create_task(worker.run(stopping))

    async def interject(text: str) -> None:
        entry = InboxEntry(kind="interjection", author=author, text=text)
        if len(text) > MAX_INTERJECTION_CHARS:
            out.write(
                f"\n  (not sent: an interjection is at most {MAX_INTERJECTION_CHARS} characters)\n"
            )
            return
        await state.inbox.push(session.id, entry)

    reader = asyncio.create_task(_stdin_lines(interject)) if interactive else None
    try:
        waiter = asyncio.create_task(finished.wait())
        done, _ = await asyncio.wait({waiter, work}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            waiter.cancel()
            work.result()  # the worker died: raise what killed it
    finally:
        if reader is not None:
            reader.cancel()
        stopping.set()
        await asyncio.gather(work, return_exceptions=True)
    stored = await state.sessions.load(session.id)
    return stored if stored is not None else session


def write_report(session: Session, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"session-{session.id}.md"
    js = out_dir / f"session-{session.id}.json"
    md.write_text(render_markdown(session), encoding="utf-8")
    js.write_text(render_json(session), encoding="utf-8")
    return md, js


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    out, err = sys.stdout, sys.stderr
    session = new_session(
        args.idea,
        persona=args.persona or settings.default_persona,
        target=args.target or settings.default_target,
        rounds=args.rounds if args.rounds is not None else settings.default_rounds,
        settings=settings,
    )
    session.origin = Origin(surface="terminal", user_name=_user_name())
    model = choose_model(settings, offline=args.offline, err=err)
    engine = make_engine(model, settings)
    # Terminal sessions get keys of their own, so the Slack app's workers never take them.
    state = await open_state(settings, prefix=f"{settings.redis_prefix}-terminal", err=err)
    interactive = sys.stdin.isatty()
    if interactive:
        err.write("Type a line and press Enter to interject; the next speaker will answer it.\n")
    out.write(
        f"Session {session.id}: {session.persona.display_name} and the Sora Copilot, "
        f"target {session.target.name}, at most {session.max_rounds} rounds.\n"
    )
    try:
        session = await run_session(
            session,
            state=state,
            engine=engine,
            out=out,
            interactive=interactive,
            author=_user_name(),
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        stored = await state.sessions.load(session.id)
        session = stored or session
        if not session.finished:
            stop(session, by=_user_name())
        md, _ = write_report(session, Path(args.out))
        err.write(f"\nStopped. Report: {md}\n")
        return EXIT_INTERRUPTED
    md, js = write_report(session, Path(args.out))
    out.write(f"\nReport: {md}\nJSON:   {js}\n")
    if session.status == SessionStatus.LOCKED:
        return EXIT_OK
    err.write(
        f"No prompt was locked: the session is {session.status.value}"
        + (f" ({session.error})" if session.error else "")
        + ".\n"
    )
    return EXIT_NOT_LOCKED


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BadInput(
            "sora-copilot worker needs REDIS_URL: workers and web processes share sessions "
            "through Redis, and an embedded store would be invisible to them."
        )
    if args.surface == "slack":
        _require(
            "worker",
            {"SLACK_BOT_TOKEN": settings.slack_bot_token},
            "the worker posts each turn into its Slack thread with the bot token "
            "(--surface recording records turns in Redis instead, for tests).",
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    model = choose_model(settings, offline=args.offline, err=sys.stderr)
    if model.offline and args.offline_latency:
        model = OfflineModel(latency=args.offline_latency)
    engine = make_engine(model, settings)
    from bot.slack.client import close_client, make_client

    client = None  # only the Slack surface talks to Slack
    surface: Surface
    if args.surface == "recording":
        surface = RecordingSurface(state.redis, state.keys)
    else:
        from bot.surfaces.slack import SlackSurface

        client = make_client(settings)
        surface = SlackSurface(client=client, state=state, settings=settings)
    worker = Worker(
        state=state,
        engine=engine,
        surface=surface,
        config=WorkerConfig.from_settings(settings, concurrency=args.concurrency),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    sys.stderr.write(
        f"worker {worker.name} taking jobs (concurrency {worker.config.concurrency})\n"
    )
    try:
        await worker.run(stopping)
    finally:
        if client is not None:
            await close_client(client)
    sys.stderr.write(f"worker {worker.name} stopped\n")
    return EXIT_OK


def _require(command: str, values: dict[str, SecretStr | None], why: str) -> None:
    """BadInput naming every setting in `values` that is unset or empty."""
    missing = [name for name, v in values.items() if v is None or not v.get_secret_value()]
    if missing:
        raise BadInput(f"sora-copilot {command} needs {' and '.join(missing)}: {why}")


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BadInput(
            "sora-copilot serve needs REDIS_URL: the web process hands sessions to workers "
            "through Redis, and an embedded store would be invisible to them."
        )
    _require(
        "serve",
        {
            "SLACK_BOT_TOKEN": settings.slack_bot_token,
            "SLACK_SIGNING_SECRET": settings.slack_signing_secret,
        },
        "the bot token (OAuth & Permissions) to call Slack, and the signing secret "
        "(Basic Information) to check that each request comes from Slack.",
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    from bot.web import serve

    await serve(settings=settings, state=state, host=args.host, port=args.port or settings.port)
    return EXIT_OK


async def _dev(args: argparse.Namespace, settings: Settings) -> int:
    _require(
        "dev",
        {"SLACK_BOT_TOKEN": settings.slack_bot_token, "SLACK_APP_TOKEN": settings.slack_app_token},
        "Socket Mode connects with an app-level token (xapp-…, scope connections:write, "
        "from the app's Basic Information page) and calls Slack with the bot token.",
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Imported here: `run` and `worker` start without Bolt and the Slack surface.
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.errors import SlackApiError

    from bot.app import build_app
    from bot.slack.client import close_client, make_client
    from bot.surfaces.slack import SlackSurface
    from bot.web import check_token

    client = make_client(settings)
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    await check_token(settings)
    try:
        # The Socket Mode client retries a refused token forever; ask once, and say why.
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as e:
        raise BadInput(
            f"Slack refused SLACK_APP_TOKEN ({e.response.get('error')}): it must be an "
            "app-level token (xapp-…) with connections:write, and Socket Mode must be on."
        ) from e
    except OSError as e:
        raise BadInput(f"Slack is not reachable at {settings.slack_api_url}: {e}") from e
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    app = build_app(settings=settings, state=state, client=client)
    model = choose_model(settings, offline=args.offline, err=sys.stderr)
    worker = Worker(
        state=state,
        engine=make_engine(model, settings),
        surface=SlackSurface(client=client, state=state, settings=settings),
        config=WorkerConfig.from_settings(settings),
    )
    handler = AsyncSocketModeHandler(app, app_token)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # slack_bolt leaves the Socket Mode handler's methods unannotated.
    await handler.connect_async()  # type: ignore[no-untyped-call]
    sys.stderr.write(f"Socket Mode connected; worker {worker.name} taking jobs. Ctrl-C stops.\n")
    try:
        await worker.run(stopping)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await close_client(client)
    return EXIT_OK


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "you"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-copilot",
        description="A persona and the Sora Copilot write a text-to-video prompt together.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a whole session in this terminal")
    run.add_argument("idea", help="the video idea, in quotes")
    run.add_argument("--persona", help='a persona name, or free text: "a 1970s horror director"')
    run.add_argument(
        "--rounds", type=int, help=f"at most this many rounds ({MIN_ROUNDS}-{MAX_ROUNDS})"
    )
    run.add_argument("--target", help="the target video model profile, e.g. sora-2")
    run.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    run.add_argument("--out", default="out", help="where to write the report (default: out/)")
    work = sub.add_parser("worker", help="take turn jobs from Redis (needs REDIS_URL)")
    work.add_argument("--concurrency", type=int, help="sessions worked on at once")
    work.add_argument(
        "--surface",
        choices=["slack", "recording"],
        default="slack",
        help="where turns go: the Slack thread (default), or recorded in Redis (tests)",
    )
    work.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    work.add_argument(
        "--offline-latency", type=float, default=0.0, help="seconds per offline model call"
    )
    serve = sub.add_parser(
        "serve", help="the Slack web process: /slack/events and /healthz (needs REDIS_URL)"
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT, 3000)")
    dev = sub.add_parser(
        "dev", help="Socket Mode and a worker in one process, for development (SLACK_APP_TOKEN)"
    )
    dev.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Reports and streamed text are UTF-8 whatever the terminal's locale says.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8")
    args = build_parser().parse_args(argv)
    settings = load_settings()
    try:
        if args.command == "run":
            return asyncio.run(_run(args, settings))
        if args.command == "worker":
            return asyncio.run(_worker(args, settings))
        if args.command == "serve":
            return asyncio.run(_serve(args, settings))
        if args.command == "dev":
            return asyncio.run(_dev(args, settings))
    except (BadInput, StateUnavailable) as e:
        sys.stderr.write(f"sora-copilot: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
