"""The offline renderer makes a real clip: it decodes, lasts the draft's duration, has its
aspect ratio, and shows one title card per beat."""

from __future__ import annotations

import io
import itertools

import av
import pytest
from PIL import Image, ImageChops

from bot.dialogue.models import Draft
from bot.dialogue.profiles import resolve_target
from bot.render.base import Done
from bot.render.offline import FPS, OfflineRenderer, aspect_of
from tests.support import draft_json

THUMB = (160, 90)


def decode(clip: bytes) -> tuple[list[bytes], float, int, int, str]:
    """Each frame as a small grey thumbnail, the stream's duration, size and codec."""
    thumbs = []
    with av.open(io.BytesIO(clip)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        duration = float(stream.duration * stream.time_base)
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        for frame in container.decode(stream):
            thumbs.append(frame.to_image().convert("L").resize(THUMB).tobytes())
    return thumbs, duration, width, height, codec


def cards_shown(thumbs: list[bytes]) -> int:
    """Runs of frames that look alike: a card is still, the next one differs at once."""
    runs = 1
    for a, b in itertools.pairwise(thumbs):
        diff = ImageChops.difference(Image.frombytes("L", THUMB, a), Image.frombytes("L", THUMB, b))
        # Compression noise between two frames of one card stays far below this.
        if diff.point(lambda v: 255 if v > 48 else 0).getbbox() is not None:
            runs += 1
    return runs


@pytest.mark.parametrize(
    ("target", "size", "seconds", "beats", "aspect"),
    [
        ("sora-2", "1280x720", 8, 3, 16 / 9),
        ("sora-2", "720x1280", 4, 2, 9 / 16),
        ("generic", "1:1", 5, 4, 1.0),
        ("generic", "21:9", 6, 1, 21 / 9),
    ],
)
async def test_the_offline_clip_plays_for_the_drafts_duration_with_a_card_per_beat(
    target: str, size: str, seconds: int, beats: int, aspect: float
) -> None:
    data = draft_json(size=size, duration=seconds)
    data["parts"]["action_beats"] = [f"beat number {i} — the keeper" for i in range(beats)]
    draft = Draft.model_validate({"version": 1, "target": target, **data})
    renderer = OfflineRenderer()
    plan = renderer.plan(draft, resolve_target(target), "draft")
    outcome = await renderer.check(plan, await renderer.submit(plan))
    assert isinstance(outcome, Done) and outcome.seconds == seconds
    thumbs, duration, width, height, codec = decode(outcome.video)
    assert codec == "h264"
    assert len(thumbs) == seconds * FPS
    assert abs(duration - seconds) <= 1 / FPS
    assert abs(width / height - aspect) < 0.02 and min(width, height) == 360
    assert cards_shown(thumbs) == beats
    assert plan.cost == 0
    assert plan.aspect == ":".join(map(str, aspect_of(size, resolve_target(target))))


def test_a_size_that_names_only_a_resolution_takes_the_targets_aspect() -> None:
    assert aspect_of("1080P", resolve_target("hailuo-02")) == (16, 9)
    assert aspect_of("1792x1024", resolve_target("sora-2-pro")) == (7, 4)
    assert aspect_of("720:1280", resolve_target("runway-gen-4.5")) == (9, 16)


async def test_the_master_tier_is_720p() -> None:
    draft = Draft.model_validate({"version": 1, "target": "sora-2", **draft_json(duration=4)})
    renderer = OfflineRenderer()
    plan = renderer.plan(draft, resolve_target("sora-2"), "master")
    assert plan.size == "1280x720" and plan.resolution == "720p"
