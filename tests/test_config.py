"""Configuration: every setting is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_and_no_other() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    expected = {name.upper() for name in Settings.model_fields}
    assert listed == expected, {"missing": expected - listed, "unknown": listed - expected}


def test_env_example_holds_no_secret_values() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        assert re.search(rf"^{name}=$", text, flags=re.M), name
