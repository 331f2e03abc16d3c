"""The `sora-copilot` command: run a session in the terminal, or the app's processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from pydantic import SecretStr
from rich.console import Console

from bot.config import (
    DEFAULT_ROUNDS,
    ENV_FILE_VARIABLE,
    MAX_INTERJECTION_CHARS,
    MAX_ROUNDS,
    MIN_ROUNDS,
    PROJECT_ROOT,
    Settings,
    SettingsError,
    describe_env_file,
    find_env_file,
    load_settings,
    oauth_enabled,
)
from bot.dialogue.engine import Engine, SessionError, TurnFailed, add_interjection, stop
from bot.dialogue.models import Note, Origin, Session, SessionStatus
from bot.dialogue.report import render_json, render_markdown
from bot.dialogue.sheets import introduction
from bot.driver import make_engine
from bot.llm.base import ChatModel
from bot.llm.offline import OfflineModel
from bot.llm.paced import PacedModel
from bot.render.base import RenderError
from bot.sessions import BadInput, new_session
from bot.surfaces.base import Surface
from bot.surfaces.keyboard import Keyboard
from bot.surfaces.recording import RecordingSurface
from bot.surfaces.terminal import (
    Output,
    PlainSurface,
    ResumeCommand,
    RichSurface,
    rounds_phrase,
)
from bot.worker import Worker, WorkerConfig
from state import (
    EMBEDDED_NOTICE,
    InboxEntry,
    PushResult,
    State,
    connect,
    is_embedded,
    redact,
)
from state.audit import AuditEntry
from state.errors import StateError, StateMisconfigured
from state.health import check_eviction
from state.sweep import Lost

if TYPE_CHECKING:
    from aiohttp import web

    from bot.render.jobs import RenderShow
    from bot.slack.client import SlackClient
    from bot.slack.workspaces import Clients

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


async def open_state(
    settings: Settings, *, prefix: str, err: TextIO, web: bool = False, app: bool = False
) -> State:
    """The shared store, or the embedded one (saying so) when REDIS_URL is unset.

    `web`: for a process that answers Slack requests and runs no worker, whose
    Redis timeouts are short so that a user hears of a stalled Redis at once.
    `app`: for the Slack app's processes (serve, worker, dev): a Redis that may
    evict their keys is refused (`REDIS_EVICTION_CHECK`).
    """
    redis = await connect(
        settings.redis_url,
        tls_verify=settings.redis_tls_verify,
        connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_web_socket_timeout_seconds
        if web
        else settings.redis_socket_timeout_seconds,
    )
    if is_embedded(redis):
        err.write(EMBEDDED_NOTICE + "\n")
    elif app:
        try:
            warning = await check_eviction(redis, mode=settings.redis_eviction_check)
        except StateMisconfigured:
            await redis.aclose()
            raise
        if warning:
            err.write(warning + "\n")
    state = State.create(
        redis, prefix=prefix, settings=settings, lease_ttl_ms=settings.lease_ttl_ms
    )
    await state.queue.ensure_group()
    return state


# ---- `run` and `resume`: a session in this terminal ------------------------------------

# Characters per second at which the offline model's messages stream into a terminal:
# brisk reading, slow enough to type an interjection while the session runs.
OFFLINE_PACE = 60.0
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_text(args: argparse.Namespace) -> None:
    """BadInput for any argument that is not valid UTF-8 (Python keeps such bytes as
    lone surrogates, which nothing downstream can store or print)."""
    for name, value in vars(args).items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            label = name.replace("_", " ") if name in ("idea", "session_id") else f"--{name}"
            raise BadInput(
                f"The {label} is not valid UTF-8 text; check your terminal's encoding "
                "(e.g. LANG=C.UTF-8) and type it again."
            ) from None


def prepare_out_dir(text: str) -> Path:
    """The report's directory, created and proven writable before any work starts."""
    path = Path(text or ".")
    try:
        if path.exists() and not path.is_dir():
            raise BadInput(
                f"--out {text} is a file, not a directory: name a directory for the report."
            )
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sora-copilot-check-"):
            pass
    except OSError as e:
        raise BadInput(
            f"--out {text}: cannot write the report there ({e.strerror or e})."
        ) from None
    return path


def _settings_banner(settings_from: str, out_dir: Path) -> str:
    """Where the settings came from and where the report goes: both depend on the folder
    the command runs in, so the session's banner names them."""
    return f"{settings_from} Report to {out_dir.absolute()}{os.sep}."


