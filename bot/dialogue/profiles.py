"""Personas and target profiles, loaded from TOML data files.

A file `personas/NAME.toml` or `targets/NAME.toml` beside this module (or in
`EXTRA_PROFILES_DIR/personas|targets`) is a persona or target named NAME.
Adding a target model is a data file, never code.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from bot.dialogue.models import Persona, TargetProfile
from bot.dialogue.sheets import FREE_TEXT_ICON, clean, safe_name

_HERE = Path(__file__).parent
FREE_TEXT_MAX_CHARS = 300


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
    if not re.search(r"\w{3}", spec):
        raise ProfileError('Describe the persona in words, e.g. "a 1970s Italian horror director".')
    # Pending: its sheet is written before the first turn (`Engine.expand_persona`). Until
    # then it shows as the words it was asked for with. The display name is also the Slack
    # username of the persona's posts, plain text that no escaping reaches: angle brackets
    # become look-alikes there, so `<!channel>` typed in a persona can never be a mention.
    display = safe_name(spec[0].upper() + spec[1:])
    if len(display) > 60:
        display = display[:59].rstrip() + "…"
    return Persona(
        name="custom",
        display_name=display,
        icon_emoji=FREE_TEXT_ICON,
        role="persona being written",
        voice="",
        taste="",
        must_haves=[],
        description=clean(spec),
    )


def resolve_target(name: str, extra_dir: str | None = None) -> TargetProfile:
    known = targets(extra_dir)
    key = name.strip().lower()
    if key in known:
        return known[key]
    raise ProfileError(f"Unknown target {name!r}. Use one of: {', '.join(sorted(known))}.")
