"""Configuration: every setting is documented in .env.example."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot.config import Settings, SettingsError, load_settings
from tests.support import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _dotenv_of_the_current_folder_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """These tests read the .env of the folder they run in, and no project's."""
    monkeypatch.delenv("SORA_ENV_FILE", raising=False)
    monkeypatch.setattr("bot.config.PROJECT_ROOT", tmp_path / "no-project")


def test_env_example_lists_every_setting_and_no_other() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    expected = {name.upper() for name in Settings.model_fields}
    assert listed == expected, {"missing": expected - listed, "unknown": listed - expected}


def test_env_example_holds_no_secret_values() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        assert re.search(rf"^{name}=$", text, flags=re.M), name


# An empty value means "not set", wherever it comes from: a copied .env.example lists
# every setting, most of them empty, and must behave exactly like no .env at all.
FIELDS = sorted(Settings.model_fields)


@pytest.mark.parametrize("name", FIELDS)
def test_an_empty_environment_variable_leaves_the_setting_unset(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for other in FIELDS:
        monkeypatch.delenv(other.upper(), raising=False)
    monkeypatch.setenv(name.upper(), "")
    assert getattr(load_settings(), name) == Settings.model_fields[name].get_default()


@pytest.mark.parametrize("name", FIELDS)
def test_an_empty_line_in_dotenv_leaves_the_setting_unset(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for other in FIELDS:
        monkeypatch.delenv(other.upper(), raising=False)
    (tmp_path / ".env").write_text(f"{name.upper()}=\n", encoding="utf-8")
    assert getattr(load_settings(), name) == Settings.model_fields[name].get_default()


def test_a_copied_env_example_gives_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in FIELDS:
        monkeypatch.delenv(name.upper(), raising=False)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    assert load_settings() == Settings(_env_file=None)


def test_a_bad_value_is_one_line_naming_the_setting_and_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEFAULT_ROUNDS", "six")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "DEFAULT_ROUNDS='six'" in str(e.value) and "\n" not in str(e.value)


def test_a_dotenv_that_is_not_utf8_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"DEFAULT_PERSONA=caf\xe9\n")
    with pytest.raises(SettingsError, match=r"Cannot read .*\.env"):
        load_settings()


def test_copying_env_example_keeps_the_offline_demo_working(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    p = run_cli("run", "A lighthouse keeper finds a message", "--rounds", "2", cwd=tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "Running offline: ANTHROPIC_API_KEY is not set" in err
    assert "No REDIS_URL: using the embedded in-process store" in err
    assert list((tmp_path / "out").glob("session-*.md"))
