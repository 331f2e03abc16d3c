"""The offline renderer: a real, playable clip with no network and no account.

Each action beat of the locked draft becomes a title card (the caption, the beat, the
camera and light notes), drawn with Pillow and encoded to H.264 in an MP4 with PyAV (whose
wheels carry FFmpeg and libx264), at the draft's duration and aspect ratio. Every card says
it is an offline render, as everything the offline model writes says it is offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

from bot.dialogue.models import Draft, TargetProfile
from bot.render.base import Done, Outcome, RenderPlan, Tier

OFFLINE_MODEL = "offline-title-cards"
FPS = 24
# The short side of the frame, per tier: small and quick for a draft, 720p for a master.
SHORT_SIDE = {"draft": 360, "master": 720}
_BACKGROUND = (18, 22, 30)
_INK = (236, 232, 220)
_DIM = (150, 156, 170)
_ACCENT = (232, 170, 72)


def aspect_of(size: str, target: TargetProfile) -> tuple[int, int]:
    """The aspect ratio a draft size means: "16:9", "1280x720" and "1280:720" all say 16:9.
    A size that names only a resolution ("1080P") takes the target's first aspect ratio."""
    m = re.fullmatch(r"\s*(\d+)\s*[x:]\s*(\d+)\s*", size)
    if m is None and target.aspect_ratios:
        m = re.fullmatch(r"(\d+):(\d+)", target.aspect_ratios[0])
    if m is None:
        return (16, 9)
    w, h = int(m.group(1)), int(m.group(2))
    if w <= 0 or h <= 0:
        return (16, 9)
    g = math.gcd(w, h)
    return (w // g, h // g)


def frame_size(aspect: tuple[int, int], short_side: int) -> tuple[int, int]:
    """Width and height with `short_side` as the shorter one, both even (yuv420p needs it)."""
    w, h = aspect

    def even(x: float) -> int:
        return max(2, round(x / 2) * 2)

    if w >= h:
        return even(short_side * w / h), even(short_side)
    return even(short_side), even(short_side * h / w)


@dataclass(frozen=True)
class Card:
    caption: str
    number: int
    count: int
    beat: str
    camera: str
    light: str


def cards_for(draft: Draft) -> list[Card]:
    beats = [b for b in draft.parts.action_beats if b.strip()] or [draft.parts.subject]
    return [
        Card(
            caption=draft.title,
            number=i,
            count=len(beats),
            beat=beat,
            camera=draft.parts.camera,
            light=draft.parts.lighting_palette,
        )
        for i, beat in enumerate(beats, 1)
    ]


# The bundled font has Latin letters but not every typographic mark: those become their
# plain look-alikes rather than empty boxes.
_PLAIN = str.maketrans({"—": " - ", "–": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "..."})


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _wrapped(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
    max_lines: int,
) -> list[str]:
    """`text` in lines no wider than `width` pixels, at most `max_lines` (the last cut with …)."""
    avg = max(1.0, draw.textlength("abcdefghij klmnopqrst", font=font) / 21)
    plain = " ".join(text.translate(_PLAIN).split())
    lines = textwrap.wrap(plain, width=max(8, int(width / avg)))
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(" ,.;") + "…"
    return lines


def draw_card(card: Card, width: int, height: int) -> Image.Image:
    """One title card: the caption, the beat's number and text, camera and light below."""
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    unit = min(width, height) / 360
    margin = int(24 * unit)
    text_width = width - 2 * margin
    small, body, title = _font(int(11 * unit)), _font(int(17 * unit)), _font(int(22 * unit))
    y = margin
    for line in _wrapped(draw, card.caption, title, text_width, 2):
        draw.text((margin, y), line, font=title, fill=_INK)
        y += int(27 * unit)
    draw.text(
        (margin, y + int(4 * unit)),
        f"Beat {card.number} of {card.count}",
        font=small,
        fill=_ACCENT,
    )
    y += int(26 * unit)
    lines_left = max(2, int((height - y - 80 * unit) / (22 * unit)))
    for line in _wrapped(draw, card.beat, body, text_width, lines_left):
        draw.text((margin, y), line, font=body, fill=_INK)
        y += int(22 * unit)
    notes = [f"Camera: {card.camera}", f"Light: {card.light}"]
    y = height - margin - int(44 * unit)
    for note in notes:
        cut = _wrapped(draw, note, small, text_width, 1)
        draw.text((margin, y), cut[0] if cut else "", font=small, fill=_DIM)
        y += int(15 * unit)
    # One segment per beat, the current one lit: a card is told apart from its neighbours.
    bar_y = height - int(10 * unit)
    seg = text_width / card.count
    for i in range(card.count):
        x0 = margin + int(i * seg) + 1
        x1 = margin + int((i + 1) * seg) - 2
        colour = _ACCENT if i + 1 == card.number else (60, 66, 80)
        draw.rectangle((x0, bar_y, x1, bar_y + max(2, int(3 * unit))), fill=colour)
    draw.text(
        (width - margin - draw.textlength("offline render", font=small), margin),
        "offline render",
        font=small,
        fill=_DIM,
    )
    return image


def encode(cards: list[Card], seconds: int, width: int, height: int, fps: int = FPS) -> bytes:
    """An H.264 MP4 of `seconds` at `fps`, the cards sharing the frames evenly."""
    total = seconds * fps
    with tempfile.TemporaryDirectory(prefix="sora-render-") as tmp:
        path = Path(tmp) / "clip.mp4"
        _encode_to(path, cards, total, width, height, fps)
        return path.read_bytes()


def _encode_to(
    path: Path, cards: list[Card], total: int, width: int, height: int, fps: int
) -> None:
    # +faststart puts the index first, so a player (Slack's too) starts before the whole
    # file has arrived; FFmpeg does it by rewriting the file, so it is written to disk.
    with av.open(
        str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Still cards compress to almost nothing.
        stream.codec_context.options = {"preset": "veryfast", "crf": "26", "tune": "stillimage"}
        n = 0
        for i, card in enumerate(cards):
            image = draw_card(card, width, height)
            end = (i + 1) * total // len(cards)
            # One frame per card, converted once: the encoder takes its own reference to
            # each frame it is sent (avcodec_send_frame), so only the pts changes between.
            # PyAV leaves from_image unannotated.
            frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")  # type: ignore[no-untyped-call]
            while n < end:
                frame.pts = n
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
        for packet in stream.encode():
            container.mux(packet)


class OfflineRenderer:
    """Renders any target's draft at no cost: `submit` names the job, `check` renders it."""

    name = "offline"
    vendor = "offline"
    max_wait_s = 10 * 60.0
    poll_s = 0.0

    def plan(self, draft: Draft, target: TargetProfile, tier: Tier) -> RenderPlan:
        aspect = aspect_of(draft.size, target)
        width, height = frame_size(aspect, SHORT_SIDE[tier])
        return RenderPlan(
            renderer=self.name,
            vendor=self.vendor,
            model=OFFLINE_MODEL,
            tier=tier,
            prompt=draft.prompt_text,
            seconds=draft.duration_seconds,
            aspect=f"{aspect[0]}:{aspect[1]}",
            size=f"{width}x{height}",
            resolution=f"{min(width, height)}p",
            price_per_second=0.0,
            draft=draft,
        )

    async def submit(self, plan: RenderPlan) -> str:
        digest = hashlib.sha256(f"{plan.size}|{plan.seconds}|{plan.prompt}".encode()).hexdigest()
        return f"offline-{digest[:16]}"

    async def check(self, plan: RenderPlan, job_id: str) -> Outcome:
        width, height = (int(x) for x in plan.size.split("x"))
        data = await asyncio.to_thread(encode, cards_for(plan.draft), plan.seconds, width, height)
        return Done(video=data, seconds=float(plan.seconds), resolution=plan.resolution)

    async def aclose(self) -> None:
        return None