def write_report(session: Session, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"session-{session.id}.md"
    js = out_dir / f"session-{session.id}.json"
    md.write_text(render_markdown(session), encoding="utf-8")
    js.write_text(render_json(session), encoding="utf-8")
    return md, js


class _OneLine(logging.Formatter):
    """Log records as one line, the exception's message in place of its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"sora-copilot: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({record.exc_info[1]})"
        return line


def _quiet_logging() -> None:
    # The terminal shows the session; library warnings (a retried call, a slow
    # Redis) would only repeat what the session says. Errors stay, on one line.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.ERROR, handlers=[handler], force=True)


TerminalSurface = PlainSurface | RichSurface


def make_surface(
    out: Output, *, resume_command: ResumeCommand | None, interactive: bool
) -> TerminalSurface:
    """Rich output for a person at a terminal; plain text for pipes, files and dumb terminals."""
    if out.isatty():
        console = Console(file=cast(TextIO, out), highlight=False)
        if console.is_terminal and not console.is_dumb_terminal:
            return RichSurface(console, resume_command=resume_command, interactive=interactive)
    return PlainSurface(cast(TextIO, out), resume_command=resume_command)


PROG_VARIABLE = "SORA_COPILOT_PROG"  # set by scripts/sora-copilot: the path it was run as


def _program() -> str:
    """This command as a person can type it again, from any folder."""
    wrapper = os.environ.get(PROG_VARIABLE)
    if wrapper:
        return shlex.quote(wrapper)
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "sora-copilot":
        on_path = shutil.which("sora-copilot")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return "sora-copilot"
        return shlex.quote(str(Path(argv0).absolute()))
    return f"{shlex.quote(sys.executable)} -m bot.cli"  # python -m bot.cli


def resume_command(settings: Settings, env_file: Path | None) -> Callable[[str], str]:
    """`sora-copilot resume <id>` as it works when typed: this program's path, with the
    Redis settings that came from the environment (a .env is read again: the project's by
    itself, any other named with --env-file). A REDIS_URL with a password is not printed;
    the line says so instead."""
    words: list[str] = []
    unprinted = ""
    for name, value in (("REDIS_URL", settings.redis_url), ("REDIS_PREFIX", settings.redis_prefix)):
        if not os.environ.get(name) or value is None:
            continue  # from the .env, which resume reads too
        if redact(value) != value:
            unprinted = f" (with the same {name}: it holds a password, so it is not shown)"
            continue
        words.append(f"{name}={shlex.quote(value)}")
    words += [_program(), "resume"]
    if env_file is not None and env_file not in (PROJECT_ROOT / ".env", Path(os.devnull)):
        words += ["--env-file", shlex.quote(str(env_file))]
    command = " ".join(words)
    return lambda session_id: f"{command} {session_id}{unprinted}"


def _stdin_is_terminal() -> bool:
    """A terminal we may read from: not closed, and this process in its foreground (a
    background job that reads or sets the terminal's mode is stopped by the kernel)."""
    try:
        if sys.stdin is None or not sys.stdin.isatty():
            return False
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (ValueError, OSError):  # closed
        return False


async def run_session(
    session: Session,
    *,
    state: State,
    engine: Engine,
    surface: Surface,
    interrupted: asyncio.Event | None = None,
    fresh: bool = True,
) -> tuple[Session, bool]:
    """Run `session` through the store and an in-process worker until it stops running.

    `fresh`: create it (and its first job); otherwise it is in the store with a job
    queued. Returns the stored session and whether `interrupted` cut it short.
    """
    finished = asyncio.Event()
    worker = Worker(
        state=state,
        engine=engine,
        surface=surface,
        # drain_s=0: on Ctrl-C the turn in flight is dropped at once, not waited for.
        config=WorkerConfig(concurrency=1, block_ms=100, reclaim_every_s=3600, drain_s=0.0),
        on_finished=lambda s: finished.set() if s.id == session.id else None,
    )
    if fresh:
        await state.sessions.create(session, enqueue=True)
    stopping = asyncio.Event()
    work = asyncio.create_task(worker.run(stopping))
    waiters = {asyncio.create_task(finished.wait())}
    if interrupted is not None:
        waiters.add(asyncio.create_task(interrupted.wait()))
    try:
        done, _ = await asyncio.wait({*waiters, work}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()  # the worker died: raise what killed it
    finally:
        for waiter in waiters:
            waiter.cancel()
        stopping.set()
        await asyncio.gather(work, return_exceptions=True)
    was_interrupted = interrupted is not None and interrupted.is_set() and not finished.is_set()
    if was_interrupted:
        return await _stop_stored(state, session, by=_user_name()), True
    stored = await state.sessions.load(session.id)
    return (stored if stored is not None else session), False


async def _stop_stored(state: State, session: Session, *, by: str) -> Session:
    """Stop the stored session, keeping what was typed but not yet heard."""
    snap = await state.sessions.snapshot(session.id)
    if snap is None:
        return session
    stored = snap.session
    if stored.finished:
        return stored
    for entry in snap.inbox:
        if entry.kind == "interjection":
            with contextlib.suppress(SessionError):
                add_interjection(stored, author=entry.author, text=entry.text, at=entry.at)
    stop(stored, by=by)
    with contextlib.suppress(Exception):  # the report is written from `stored` either way
        await state.sessions.save(
            stored,
            expected_turn=stored.next_turn,
            expected_rev=snap.rev,
            consume_inbox=len(snap.inbox),
        )
    return stored


async def attend(
    session: Session,
    *,
    state: State,
    engine: Engine,
    out_dir: Path,
    offline: bool,
    fresh: bool,
    resume_with: ResumeCommand | None = None,
    settings_from: str = "",
) -> int:
    """Show `session` in this terminal until it ends, take interjections, write the report.

    `resume_with`: how a paused session is resumed (unused on the embedded store, where
    it cannot be); `settings_from`: the banner's line on where the settings came from."""
    interactive = _stdin_is_terminal()
    resume = None if is_embedded(state.redis) else resume_with
    interrupted = asyncio.Event()
    out = Output(sys.stdout, on_gone=interrupted.set)  # `| head` ends the session too
    surface = make_surface(out, resume_command=resume, interactive=interactive)
    author = _user_name()
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    unheard: list[Note] = []

    async def interject(text: str) -> None:
        entry = InboxEntry(kind="interjection", author=author, text=text)
        result = await state.inbox.push(session.id, entry)
        if result == PushResult.QUEUED:
            surface.sent(author, text)
        elif result == PushResult.FULL:
            surface.note("  (not sent: too many notes wait to be heard; try after this turn)")
        else:
            # Answered at once, and kept for the report: nobody will speak again.
            stored = await state.sessions.load(session.id)
            status = stored.status.value if stored is not None else "over"
            surface.too_late(author, text, status)
            unheard.append(Note(author=author, text=text))

    def on_line(text: str) -> None:
        if len(text) > MAX_INTERJECTION_CHARS:
            surface.note(f"  (not sent: an interjection is at most {MAX_INTERJECTION_CHARS} chars)")
            return
        task = loop.create_task(interject(text))
        pending.add(task)
        task.add_done_callback(pending.discard)

    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted.set)
            signals.append(sig)
    keyboard = None
    if interactive:
        keyboard = Keyboard(
            on_line=on_line,
            on_edit=surface.edit,
            edit=isinstance(surface, RichSurface),
            max_chars=MAX_INTERJECTION_CHARS,
        )
    surface.start()
    try:
        if keyboard is not None and not keyboard.start():
            keyboard = None
        if isinstance(surface, RichSurface):
            surface.interactive = keyboard is not None
        if session.persona.pending:
            # Before anything is stored: a persona that cannot be written leaves nothing.
            surface.note(f"Writing a persona from “{session.persona.description}”…")
            try:
                await engine.expand_persona(session)
            except TurnFailed as e:
                surface.note(f"sora-copilot: {e}")
                return EXIT_BAD_INPUT if e.kind == "persona" else EXIT_NOT_LOCKED
        surface.note(
            f"{'Session' if fresh else 'Resuming session'} {session.id}"
            f"{' (offline)' if offline else ''}: "
            f"{session.persona.display_name} and the Sora Copilot, target {session.target.name}, "
            f"{rounds_phrase(session.max_rounds)}."
        )
        if session.persona.description:
            p = session.persona
            surface.note(f"The persona: {introduction(p)}. {p.voice}")
        if settings_from:
            surface.note(_settings_banner(settings_from, out_dir))
        if keyboard is not None and isinstance(surface, PlainSurface):
            surface.note("Type a line and press Enter to interject; the next speaker answers it.")
        session, was_interrupted = await run_session(
            session,
            state=state,
            engine=engine,
            surface=surface,
            interrupted=interrupted,
            fresh=fresh,
        )
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if not was_interrupted:
            # Notes queued while the last turn was being written: no turn will hear them.
            for entry in await state.inbox.peek(session.id):
                if entry.kind == "interjection":
                    surface.too_late(entry.author, entry.text, session.status.value)
                    unheard.append(Note(author=entry.author, text=entry.text, at=entry.at))
            session.unheard = sorted(unheard, key=lambda n: n.at)
    finally:
        if keyboard is not None:
            keyboard.close()
        surface.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
    try:
        md, js = write_report(session, out_dir)
    except OSError as e:
        sys.stderr.write(f"sora-copilot: could not write the report to {out_dir}: {e}\n")
        return EXIT_INTERRUPTED if was_interrupted else EXIT_NOT_LOCKED
    if out.gone:
        sys.stderr.write(f"Stopped: the output was closed. Report: {md}\n")
        return EXIT_NOT_LOCKED
    if was_interrupted:
        sys.stderr.write(f"\nStopped. Report: {md}\n")
        return EXIT_INTERRUPTED
    out.write(f"\nReport: {md}\nJSON:   {js}\n")
    out.flush()
    if session.status == SessionStatus.LOCKED:
        return EXIT_OK
    # The surface has shown why (once); this line is for scripts reading stderr.
    sys.stderr.write(f"No prompt was locked: the session is {session.status.value}.\n")
    return EXIT_NOT_LOCKED


def _engine(settings: Settings, args: argparse.Namespace) -> tuple[Engine, bool]:
    model = choose_model(settings, offline=args.offline, err=sys.stderr)
    pace = args.pace
    if pace is None and model.offline and sys.stdout.isatty():
        pace = OFFLINE_PACE
    if pace:
        model = PacedModel(model, chars_per_second=pace)
    return make_engine(model, settings), model.offline


def _terminal_prefix(settings: Settings) -> str:
    # Terminal sessions get keys of their own, so the Slack app's workers never take them.
    return f"{settings.redis_prefix}-terminal"


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    check_text(args)
    session = new_session(
        args.idea,
        persona=args.persona or settings.default_persona,
        target=args.target or settings.default_target,
        rounds=args.rounds if args.rounds is not None else settings.default_rounds,
        settings=settings,
    )
    session.origin = Origin(surface="terminal", user_name=_user_name())
    out_dir = prepare_out_dir(args.out)
    state = await open_state(settings, prefix=_terminal_prefix(settings), err=sys.stderr)
    try:
        engine, offline = _engine(settings, args)
        code = await attend(
            session,
            state=state,
            engine=engine,
            out_dir=out_dir,
            offline=offline,
            fresh=True,
            resume_with=resume_command(settings, args.env_path),
            settings_from=args.settings_from,
        )
    finally:
        await state.redis.aclose()
    if code != EXIT_OK or not args.render:
        return code
    from bot.render.terminal import read_report, render_session

    report = out_dir / f"session-{session.id}.json"
    return await render_session(
        read_report(report),
        settings=settings,
        out_dir=out_dir,
        renderer_name=None,
        tier="draft",
        resume=False,
        source=str(report),
        out=sys.stdout,
    )


async def _resume(args: argparse.Namespace, settings: Settings) -> int:
    check_text(args)
    if not _SESSION_ID.fullmatch(args.session_id):
        raise BadInput(f"{args.session_id!r} is not a session id (like 3f9c0a1b2d4e5f60).")
    if not settings.redis_url:
        raise BadInput(
            "resume needs REDIS_URL: only a session kept in Redis outlives the "
            "process that ran it (without REDIS_URL, `run` keeps sessions in memory)."
        )
    state = await open_state(settings, prefix=_terminal_prefix(settings), err=sys.stderr)
    try:
        session = await state.sessions.load(args.session_id)
        if session is None:
            raise BadInput(
                f"No session {args.session_id} in Redis at {redact(settings.redis_url)}: it "
                "expired, or it ran with another REDIS_URL or REDIS_PREFIX."
            )
        if session.status != SessionStatus.PAUSED:
            raise BadInput(
                f"Session {session.id} is {session.status.value}; only a paused session "
                "can be resumed."
            )
        out_dir = prepare_out_dir(args.out)
        engine, offline = _engine(settings, args)
        # What Slack's Retry button does: a retry command and a job for the next turn.
        await state.inbox.push(session.id, InboxEntry(kind="retry", author=_user_name()))
        await state.queue.enqueue(session.id, session.next_turn, session.origin.team_id)
        return await attend(
            session,
            state=state,
            engine=engine,
            out_dir=out_dir,
            offline=offline,
            fresh=False,
            resume_with=resume_command(settings, args.env_path),
            settings_from=args.settings_from,
        )
    finally:
        await state.redis.aclose()


async def _render(args: argparse.Namespace, settings: Settings) -> int:
    """`render SESSION_ID|REPORT.json`: the locked prompt becomes a clip beside the report."""
    check_text(args)
    from bot.render.terminal import read_report, render_session

    source = args.source
    path = Path(source)
    if source.endswith(".json") or path.is_file():  # noqa: ASYNC240 (one stat, at start)
        session = read_report(path)
        out_dir = prepare_out_dir(args.out) if args.out else path.parent
    else:
        if not _SESSION_ID.fullmatch(source):
            raise BadInput(
                f"{source!r} is neither a report (session-<id>.json) nor a session id "
                "(like 3f9c0a1b2d4e5f60)."
            )
        out_dir = prepare_out_dir(args.out or "out")
        report = out_dir / f"session-{source}.json"
        if report.is_file():
            session = read_report(report)
        elif settings.redis_url:
            state = await open_state(settings, prefix=_terminal_prefix(settings), err=sys.stderr)
            try:
                stored = await state.sessions.load(source)
            finally:
                await state.redis.aclose()
            if stored is None:
                raise BadInput(
                    f"No session {source}: no report {report}, and none in Redis at "
                    f"{redact(settings.redis_url)}."
                )
            session = stored
        else:
            raise BadInput(f"No report {report}: give the report's path, or --out its directory.")
    return await render_session(
        session,
        settings=settings,
        out_dir=out_dir,
        renderer_name=args.renderer,
        tier=args.tier,
        resume=args.resume,
        source=source,
        out=sys.stdout,
    )


async def _prompts(args: argparse.Namespace, settings: Settings) -> int:
    """Print what the model sees for a target and persona (`bot.review`)."""
    from bot import review

    check_text(args)
    session = new_session(
        args.idea or review.EXAMPLE_IDEA,
        persona=args.persona or settings.default_persona,
        target=args.target or settings.default_target,
        rounds=settings.default_rounds,
        settings=settings,
    )
    sections = await review.review(session, max_tokens=settings.max_output_tokens)
    sys.stdout.write(review.render(sections, session))
    return EXIT_OK


def _one_workspace(team: str) -> Callable[[Session], Awaitable[str | None]]:
    """A single-token worker's `admit`: only sessions of its token's workspace (a session
    of another, from a deployment sharing this Redis, would be run with the wrong token)."""

    async def admit(session: Session) -> str | None:
        other = session.origin.team_id
        if other and other != team:
            return f"no installation: this worker's token is for workspace {team}, not {other}"
        return None

    return admit


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BadInput(
            "sora-copilot worker needs REDIS_URL: workers and web processes share sessions "
            "through Redis, and an embedded store would be invisible to them."
        )
    config = WorkerConfig.from_settings(settings, concurrency=args.concurrency)  # refuses first
    oauth = oauth_enabled(settings)
    token_team: str | None = None
    if args.surface == "slack" and oauth:
        _require(
            "worker",
            {"INSTALLATION_ENCRYPTION_KEYS": settings.installation_encryption_keys},
            "in OAuth mode (SLACK_CLIENT_ID) the worker reads each workspace's bot token "
            "from the installation store, encrypted with these keys.",
        )
    elif args.surface == "slack":
        _require(
            "worker",
            {"SLACK_BOT_TOKEN": settings.slack_bot_token},
            "the worker posts each turn into its Slack thread with the bot token.",
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.surface == "slack" and not oauth:
        from bot.web import check_token

        token_team = await check_token(settings)  # as serve does: a token Slack refuses stops it
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr, app=True)
    model = choose_model(settings, offline=args.offline, err=sys.stderr)
    if model.offline and (args.offline_latency or args.offline_stream_seconds):
        model = OfflineModel(latency=args.offline_latency, stream_s=args.offline_stream_seconds)
    engine = make_engine(model, settings)
    from bot.slack.client import close_client, make_client

    client = None  # only the Slack surface talks to Slack
    workspaces = None
    # OAuth mode: a session of a workspace with no installation is set aside; with one
    # token, a session of another workspace than the token's.
    admit: Callable[[Session], Awaitable[str | None]] | None = None
    surface: Surface
    if args.surface == "recording":
        surface = RecordingSurface(state.redis, state.keys)
    elif oauth:
        from bot.slack.surface import SlackSurface
        from bot.slack.workspaces import WorkspaceSurface, open_workspaces

        try:
            workspaces = open_workspaces(settings, state.redis, state.keys, rate_limit_retries=0)
        except ValueError as e:
            raise BadInput(str(e)) from None

        def per_workspace(client: SlackClient, team_id: str) -> SlackSurface:
            return SlackSurface(client=client, state=state, settings=settings, workspace=team_id)

        routed = WorkspaceSurface(clients=workspaces, make=per_workspace)
        surface, admit = routed, routed.admit
    else:
        from bot.slack.surface import SlackSurface

        # 429s are the surface's to wait out, however long (see bot.slack.poster).
        client = make_client(settings, rate_limit_retries=0)
        surface = SlackSurface(client=client, state=state, settings=settings)
        if token_team is not None:
            admit = _one_workspace(token_team)
    from bot import render
    from bot.render.jobs import RenderRunner

    render_show: RenderShow | None = None
    if args.surface == "recording":
        from bot.surfaces.recording import RecordingRenderShow

        render_show = RecordingRenderShow(state.redis, state.keys)
    else:
        render_show = _slack_render_show(surface)
    renders = None
    if render_show is not None:
        renders = RenderRunner(
            state=state,
            show=render_show,
            renderers=lambda name: render.make(name, settings),
            lease_ttl_ms=config.lease_ttl_ms,
        )
    worker = Worker(
        state=state,
        engine=engine,
        surface=surface,
        renders=renders,
        config=config,
        on_lost=_lost_teller(client, workspaces, state, settings),
        on_store_full=_full_teller(client, workspaces, state, settings),
        admit=admit,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    served = await _serve_metrics(settings, state)
    sys.stderr.write(
        f"worker {worker.name} taking jobs (concurrency {worker.config.concurrency})"
        f"{_metrics_note(settings)}. {args.settings_from}\n"
    )
    try:
        await worker.run(stopping)
    finally:
        if served is not None:
            await served.cleanup()
        if client is not None:
            await close_client(client)
        if workspaces is not None:
            await workspaces.aclose()
    sys.stderr.write(f"worker {worker.name} stopped\n")
    return EXIT_OK


def _slack_render_show(surface: Surface) -> RenderShow:
    """Renders shown in their Slack threads, through their workspace's Slack surface."""
    from bot.slack.renders import SlackRenderShow
    from bot.slack.surface import SlackSurface
    from bot.slack.workspaces import WorkspaceSurface

    async def surface_for(team_id: str) -> SlackSurface:
        found = (
            await surface.for_team(team_id) if isinstance(surface, WorkspaceSurface) else surface
        )
        assert isinstance(found, SlackSurface)
        return found

    return SlackRenderShow(surface_for)


async def _serve_metrics(settings: Settings, state: State) -> web.AppRunner | None:
    """GET /metrics on METRICS_PORT, for this process (see bot.metrics); None if unset."""
    if settings.metrics_port is None:
        return None
    from bot import metrics

    try:
        return await metrics.start_server(
            settings.metrics_port, metrics.queue_refresher(state.queue)
        )
    except OSError as e:
        raise BadInput(
            f"METRICS_PORT {settings.metrics_port}: cannot serve /metrics there "
            f"({e.strerror or e}); pick a free port, one per process."
        ) from None


def _metrics_note(settings: Settings) -> str:
    port = settings.metrics_port
    return f", /metrics on port {port}" if port is not None else ""


def _slack_speaker(
    client: SlackClient | None, workspaces: Clients | None
) -> Callable[[str | None], Awaitable[SlackClient]] | None:
    """The client speaking for a workspace: the one client, or in OAuth mode each
    workspace's own; None without Slack."""
    if client is None and workspaces is None:
        return None

    async def speaker(team_id: str | None) -> SlackClient:
        if workspaces is not None:
            return await workspaces.for_team(team_id)
        assert client is not None
        return client

    return speaker


def _lost_teller(
    client: SlackClient | None, workspaces: Clients | None, state: State, settings: Settings
) -> Callable[[Lost], Awaitable[None]] | None:
    """How the worker tells a thread that its session's state is gone (Slack only)."""
    speaker = _slack_speaker(client, workspaces)
    if speaker is None:
        return None
    from bot.slack.lost import tell_lost, update_spender

    async def tell(lost: Lost) -> None:
        sid, channel, ts = lost.session_id, lost.channel, lost.thread_ts
        spend = update_spender(state, settings, lost.team_id, oauth=workspaces is not None)
        await tell_lost(
            await speaker(lost.team_id), session_id=sid, channel=channel, ts=ts, spend=spend
        )

    return tell


def _full_teller(
    client: SlackClient | None, workspaces: Clients | None, state: State, settings: Settings
) -> Callable[[Session, str], Awaitable[None]] | None:
    """How the worker tells a session's thread root that Redis is full (Slack only)."""
    speaker = _slack_speaker(client, workspaces)
    if speaker is None:
        return None
    from bot.slack.lost import note_on_root, update_spender

    async def tell(session: Session, why: str) -> None:
        o = session.origin
        if o.channel_id and o.thread_ts:
            line = (
                f":warning: {why}. This turn is not saved yet; it is tried again "
                "(tell whoever runs this app)."
            )
            spend = update_spender(state, settings, o.team_id, oauth=workspaces is not None)
            await note_on_root(
                await speaker(o.team_id), o.channel_id, o.thread_ts, line, spend=spend
            )

    return tell


# ---- `audit`: who did what ---------------------------------------------------------------

_SINCE = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: datetime) -> datetime:
    """`--since`: a duration back from now (30m, 24h, 7d) or an ISO date or time (UTC
    unless it names its zone); BadInput otherwise."""
    if m := _SINCE.fullmatch(text.strip()):
        return now - timedelta(seconds=int(m[1]) * _UNIT_S[m[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(
            f"--since {text!r}: give a duration (30m, 24h, 7d) or a date or time "
            "(2026-12-01, 2026-12-01T09:00)."
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def audit_line(entry: AuditEntry) -> str:
    who = entry.actor_name or entry.actor or "-"
    if entry.actor and entry.actor_name and entry.actor != entry.actor_name:
        who = f"{entry.actor_name} ({entry.actor})"
    at = entry.at.strftime("%Y-%m-%d %H:%M:%SZ")
    parts = [at, entry.team, entry.action, who, f"session {entry.session or '-'}"]
    if entry.detail:
        parts.append(entry.detail)
    return "  ".join(parts)


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    check_text(args)
    if not settings.redis_url:
        raise BadInput("sora-copilot audit needs REDIS_URL: the trail lives in the app's Redis.")
    since = parse_since(args.since, now=datetime.now(UTC)) if args.since else None
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    try:
        teams = [args.team] if args.team else await state.audit.teams()
        entries = [e for team in teams for e in await state.audit.read(team, since=since)]
    finally:
        await state.redis.aclose()
    entries.sort(key=lambda e: (e.at, e.team, e.id))
    for entry in entries:
        if args.json:
            sys.stdout.write(json.dumps(dataclasses.asdict(entry) | {"at": entry.at.isoformat()}))
            sys.stdout.write("\n")
        else:
            sys.stdout.write(audit_line(entry) + "\n")
    if not entries:
        when = f" since {since.isoformat()}" if since else ""
        sys.stderr.write(f"No audit entries{when}.\n")
    return EXIT_OK


async def _library_index(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BadInput("sora-copilot library-index needs REDIS_URL: the library lives there.")
    if args.team is not None and not re.fullmatch(r"[TE][A-Z0-9]{2,}", args.team):
        raise BadInput(f"--team takes a workspace id such as T0123ABCD, not {args.team!r}.")
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    try:
        n = await state.index.backfill(state.library, team_for_unknown=args.team)
    finally:
        await state.redis.aclose()
    sys.stdout.write(f"Indexed {n} library entries for the Home tab's search.\n")
    return EXIT_OK


async def _migrate_keys(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise BadInput("sora-copilot migrate-keys needs REDIS_URL: the data to move lives there.")
    if args.team is not None and not re.fullmatch(r"[TE][A-Z0-9]{2,}", args.team):
        raise BadInput(f"--team takes a workspace id such as T0123ABCD, not {args.team!r}.")
    from state.migrate import migrate_keys

    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    try:
        moved = await migrate_keys(state, team_for_unknown=args.team)
    except StateMisconfigured as e:
        raise BadInput(str(e)) from None
    finally:
        await state.redis.aclose()
    sys.stdout.write(moved.line() + "\n")
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
    if oauth_enabled(settings):
        _require(
            "serve",
            {
                "SLACK_SIGNING_SECRET": settings.slack_signing_secret,
                "INSTALLATION_ENCRYPTION_KEYS": settings.installation_encryption_keys,
            },
            "in OAuth mode (SLACK_CLIENT_ID) the signing secret checks that each request "
            "comes from Slack, and the keys encrypt each workspace's token in Redis.",
        )
    else:
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
    state = await open_state(
        settings, prefix=settings.redis_prefix, err=sys.stderr, web=True, app=True
    )
    from bot.web import serve

    await serve(
        settings=settings,
        state=state,
        host=args.host,
        port=args.port or settings.port,
        banner=args.settings_from,
    )
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
    from bot.app import build_app, socket_mode_handler
    from bot.slack.client import app_token_refusal, close_client, make_client
    from bot.slack.surface import SlackSurface
    from bot.web import check_token

    client = make_client(settings)
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    try:
        # Socket Mode cannot start without Slack: an unreachable Slack is one line, not a
        # warning and then the same failure again.
        await check_token(settings, require_slack=True)
        # The Socket Mode client retries a refused token forever; ask once, and say why.
        refusal = await app_token_refusal(client, app_token)
    except OSError as e:
        await close_client(client)
        raise BadInput(f"Slack is not reachable at {settings.slack_api_url}: {e}") from e
    except BaseException:
        await close_client(client)
        raise
    if refusal is not None:
        await close_client(client)
        raise BadInput(
            f"Slack refused SLACK_APP_TOKEN ({refusal}): it must be an "
            "app-level token (xapp-…) with connections:write, and Socket Mode must be on."
        )
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr, app=True)
    app = build_app(settings=settings, state=state, client=client)
    model = choose_model(settings, offline=args.offline, err=sys.stderr)
    worker = Worker(
        state=state,
        engine=make_engine(model, settings),
        surface=SlackSurface(client=client, state=state, settings=settings),
        config=WorkerConfig.from_settings(settings),
        on_lost=_lost_teller(client, None, state, settings),
        on_store_full=_full_teller(client, None, state, settings),
    )
    handler = socket_mode_handler(app, app_token)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    served = await _serve_metrics(settings, state)
    # slack_bolt leaves the Socket Mode handler's methods unannotated.
    await handler.connect_async()  # type: ignore[no-untyped-call]
    sys.stderr.write(
        f"Socket Mode connected; worker {worker.name} taking jobs{_metrics_note(settings)}. "
        f"Ctrl-C stops. {args.settings_from}\n"
    )
    try:
        await worker.run(stopping)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        if served is not None:
            await served.cleanup()
        await close_client(client)
    return EXIT_OK


TERMINAL_USER = "the person at the terminal"


def _user_name() -> str:
    """The person at the terminal, as the transcript names them: their real name where the
    system knows one, never a bare login such as `root`."""
    try:
        login = getpass.getuser()
        real = pwd.getpwnam(login).pw_gecos.split(",")[0].strip()
    except (KeyError, OSError):
        return TERMINAL_USER
    return real if real and real.lower() != login.lower() else TERMINAL_USER


def _pace(text: str) -> float:
    try:
        pace = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= pace <= 1_000_000:  # also refuses nan and inf
        raise argparse.ArgumentTypeError("give characters per second, 0 or more")
    return pace


def _shipped(kind: str) -> str:
    """The names of the shipped personas or targets, for help texts."""
    folder = Path(__file__).parent / "dialogue" / kind
    return ", ".join(sorted(p.stem for p in folder.glob("*.toml")))


def _concurrency(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_CONCURRENCY} sessions at once")
    return n


MAX_CONCURRENCY = 1000  # as WORKER_CONCURRENCY allows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sora-copilot",
        description="A persona and the Sora Copilot write a text-to-video prompt together.",
    )
    # Every command reads its settings from the environment and one .env file.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        metavar="PATH",
        help=f"the .env file to read (default: ${ENV_FILE_VARIABLE}, else .env in this "
        "folder, else the project's .env); the environment wins over it",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        parents=[common],
        help="run a whole session in this terminal",
        description="Run a whole session in this terminal: the persona and the Sora Copilot "
        "talk until a draft is locked, then the report is written. Type a line and press "
        "Enter to interject. Uses Claude when ANTHROPIC_API_KEY is set, else the offline "
        "model. Exit codes: 0 locked, 1 not locked, 2 bad input, 130 Ctrl-C.",
    )
    run.add_argument("idea", help="the video idea, in quotes")
    run.add_argument(
        "--persona",
        help=f"{_shipped('personas')}, or free text such as "
        '"a 1970s Italian horror director" (default: DEFAULT_PERSONA, founder)',
    )
    run.add_argument(
        "--rounds",
        type=int,
        help=f"at most this many rounds, {MIN_ROUNDS}-{MAX_ROUNDS} "
        f"(default: DEFAULT_ROUNDS, {DEFAULT_ROUNDS})",
    )
    run.add_argument(
        "--target",
        help=f"the video model the prompt is for: {_shipped('targets')} "
        "(default: DEFAULT_TARGET, sora-2)",
    )
    run.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    run.add_argument("--out", default="out", help="where to write the report (default: out/)")
    run.add_argument(
        "--pace",
        type=_pace,
        help="characters per second at which messages appear; 0 at once (default: "
        f"{OFFLINE_PACE:g} for the offline model in a terminal, else 0)",
    )
    run.add_argument(
        "--render",
        action="store_true",
        help="render the locked prompt into a clip beside the report (offline without keys)",
    )
    resume = sub.add_parser(
        "resume",
        parents=[common],
        help="continue a paused terminal session in this terminal (needs REDIS_URL)",
        description="Continue a paused terminal session where it stopped. Needs the same "
        "REDIS_URL (and REDIS_PREFIX) as the run that paused it.",
    )
    resume.add_argument("session_id", help="the id `run` printed, e.g. 3f9c0a1b2d4e5f60")
    resume.add_argument(
        "--offline", action="store_true", help="use the deterministic offline model"
    )
    resume.add_argument("--out", default="out", help="where to write the report (default: out/)")
    resume.add_argument("--pace", type=_pace, help="as for run")
    rend = sub.add_parser(
        "render",
        parents=[common],
        help="render a locked prompt into a video clip beside its report",
        description="Render a locked prompt into a video clip beside its report, with a "
        "vendor's API (Veo, Omni, Runway: their keys in the settings) or offline.",
    )
    rend.add_argument("source", help="a report (out/session-<id>.json) or a session id")
    rend.add_argument(
        "--renderer",
        help="veo, omni, runway or offline (default: the target's first configured one, "
        "else offline)",
    )
    rend.add_argument(
        "--tier",
        choices=["draft", "master"],
        default="draft",
        help="draft: the renderer's cheapest tier (default); master: full quality",
    )
    rend.add_argument("--out", help="where to write the clip (default: beside the report)")
    rend.add_argument(
        "--resume", action="store_true", help="pick up a render that Ctrl-C left running"
    )
    prompts = sub.add_parser(
        "prompts",
        parents=[common],
        help="print what the model sees: system prompts, first messages, reply schemas",
        description="Print exactly what the model is sent for a target and persona: each "
        "agent's system prompt, its first user message and its reply schema, with sizes.",
    )
    prompts.add_argument("--target", help="the target video model profile, e.g. veo-3.1")
    prompts.add_argument("--persona", help='a persona name, or free text: "a pastry chef"')
    prompts.add_argument("--idea", help="the idea in the first messages (default: an example)")
    work = sub.add_parser(
        "worker",
        parents=[common],
        help="take turn jobs from Redis and post them to Slack (needs REDIS_URL)",
        description="A worker process: takes turn jobs from Redis, calls the model and "
        "posts each turn into its Slack thread. Run as many as you like beside `serve`. "
        "Needs REDIS_URL, and SLACK_BOT_TOKEN (or the OAuth settings); SIGTERM drains it "
        "(DRAIN_SECONDS).",
    )
    work.add_argument(
        "--concurrency",
        type=_concurrency,
        help="sessions worked on at once (default: WORKER_CONCURRENCY, 50)",
    )
    work.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    # For tests only: turns recorded in Redis instead of Slack, a slow offline model.
    work.add_argument(
        "--surface", choices=["slack", "recording"], default="slack", help=argparse.SUPPRESS
    )
    work.add_argument("--offline-latency", type=float, default=0.0, help=argparse.SUPPRESS)
    # Seconds over which each offline reply's message streams after its latency (benches).
    work.add_argument("--offline-stream-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    aud = sub.add_parser(
        "audit",
        parents=[common],
        help="who did what: the audit trail of each workspace (needs REDIS_URL)",
        description="Print the audit trail, oldest first: every start, interjection, stop, "
        "lock, retry, deletion, render and settings change, and every lock, with who, when "
        "and the session. Needs the app's REDIS_URL (and REDIS_PREFIX).",
    )
    aud.add_argument("--team", help="one workspace's id (T…); default: every workspace")
    aud.add_argument(
        "--since", help="a duration back from now (30m, 24h, 7d) or a date or time (UTC)"
    )
    aud.add_argument("--json", action="store_true", help="one JSON object a line")
    reindex = sub.add_parser(
        "library-index",
        parents=[common],
        help="index the prompt library for the Home tab's search (needs REDIS_URL)",
        description="Add every locked prompt already in the library to its workspace's "
        "search index, once, after upgrading to a build with the Home tab. Entries locked "
        "before workspaces were recorded go to --team.",
    )
    reindex.add_argument("--team", help="the workspace (T…) of entries that name none")
    migrate = sub.add_parser(
        "migrate-keys",
        parents=[common],
        help="move data of the key layout before workspaces to the current one (needs REDIS_URL)",
        description="Move sessions, jobs, library entries and renders written before keys "
        "named their workspace (and carried Redis Cluster hash tags) to the current layout, "
        "on the one Redis they live on. Idempotent: run it once after upgrading, with the "
        "workers stopped; running it again moves nothing. Sessions and entries that name no "
        "workspace go to --team.",
    )
    migrate.add_argument("--team", help="the workspace (T…) of data that names none")
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="the Slack web process: /slack/events and /healthz (needs REDIS_URL)",
        description="The Slack web process: answers Slack's requests on /slack/events "
        "(signed; slash command, events, buttons) and GET /healthz, and hands sessions to "
        "workers through Redis. Needs REDIS_URL and SLACK_SIGNING_SECRET, and SLACK_BOT_TOKEN "
        "for one workspace or the OAuth settings (SLACK_CLIENT_ID, …) for many.",
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT, 3000)")
    dev = sub.add_parser(
        "dev",
        parents=[common],
        help="Socket Mode and a worker in one process, for development (SLACK_APP_TOKEN)",
        description="For development without a public host: connects to Slack over Socket "
        "Mode and runs a worker in the same process. Needs SLACK_BOT_TOKEN and "
        "SLACK_APP_TOKEN (xapp-…, connections:write); uses the embedded store without "
        "REDIS_URL.",
    )
    dev.add_argument("--offline", action="store_true", help="use the deterministic offline model")
    inst = sub.add_parser(
        "installations",
        parents=[common],
        help="OAuth installations: encryption keys",
        description="Manage the keys that encrypt each workspace's installation (OAuth "
        "mode): print a new key, or re-encrypt every installation after a rotation.",
    )
    inst.add_argument(
        "action",
        choices=["new-key", "reencrypt"],
        help="new-key: print a fresh key for INSTALLATION_ENCRYPTION_KEYS; reencrypt: rewrite "
        "every stored installation under the first key (after a rotation; needs REDIS_URL)",
    )
    return parser


async def _installations(args: argparse.Namespace, settings: Settings) -> int:
    from state.installations import Cipher, RedisInstallationStore, new_key

    if args.action == "new-key":
        sys.stdout.write(new_key() + "\n")
        return EXIT_OK
    if not settings.redis_url:
        raise BadInput("sora-copilot installations reencrypt needs REDIS_URL.")
    raw = settings.installation_encryption_keys
    try:
        cipher = Cipher.from_setting(raw.get_secret_value() if raw else "")
    except ValueError as e:
        raise BadInput(str(e)) from None
    state = await open_state(settings, prefix=settings.redis_prefix, err=sys.stderr)
    try:
        count = await RedisInstallationStore(state.redis, state.keys, cipher).reencrypt_all()
    finally:
        await state.redis.aclose()
    sys.stderr.write(f"re-encrypted {count} installation records under the first key\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    # Started with stdout or stderr closed (`>&-`): write to nowhere rather than crash.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")
    # Reports and streamed text are UTF-8 whatever the terminal's locale says.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8")
    sys.stderr = cast(TextIO, Output(sys.stderr))  # `2>/dev/full` costs messages, not a crash
    args = build_parser().parse_args(argv)
    try:
        env_file = find_env_file(args.env_file)
        settings = load_settings(env_file)
        args.env_path, args.settings_from = env_file, describe_env_file(env_file)
        if args.command == "run":
            _quiet_logging()
            return asyncio.run(_run(args, settings))
        if args.command == "resume":
            _quiet_logging()
            return asyncio.run(_resume(args, settings))
        if args.command == "render":
            _quiet_logging()
            return asyncio.run(_render(args, settings))
        if args.command == "prompts":
            return asyncio.run(_prompts(args, settings))
        if args.command == "worker":
            return asyncio.run(_worker(args, settings))
        if args.command == "audit":
            return asyncio.run(_audit(args, settings))
        if args.command == "library-index":
            return asyncio.run(_library_index(args, settings))
        if args.command == "migrate-keys":
            return asyncio.run(_migrate_keys(args, settings))
        if args.command == "serve":
            return asyncio.run(_serve(args, settings))
        if args.command == "dev":
            return asyncio.run(_dev(args, settings))
        if args.command == "installations":
            return asyncio.run(_installations(args, settings))
    except (BadInput, SettingsError, StateError, RenderError) as e:  # StateError: Unavailable, …
        sys.stderr.write(f"sora-copilot: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
