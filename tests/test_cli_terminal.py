"""`sora-copilot run` in a real pseudo-terminal, as a person at a keyboard meets it.

Each test starts the CLI with a pty as its stdin, stdout and stderr, so it takes
the terminal path: rich output, the keyboard read by the event loop, the offline
model at a reading pace. A thread drains the pty (a full pty buffer would block
the CLI) and the test polls what it has read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import run_cli

COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")
_DROPPED = ("ANTHROPIC_", "SLACK_", "REDIS_URL", "PORT", "NO_COLOR")


class PtyRun:
    """`sora-copilot <args>` in a pseudo-terminal of 100x30."""

    def __init__(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, background: bool = False
    ):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
        command = [sys.executable, "-m", "bot.cli", *args]
        if background:  # `sora-copilot run … &` from a shell with job control
            command = ["bash", "-c", 'set -m; "$@" & wait $!', "bash", *command]
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**base, "TERM": "xterm-256color", **(env or {})},
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            # Its own session, with the pty as its controlling terminal and itself in the
            # foreground: Ctrl-C typed at the pty reaches it as SIGINT, as in a shell.
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        self._out = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every slave end is closed
                return
            if not data:
                return
            with self._lock:
                self._out += data

    @property
    def output(self) -> str:
        with self._lock:
            return self._out.decode("utf-8", "replace")

    def wait_for(self, text: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.output:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}; output:\n{self.output[-3000:]}")
            time.sleep(0.05)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode("utf-8"))

    def wait(self, within: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"did not exit by itself; output:\n{self.output[-3000:]}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.slave)
        self._reader.join(timeout=5)
        os.close(self.master)


Start = Callable[..., PtyRun]


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Start]:
    runs: list[PtyRun] = []

    def start(*args: str, env: dict[str, str] | None = None, background: bool = False) -> PtyRun:
        run = PtyRun(*args, cwd=tmp_path, env=env, background=background)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def _report(tmp_path: Path) -> dict[str, Any]:
    [data] = list((tmp_path / "out").glob("session-*.json"))
    session: dict[str, Any] = json.loads(data.read_text(encoding="utf-8"))["session"]
    return session


def test_run_in_a_terminal_ends_by_itself_after_the_report(terminal: Start, tmp_path: Path) -> None:
    run = terminal("run", "A lighthouse keeper finds a message", "--rounds", "2", "--pace", "5000")
    assert run.wait() == 0, run.output
    out = run.output
    assert "Report: out/session-" in out
    assert "Traceback" not in out and "Exception ignored" not in out
    assert _report(tmp_path)["status"] == "locked"
    # The keyboard gave the terminal back its echo and line editing.
    lflag = termios.tcgetattr(run.slave)[3]
    assert lflag & termios.ECHO and lflag & termios.ICANON


def test_one_ctrl_c_mid_session_exits_130_with_a_report(terminal: Start, tmp_path: Path) -> None:
    run = terminal("run", "A lighthouse keeper finds a message", "--rounds", "6", "--pace", "100")
    run.wait_for("Round 1 of 6")  # the opening, and its draft v1, are saved
    run.type("\x03")  # Ctrl-C: the terminal sends SIGINT
    assert run.wait() == 130, run.output
    out = run.output
    assert "Stopped. Report: out/session-" in out
    assert "Traceback" not in out and "Exception ignored" not in out
    session = _report(tmp_path)
    assert session["status"] == "stopped"
    md = next((tmp_path / "out").glob("session-*.md")).read_text(encoding="utf-8")
    assert "The latest draft, v1, not locked" in md


def test_a_line_typed_mid_session_is_heard_as_a_human_turn(terminal: Start, tmp_path: Path) -> None:
    run = terminal("run", "A lighthouse keeper finds a message", "--rounds", "4", "--pace", "150")
    run.wait_for("Sora Copilot · Opening")
    run.type("more fog, pl")
    run.type("\x7f\x7fplease\r")  # two backspaces: the line is edited, not echoed raw
    assert run.wait() == 0, run.output
    humans = [t for t in _report(tmp_path)["turns"] if t["speaker"] == "human"]
    assert [h["text"] for h in humans] == ["more fog, please"]
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.output)
    assert "sent: more fog, please" in shown  # under the input line while it waits
    assert "(you) ─" in shown  # then a turn of its own on screen
    assert "Traceback" not in run.output


def test_a_background_job_runs_to_its_end_without_touching_the_keyboard(
    terminal: Start, tmp_path: Path
) -> None:
    # Setting the terminal's mode from the background would stop the job (SIGTTOU).
    run = terminal("run", "A fox", "--rounds", "1", "--pace", "5000", background=True)
    assert run.wait(within=60) == 0, run.output
    assert _report(tmp_path)["status"] == "locked"


def test_no_color_keeps_the_layout_without_colour(terminal: Start, tmp_path: Path) -> None:
    run = terminal(
        "run", "A lighthouse keeper", "--rounds", "1", "--pace", "5000", env={"NO_COLOR": "1"}
    )
    assert run.wait() == 0, run.output
    assert "Sora Copilot · Opening" in run.output
    assert not COLOUR.search(run.output), COLOUR.findall(run.output)[:3]


def test_without_a_terminal_the_output_is_plain(tmp_path: Path) -> None:
    p = run_cli("run", "A **bold** idea", "--rounds", "1", cwd=tmp_path)
    assert p.returncode == 0
    assert b"\x1b[" not in p.stdout  # no colour, no cursor movement


def test_a_note_typed_during_the_last_turn_is_answered_too_late_and_kept_in_the_report(
    terminal: Start, tmp_path: Path
) -> None:
    run = terminal("run", "A fox crosses a frozen river at dawn", "--rounds", "1", "--pace", "100")
    run.wait_for("Sora Copilot · Round 1")  # the last turn: its draft is locked as final
    run.type("make it snow\r")
    assert run.wait() == 0, run.output
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.output)
    assert "too late: the session is locked; “make it snow” was not heard" in shown
    assert "(you) ─" not in shown  # never shown as if it joined the dialogue
    session = _report(tmp_path)
    assert [n["text"] for n in session["unheard"]] == ["make it snow"]
    assert not [t for t in session["turns"] if t["speaker"] == "human"]
    md = next((tmp_path / "out").glob("session-*.md")).read_text(encoding="utf-8")
    assert "**Notes not heard** (typed after the last turn started): 1" in md
    assert "make it snow" in md
