"""Pull the `message` field out of a JSON reply while it is still being written.

Agents reply with JSON whose first key is `message`. To stream that message
into a thread as it is generated, this decoder reads the raw deltas and
yields the decoded characters of the `message` string as soon as they are
complete: it waits on half an escape sequence or half a surrogate pair rather
than showing mojibake.
"""

from __future__ import annotations

import json
import re

_KEY = re.compile(r'"message"\s*:\s*"')
_SIMPLE_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


class MessageFieldDecoder:
    def __init__(self) -> None:
        self._buf = ""
        self._pos: int | None = None  # index just after the opening quote, once found
        self.done = False

    def feed(self, delta: str) -> str:
        """Add raw JSON text; return the newly decoded characters of `message`."""
        if self.done:
            return ""
        self._buf += delta
        if self._pos is None:
            m = _KEY.search(self._buf)
            if m is None:
                return ""
            self._pos = m.end()
        out: list[str] = []
        buf, i = self._buf, self._pos
        while i < len(buf):
            c = buf[i]
            if c == '"':
                self.done = True
                i += 1
                break
            if c != "\\":
                out.append(c)
                i += 1
                continue
            if i + 1 >= len(buf):
                break  # half an escape: wait for more
            e = buf[i + 1]
            if e in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[e])
                i += 2
                continue
            if e != "u":
                out.append(e)  # invalid escape; the final JSON parse reports it
                i += 2
                continue
            if i + 6 > len(buf):
                break
            code = int(buf[i + 2 : i + 6], 16) if _is_hex(buf[i + 2 : i + 6]) else 0xFFFD
            if 0xD800 <= code < 0xDC00:
                if i + 12 > len(buf):
                    break  # wait for the low surrogate
                pair = buf[i : i + 12]
                try:
                    out.append(json.loads(f'"{pair}"'))
                except ValueError:
                    out.append("\ufffd")
                i += 12
                continue
            out.append(chr(code))
            i += 6
        # Keep only what is not decoded yet, so long replies cost linear time.
        self._buf, self._pos = buf[i:], 0
        return "".join(out)


def _is_hex(s: str) -> bool:
    return len(s) == 4 and all(c in "0123456789abcdefABCDEF" for c in s)
