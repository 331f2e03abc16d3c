"""The app's Slack manifest (`slack-manifest.yml`), read for the one list of bot scopes.

The OAuth install page asks for exactly the scopes the manifest declares, so
there is one list to keep. The manifest is ours and simple: no YAML parser is
needed to read one block list out of it.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yml"


class ManifestError(Exception):
    """The manifest is missing, or declares no bot scopes; one line says which."""


def bot_scopes(path: Path | None = None) -> list[str]:
    """`oauth_config.scopes.bot` of the manifest, in its order."""
    path = path or (MANIFEST if MANIFEST.exists() else Path.cwd() / "slack-manifest.yml")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ManifestError(f"Cannot read the Slack manifest {path}: {e.strerror}") from None
    scopes: list[str] = []
    section: list[str] = []  # the keys leading to the current line, by indent
    for raw in lines:
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if text.startswith("- "):
            if section == ["oauth_config", "scopes", "bot"]:
                scopes.append(text[2:].strip())
            continue
        if text.endswith(":"):
            depth = indent // 2
            section = [*section[:depth], text[:-1]]
        else:
            section = section[: indent // 2]
    if not scopes:
        raise ManifestError(f"The Slack manifest {path} declares no oauth_config.scopes.bot")
    return scopes
