"""Personas and target profiles, loaded from TOML data files.

A file `personas/NAME.toml` or `targets/NAME.toml` beside this module (or in
`EXTRA_PROFILES_DIR/personas|targets`) is a persona or target named NAME.
Adding a target model is a data file, never code.
"""

from __future__ import annotations

import re
import tomllib
import zlib
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from bot.dialogue.models import Look, Persona, TargetProfile

_HERE = Path(__file__).parent
FREE_TEXT_MAX_CHARS = 300
_FREE_TEXT_MUST_HAVES = [
    "one concrete detail that only this persona would insist on",
    "a clear emotional turn before the final beat",
    "camera and light described in words this persona would use",
]


class ProfileError(ValueError):
    """An unknown or malformed persona or target; the message is shown to the user."""


def _dirs(kind: str, extra_dir: str | None) -> list[Path]:
    dirs = [_HERE / kind]
    if extra_dir:
        dirs.append(Path(extra_dir) / kind)
    return dirs


def _read(kind: str, extra_dir: str | None) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for d in _dirs(kind, extra_dir):
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            try:
                with path.open("rb") as f:
                    found[path.stem] = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ProfileError(f"{path}: not valid TOML ({e})") from e
    return found


@lru_cache(maxsize=8)
def personas(extra_dir: str | None = None) -> dict[str, Persona]:
    out: dict[str, Persona] = {}
    for name, data in _read("personas", extra_dir).items():
        try:
            out[name] = Persona.model_validate({"name": name, **data})
        except ValidationError as e:
            raise ProfileError(f"persona {name!r} is malformed: {e}") from e
    return out


@lru_cache(maxsize=8)
def targets(extra_dir: str | None = None) -> dict[str, TargetProfile]:
    out: dict[str, TargetProfile] = {}
    for name, data in _read("targets", extra_dir).items():
        try:
            out[name] = TargetProfile.model_validate({"name": name, **data})
        except ValidationError as e:
            raise ProfileError(f"target {name!r} is malformed: {e}") from e
    return out


def _looks_like_name(text: str) -> bool:
    return re.fullmatch(r"[a-z0-9_-]{1,40}", text) is not None


def resolve_persona(spec: str, extra_dir: str | None = None) -> Persona:
    """A shipped persona by name, or a persona made from free text.

    A single lowercase word is taken as a name, so a typo gets an error rather
    than a persona called "fonder"; anything longer is a free-text persona.
    """
    spec = spec.strip()
    known = personas(extra_dir)
    if not spec:
        raise ProfileError("The persona is empty. Name one of: " + ", ".join(sorted(known)))
    key = spec.lower()
    if key in known:
        return known[key]
    if _looks_like_name(spec):
        raise ProfileError(
            f"Unknown persona {spec!r}. Name one of: {', '.join(sorted(known))}, "
            'or describe one in a few words, e.g. "a 1970s Italian horror director".'
        )
    if len(spec) > FREE_TEXT_MAX_CHARS:
        raise ProfileError(
            f"A free-text persona is at most {FREE_TEXT_MAX_CHARS} characters "
            f"(this one has {len(spec)})."
        )
    # The display name is also the Slack username of the persona's posts, which is
    # plain text that no escaping reaches: angle brackets become look-alikes there,
    # so `<!channel>` typed in a persona can never become a mention.
    display = (spec[0].upper() + spec[1:]).replace("<", "‹").replace(">", "›")
    if len(display) > 60:
        display = display[:59].rstrip() + "…"
    return Persona(
        name="custom",
        display_name=display,
        icon_emoji=":performing_arts:",
        role=spec,
        voice=f"Speaks as {spec} would: in their vocabulary, with their references.",
        taste=f"The taste of {spec}.",
        must_haves=list(_FREE_TEXT_MUST_HAVES),
        look=derive_look(spec),
    )


