"""Lines typed at the terminal during a session, read by the event loop itself.

A thread blocked in `sys.stdin.readline` cannot be cancelled, and the
interpreter waits for it at exit: `run` would hang after its report until
Enter was pressed. So stdin is watched with the loop's `add_reader` and read
only when it has bytes: nothing outlives the session.

Two modes. `edit=True` (a rich terminal) turns off the terminal's own echo and
line editing and keeps the line being typed in our hands, so the surface can
draw it apart from the streamed text; Ctrl-C still sends SIGINT. `edit=False`
leaves the terminal as it is and takes whole lines.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import termios
from collections.abc import Callable
from typing import Any

_BACKSPACE = ("\x7f", "\x08")
_KILL_LINE = "\x15"  # Ctrl-U
_KILL_WORD = "\x17"  # Ctrl-W


class Keyboard:
    def __init__(
        self,
        *,
        on_line: Callable[[str], None],
        on_edit: Callable[[str], None] | None = None,
        edit: bool = False,
        max_chars: int = 4000,
        fd: int | None = None,
    ):
        self.on_line = on_line
        self.on_edit = on_edit
        self.edit = edit
        self.max_chars = max_chars
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.line = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._saved: list[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._escape = False
        self._ss3 = False

    def start(self) -> bool:
        """Watch stdin; False (and nothing changed) when it cannot be watched."""
        loop = asyncio.get_running_loop()
        if self.edit:
            try:
                self._saved = termios.tcgetattr(self.fd)
                mode = termios.tcgetattr(self.fd)
                mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: keep ISIG for Ctrl-C
                mode[6][termios.VMIN] = 1
                mode[6][termios.VTIME] = 0
                termios.tcsetattr(self.fd, termios.TCSANOW, mode)
            except (termios.error, OSError):
                self._saved = None
                self.edit = False
        try:
            loop.add_reader(self.fd, self._readable)
        except (OSError, ValueError, NotImplementedError):
            self._restore()
            return False
        self._loop = loop
        return True

    def close(self) -> None:
        """Stop watching stdin and give the terminal back its own echo and editing."""
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)
            self._loop = None
        self._restore()

    def _restore(self) -> None:
        if self._saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
            self._saved = None

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # the terminal went away
        if not data:
            if self._loop is not None:
                self._loop.remove_reader(self.fd)
                self._loop = None
            return
        text = self._decoder.decode(data)
        if self.edit:
            self._keys(text)
        else:
            self.line += text
            *lines, self.line = self.line.split("\n")
            for line in lines:
                self._submit(line)

    def _keys(self, text: str) -> None:
        before: str | None = self.line
        for ch in text:
            if self._escape:  # skip an arrow key's escape sequence: ESC [ … final, ESC O x
                self._escape = ch in "[O0123456789;" and not (ch == "O" and self._ss3)
                self._ss3 = ch == "O"
                continue
            if ch == "\x1b":
                self._escape, self._ss3 = True, False
            elif ch in ("\r", "\n"):
                line, self.line = self.line, ""
                self._submit(line)
                before = None  # always redraw after a submit
            elif ch in _BACKSPACE:
                self.line = self.line[:-1]
            elif ch == _KILL_LINE:
                self.line = ""
            elif ch == _KILL_WORD:
                self.line = self.line.rstrip()
                self.line = self.line[: self.line.rfind(" ") + 1] if " " in self.line else ""
            elif ch >= " " and len(self.line) < self.max_chars:
                self.line += ch
        if self.on_edit is not None and self.line != before:
            self.on_edit(self.line)

    def _submit(self, line: str) -> None:
        line = line.strip()
        if line:
            self.on_line(line)
