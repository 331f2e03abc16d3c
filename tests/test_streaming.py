"""The message decoder shows streamed text exactly, however the JSON is chunked."""

from __future__ import annotations

import json

import pytest

from bot.llm.streaming import MessageFieldDecoder

MESSAGES = [
    "plain",
    'quotes " and backslash \\ and slash /',
    "newline\nand tab\t",
    "emoji 🎬🐋🚀 and 東京 and café",
    "control \u0001 char",
    "",
]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("ascii_only", [True, False])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 11, 1000])
def test_decoded_stream_equals_the_message_for_every_chunking(
    message: str, ascii_only: bool, chunk: int
) -> None:
    raw = json.dumps({"message": message, "draft": {"title": "x"}}, ensure_ascii=ascii_only)
    decoder = MessageFieldDecoder()
    out = "".join(decoder.feed(raw[i : i + chunk]) for i in range(0, len(raw), chunk))
    assert out == message
    assert decoder.done


def test_text_before_the_message_key_is_not_shown() -> None:
    decoder = MessageFieldDecoder()
    assert decoder.feed('{"draft": null, "mess') == ""
    assert decoder.feed('age": "hi') == "hi"
    assert decoder.feed('", "more": "no"}') == ""