# Words a free-text persona may use, and what each does to a shot. The first word that
# sets a field wins; fields no word sets come from a base look chosen by the words' hash,
# so the same description always gives the same taste.
_LOOK_WORDS: list[tuple[str, dict[str, str]]] = [
    (
        r"horror|giallo|thriller|noir",
        {
            "camera": "slow creeping zoom from a low angle",
            "light": "hard single-source light with deep shadow",
            "palette": "blood red, sickly green and black",
            "mood": "dread, held breath",
        },
    ),
    (
        r"19[2-7]0s|seventies|vintage|retro|super ?8|analog",
        {
            "lens": "vintage zoom lens with soft edges",
            "style": "period film stock with heavy grain",
        },
    ),
    (
        r"italian|french|european",
        {
            "style": "European art-house framing, composed like a painting",
        },
    ),
    (
        r"anime|animat|cartoon|pixar|stop[- ]motion|claymation",
        {
            "style": "hand-crafted animation with visible texture",
            "camera": "locked-off frame with one expressive push-in",
            "palette": "saturated primaries against soft pastels",
        },
    ),
    (
        r"documentar|journalist|reporter|ethnograph",
        {
            "camera": "handheld, following at a respectful distance",
            "light": "available light only",
            "style": "observational documentary realism",
        },
    ),
    (
        r"music video|dj|rapper|pop star|band",
        {
            "camera": "kinetic orbit around the performer",
            "light": "coloured stage light and strobes",
            "palette": "electric magenta, cyan and chrome",
            "sound": "a driving beat with a drop on the final cut",
        },
    ),
    (
        r"chef|food|cook|baker|restaurant",
        {
            "camera": "top-down macro, then one slow slide along the counter",
            "light": "warm window light raking across surfaces",
            "palette": "copper, flour white and herb green",
            "sound": "sizzle, knife on wood, a kettle's rising note",
        },
    ),
    (
        r"nature|wildlife|outdoor|explorer|climber|surfer|hiker",
        {
            "camera": "long lens from a distance, one patient pan",
            "light": "raw natural light, weather as it comes",
            "palette": "moss green, slate grey and sky blue",
            "sound": "wind, water and distant birds",
        },
    ),
    (
        r"fashion|luxury|designer|perfume|jewel",
        {
            "camera": "slow glide past the subject in profile",
            "light": "sculpted soft key with a clean rim",
            "palette": "champagne gold, ivory and deep black",
            "style": "glossy editorial elegance",
        },
    ),
    (
        r"sci-?fi|futur|cyberpunk|space|astronaut|robot",
        {
            "camera": "slow crane up to reveal scale",
            "light": "cool neon and practical screens",
            "palette": "cyan, violet and gunmetal",
            "style": "sleek speculative realism",
        },
    ),
    (
        r"teacher|kid|child|family|parent|grandm|grandp",
        {
            "camera": "eye level at the child's height, one gentle push-in",
            "light": "soft afternoon window light",
            "palette": "butter yellow, leaf green and warm wood",
            "mood": "tender and playful",
        },
    ),
    (
        r"architect|engineer|designer|minimalis",
        {
            "camera": "symmetrical frame, one precise lateral dolly",
            "lens": "wide rectilinear lens, everything sharp",
            "palette": "concrete grey, white and one accent colour",
        },
    ),
    (
        r"wes anderson|symmetr|whimsical|quirky",
        {
            "camera": "dead-centre symmetrical framing, one whip pan",
            "palette": "pastel pink, mint and mustard",
            "style": "storybook precision",
        },
    ),
]
_BASE_LOOKS = [
    Look(
        camera="steady medium shot, one slow push-in",
        lens="35mm lens",
        light="soft directional daylight",
        palette="warm neutrals with one saturated accent",
        style="grounded cinematic realism",
        sound="natural ambience and one clear sound cue",
        mood="curious, intimate",
    ),
    Look(
        camera="wide establishing frame, one slow lateral track",
        lens="24mm lens, deep focus",
        light="golden low sun with long shadows",
        palette="amber, dusty rose and deep teal",
        style="lyrical, painterly realism",
        sound="wind and a low sustained note",
        mood="wistful, open",
    ),
    Look(
        camera="close, handheld, breathing with the subject",
        lens="50mm lens, shallow focus",
        light="mixed practical light at night",
        palette="sodium orange, cold blue and black",
        style="gritty, intimate realism",
        sound="close breath and city hum",
        mood="urgent, private",
    ),
    Look(
        camera="locked-off tableau, one slow tilt up at the end",
        lens="40mm lens, moderate depth",
        light="overcast soft light, no hard shadows",
        palette="sage, cream and charcoal",
        style="calm, composed minimalism",
        sound="near silence, one small sound that lands",
        mood="still, reflective",
    ),
]


def derive_look(spec: str) -> Look:
    """A taste for a free-text persona, read from its own words."""
    low = spec.lower()
    base = _BASE_LOOKS[zlib.crc32(low.encode()) % len(_BASE_LOOKS)]
    fields: dict[str, str] = {}
    for pattern, look in _LOOK_WORDS:
        if re.search(pattern, low):
            for k, v in look.items():
                fields.setdefault(k, v)
    return base.model_copy(update=fields)


def resolve_target(name: str, extra_dir: str | None = None) -> TargetProfile:
    known = targets(extra_dir)
    key = name.strip().lower()
    if key in known:
        return known[key]
    raise ProfileError(f"Unknown target {name!r}. Use one of: {', '.join(sorted(known))}.")
