"""Render: a locked prompt becomes a video clip.

One narrow interface (`base.Renderer`), one implementation per API: `veo` and `omni`
(Google's Gemini API, `google.py`), `runway` (`runway.py`) and `offline` (title cards,
`offline.py`). `poll.drive` takes one render to its end; prices are in `prices.py`.
"""

from __future__ import annotations

from bot.config import Settings
from bot.dialogue.models import TargetProfile
from bot.render.base import Renderer, RenderError

OFFLINE = "offline"
RENDERERS = ("veo", "omni", "runway", OFFLINE)
# The setting each vendor renderer needs.
KEYS = {"veo": "GEMINI_API_KEY", "omni": "GEMINI_API_KEY", "runway": "RUNWAYML_API_SECRET"}


def _secret(settings: Settings, name: str) -> str:
    value = settings.gemini_api_key if name != "runway" else settings.runwayml_api_secret
    return value.get_secret_value() if value is not None else ""


def configured(settings: Settings) -> list[str]:
    """The vendor renderers whose key is set."""
    return [name for name in ("veo", "omni", "runway") if _secret(settings, name)]


def for_target(target: TargetProfile, settings: Settings) -> list[str]:
    """The configured renderers that can render `target`, in the target's order."""
    ready = configured(settings)
    return [name for name in target.render if name in ready]


def for_slack(target: TargetProfile, settings: Settings) -> str | None:
    """The renderer Slack's Render button uses for `target`: the target's first configured
    vendor renderer, else offline when RENDER_OFFLINE_IN_SLACK asks for it, else None (no
    button)."""
    found = for_target(target, settings)
    if found:
        return found[0]
    return OFFLINE if settings.render_offline_in_slack else None


def choose(name: str | None, target: TargetProfile, settings: Settings) -> str:
    """The renderer to use: `name` if given (checked), else the target's first configured
    one, else offline."""
    if name is None:
        found = for_target(target, settings)
        return found[0] if found else OFFLINE
    key = name.strip().lower()
    if key not in RENDERERS:
        raise RenderError(f"Unknown renderer {name!r}: use one of {', '.join(RENDERERS)}.")
    if key != OFFLINE and key not in target.render:
        can = ", ".join([*target.render, OFFLINE])
        raise RenderError(f"{target.model_name} prompts do not render on {key}; use {can}.")
    if key != OFFLINE and not _secret(settings, key):
        raise RenderError(
            f"The {key} renderer needs {KEYS[key]}; set it, or use --renderer offline."
        )
    return key


def make(name: str, settings: Settings) -> Renderer:
    """A renderer by name, its client built from the settings."""
    renderer = _make(name, settings)
    if settings.render_poll_seconds is not None and name != OFFLINE:
        renderer.poll_s = settings.render_poll_seconds
    return renderer


def _make(name: str, settings: Settings) -> Renderer:
    if name == "offline":
        from bot.render.offline import OfflineRenderer

        return OfflineRenderer()
    secret = _secret(settings, name)
    if not secret:
        raise RenderError(f"The {name} renderer needs {KEYS.get(name, 'a key')}.")
    if name in ("veo", "omni"):
        from bot.render.google import OmniRenderer, VeoRenderer

        cls = VeoRenderer if name == "veo" else OmniRenderer
        return cls(api_key=secret, base_url=settings.gemini_base_url)
    if name == "runway":
        from bot.render.runway import RunwayRenderer

        return RunwayRenderer(api_secret=secret, base_url=settings.runwayml_base_url)
    raise RenderError(f"Unknown renderer {name!r}: use one of {', '.join(RENDERERS)}.")


__all__ = [
    "KEYS",
    "OFFLINE",
    "RENDERERS",
    "RenderError",
    "Renderer",
    "choose",
    "configured",
    "for_slack",
    "for_target",
    "make",
]
