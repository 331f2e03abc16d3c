"""The terminal surfaces for `sora-copilot run`: each turn shown as it streams.

`PlainSurface` writes plain text: for pipes, files and tests, and whatever
reads them. `RichSurface` is for a person at a terminal: each turn's Markdown
rendered as it streams, each speaker in its own colour, a one-line status
while a model call is waiting, and the line being typed kept at the bottom,
apart from the streamed text. rich honours NO_COLOR (no colour, same layout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.padding import Padding
from rich.rule import Rule
from rich.segment import Segment, Segments
from rich.spinner import Spinner
from rich.text import Text

from bot.dialogue.engine import TurnSink
from bot.dialogue.models import Draft, Session, Speaker, Turn
from bot.dialogue.report import LOCK_REASONS, fence, ready_prompt
from bot.dialogue.text import as_markdown, as_text, clean
from bot.surfaces.base import event_steps, waiting_notice

INVALID_REPLY = "(that reply is void; it is written again)"
INTERJECT_HINT = "type a note and press Enter to interject; Ctrl-C stops"


class Output:
    """stdout that survives its reader going away (`| head`, a full disk, a closed pipe).

    The first failed write calls `on_gone` once (the CLI stops the session, which
    otherwise would wait forever on a surface that cannot show it) and every later
    write is dropped. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: TextIO, on_gone: Callable[[], None] = lambda: None):
        self.stream = stream
        self.on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except OSError:
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except OSError:
                self._lost()

    def _lost(self) -> None:
        self.gone = True
        # Python flushes stdout at exit and would complain there about the same pipe.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        self.on_gone()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _excerpt(text: str, limit: int = 80) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1].rstrip() + "…"


def rounds_phrase(n: int) -> str:
    return f"at most {n} round" + ("" if n == 1 else "s")


# The command that resumes a session id, as it can be typed (with the settings it needs).
ResumeCommand = Callable[[str], str]


def paused_note(session: Session, *, resume_command: ResumeCommand | None) -> str:
    """What a person can do about a paused session, from where it is stored (None: the
    session lives only in this process)."""
    if resume_command is not None:
        return f"Resume it with: {resume_command(session.id)}"
    return (
        "It cannot be resumed: it lived in the embedded in-process store, which ends with "
        "this process. With REDIS_URL set, sessions outlive the process and can be resumed."
    )


def _turn_label(session: Session, author: str, round: int) -> str:
    return f"{author} · " + ("Opening" if round == 0 else f"Round {round} of {session.max_rounds}")


def _draft_line(d: Draft) -> str:
    return f"Draft v{d.version}: {d.title} · {d.duration_seconds}s · {d.size}"


class _PrintSink:
    def __init__(self, out: TextIO):
        self.out = out
        self.wrote = False  # a reset before any text has nothing to take back

    async def delta(self, text: str) -> None:
        self.wrote = True
        self.out.write(clean(text))  # a model's stream, before any model cleaned it
        self.out.flush()

    async def reset(self) -> None:
        if self.wrote:
            self.wrote = False
            self.out.write(f"\n  {INVALID_REPLY}\n")
            self.out.flush()


class PlainSurface:
    """Plain text, line by line: what a pipe, a file or a test reads."""

    def __init__(self, out: TextIO, *, resume_command: ResumeCommand | None = None):
        self.out = out
        self.resume_command = resume_command
        self.steps = event_steps(self)

    def _say(self, text: str) -> None:
        self.out.write(as_text(text))
        self.out.flush()

    # ---- what the CLI says around the session -------------------------------------------

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def note(self, text: str) -> None:
        self._say(f"{text}\n")

    def edit(self, line: str) -> None:
        pass  # the terminal echoes what is typed

    def sent(self, author: str, text: str) -> None:
        self.note("  (queued: the next speaker will answer it)")

    def too_late(self, author: str, text: str, status: str) -> None:
        """A note that no turn will hear: the session ended first."""
        self.note(f"  too late: the session is {status}; “{_excerpt(text)}” was not heard")

    # ---- the Surface protocol -----------------------------------------------------------

    async def turn_started(
        self,
        session: Session,
        *,
        speaker: Speaker,
        author: str,
        turn: int,
        round: int,
        posted: Mapping[int, str],
        redo: bool = False,
    ) -> TurnSink:
        self._say(f"\n── {_turn_label(session, author, round)} ──\n")
        return _PrintSink(self.out)

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        self._say("\n")
        if turn.draft is not None:
            self._say(f"\n  {_draft_line(turn.draft)}\n" + fence(turn.draft.prompt_text) + "\n")
        if turn.verdict is not None and turn.verdict.decision == "approve":
            self._say(f"\n  ✔ {turn.author} approves v{turn.verdict.version}\n")

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        self._say(f"\n── {turn.author} (you) ──\n{turn.text}\n")

    async def session_locked(self, session: Session) -> None:
        locked = session.locked
        if locked is None:
            return
        d = locked.draft
        self._say(
            f'\n══ Locked: v{d.version} "{d.title}" ({LOCK_REASONS[locked.reason]}) ══\n'
            + fence(d.prompt_text)
            + "\n"
            + "".join(f"{line}\n" for line in _use_lines(d, session))
        )

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        self._say(f"\n.. {waiting_notice(seconds, status)} ({reason})\n")

    async def session_paused(self, session: Session) -> None:
        self._say(
            f"\n!! The session is paused: {session.error}\n"
            f"   {paused_note(session, resume_command=self.resume_command)}\n"
        )

    async def session_stopped(self, session: Session) -> None:
        self._say(f"\n── Stopped by {session.stopped_by} ──\n")


# ---- a person at a terminal ------------------------------------------------------------

_COLOURS = {Speaker.COPILOT: "cyan", Speaker.PERSONA: "magenta", Speaker.HUMAN: "yellow"}
_FENCE = "```"


def _split_blocks(text: str) -> tuple[str, str]:
    """(complete Markdown blocks, the rest): cut at the last blank line outside a fence."""
    cut = len(text)
    while True:
        cut = text.rfind("\n\n", 0, cut)
        if cut < 0:
            return "", text
        if text.count(_FENCE, 0, cut) % 2 == 0:
            return text[:cut], text[cut + 2 :]


class _RichSink:
    def __init__(self, surface: RichSurface):
        self.surface = surface

    async def delta(self, text: str) -> None:
        self.surface.stream(text)

    async def reset(self) -> None:
        self.surface.stream_reset()


class RichSurface:
    """Markdown, colours, a status line and a kept-apart input line, for a real terminal.

    Finished blocks are printed once, above a small live region that holds the
    paragraph still being written, the status line and the input line. The
    region is redrawn by the event loop (no refresh thread), and only on change
    or by the status line's ticker.
    """

    def __init__(
        self,
        console: Console,
        *,
        resume_command: ResumeCommand | None = None,
        interactive: bool = False,
    ):
        self.console = console
        self.resume_command = resume_command
        self.interactive = interactive
        self.steps = event_steps(self)
        self._buf = ""
        self._spinner: Spinner | None = None
        self._line = ""
        self._ticker: asyncio.Task[None] | None = None
        self._streamed = False  # text of this turn has been shown
        self._sent: list[tuple[str, str]] = []  # interjections queued, not yet on screen
        self._until: float | None = None
        self._outage_status: int | None = 529
        self.live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self._region,
        )

    # ---- what the CLI says around the session -------------------------------------------

    def start(self) -> None:
        self.live.start()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._flush(everything=True)
        self._print_sent()
        self._spinner = None
        self.interactive = False
        with contextlib.suppress(Exception):
            self.live.stop()

    def note(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style))
        self._refresh()

    def edit(self, line: str) -> None:
        self._line = line
        self._refresh()

    def sent(self, author: str, text: str) -> None:
        """An interjection was queued: it waits under the input line, and joins the
        transcript on screen where the next speaker starts, the one who answers it."""
        self._sent.append((author, text))
        self._refresh()

    def too_late(self, author: str, text: str, status: str) -> None:
        """A note that no turn will hear: the session ended first. It leaves the queue under
        the input line (where it would otherwise be shown as if it joined the dialogue)."""
        self._sent = [(a, t) for a, t in self._sent if (a, t) != (author, text)]
        self.note(
            f"too late: the session is {status}; “{_excerpt(text)}” was not heard",
            style="yellow",
        )

    def _print_sent(self) -> None:
        colour = _COLOURS[Speaker.HUMAN]
        for author, text in self._sent:
            self.console.print()
            self.console.print(
                Rule(Text(f"{author} (you)", style=f"bold {colour}"), style=colour, align="left")
            )
            self.console.print(Text(text))
        self._sent.clear()

    # ---- the live region -----------------------------------------------------------------

    def _region(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._buf.strip():
            parts.append(self._tail(Markdown(as_markdown(self._buf))))
        if self._spinner is not None:
            parts.append(self._spinner)
        for _, text in self._sent:
            parts.append(Text.assemble(("  sent: ", "dim yellow"), (text, "dim")))
        if self.interactive:
            hint = Text(self._line) if self._line else Text(INTERJECT_HINT, style="dim")
            parts.append(Text.assemble(("› ", "bold yellow"), hint))
        return Group(*parts)

    def _tail(self, renderable: RenderableType) -> RenderableType:
        """The last lines of `renderable` that fit above the status and input lines: a
        live region taller than the screen cannot be redrawn in place."""
        room = max(self.console.height - 3, 1)
        lines = self.console.render_lines(renderable, self.console.options, pad=False)
        if len(lines) <= room:
            return renderable
        return Segments([seg for line in lines[-room:] for seg in (*line, Segment.line())])

    def _refresh(self) -> None:
        if self.live.is_started:
            self.live.refresh()

    def _wait(self, status: str, *, style: str = "dim", until: float | None = None) -> None:
        """Show `status` on the one-line status, until the next text arrives; with `until`
        (a loop time), a countdown to it."""
        self._spinner = Spinner("dots", Text(status, style=style))
        self._until = until
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        self._refresh()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self._spinner is not None:
            if self._until is not None:
                left = max(self._until - loop.time(), 0)
                self._spinner.update(
                    text=Text(waiting_notice(left, self._outage_status), style="yellow")
                )
            self._refresh()
            await asyncio.sleep(0.1)

    def _flush(self, *, everything: bool = False) -> None:
        done, self._buf = (self._buf, "") if everything else _split_blocks(self._buf)
        if done.strip():
            self.console.print(Markdown(as_markdown(done)))

    def stream(self, text: str) -> None:
        self._spinner = None
        self._streamed = True
        self._buf += text
        self._flush()
        self._refresh()

    def stream_reset(self) -> None:
        if self._streamed:
            self.console.print(Text(f"  {INVALID_REPLY}", style="dim"))
        self._buf, self._streamed = "", False
        self._refresh()

    # ---- the Surface protocol -----------------------------------------------------------

    async def turn_started(
        self,
        session: Session,
        *,
        speaker: Speaker,
        author: str,
        turn: int,
        round: int,
        posted: Mapping[int, str],
        redo: bool = False,
    ) -> TurnSink:
        self._print_sent()
        colour = _COLOURS[speaker]
        self.console.print()
        self.console.print(
            Rule(
                Text(_turn_label(session, author, round), style=f"bold {colour}"),
                style=colour,
                align="left",
            )
        )
        self._buf, self._streamed = "", False
        self._wait(f"{author} is writing…")
        return _RichSink(self)

    async def turn_finished(self, session: Session, turn: Turn) -> None:
        self._spinner = None
        self._flush(everything=True)
        if turn.draft is not None:
            d = turn.draft
            self.console.print()
            self.console.print(Text(f"  {_draft_line(d)}", style="bold"))
            self.console.print(Padding(Text(d.prompt_text), (0, 0, 0, 4)))
        if turn.verdict is not None and turn.verdict.decision == "approve":
            self.console.print(
                Text(f"  ✔ {turn.author} approves v{turn.verdict.version}", style="bold green")
            )
        self._refresh()

    async def interjection_heard(self, session: Session, turn: Turn) -> None:
        colour = _COLOURS[Speaker.HUMAN]
        self.console.print()
        self.console.print(
            Rule(Text(f"{turn.author} (you)", style=f"bold {colour}"), style=colour, align="left")
        )
        self.console.print(Text(turn.text))
        self._refresh()

    async def session_locked(self, session: Session) -> None:
        locked = session.locked
        if locked is None:
            return
        d = locked.draft
        self._spinner = None
        self.console.print()
        self.console.print(Rule(style="green", characters="═"))
        self.console.print(
            Text(
                f'Locked: v{d.version} "{d.title}" ({LOCK_REASONS[locked.reason]})',
                style="bold green",
            )
        )
        self.console.print(Padding(Text(d.prompt_text), (0, 0, 0, 2)))
        for line in _use_lines(d, session):
            self.console.print(Text(line, style="green"))
        self._refresh()

    async def model_waiting(
        self, session: Session, seconds: float, reason: str, status: int | None = 529
    ) -> None:
        notice = waiting_notice(seconds, status)
        self.console.print(Text(f"  {notice} ({reason})", style="yellow"))
        until = asyncio.get_running_loop().time() + seconds
        self._outage_status = status
        self._wait(notice, style="yellow", until=until)

    async def session_paused(self, session: Session) -> None:
        self._spinner = None
        self._flush(everything=True)
        self.console.print()
        self.console.print(Text(f"The session is paused: {session.error}", style="bold red"))
        self.console.print(
            Text(paused_note(session, resume_command=self.resume_command), style="red")
        )
        self._refresh()

    async def session_stopped(self, session: Session) -> None:
        self._spinner = None
        self.console.print(Text(f"\nStopped by {session.stopped_by}", style="bold"))
        self._refresh()


def _use_lines(d: Draft, session: Session) -> list[str]:
    """Beside the locked prompt: the parameters the target needs, and how to use it."""
    r = ready_prompt(d, session.target)
    lines = [f"{k}: {v}" for k, v in r.parameters] + [r.how_to_use]
    if r.retired:
        lines.append(f"{r.retired}.")
    return lines
