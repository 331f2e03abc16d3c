"""A newcomer's first hour: where settings come from, hints that work as printed, processes
that refuse what cannot work, help that says enough, and Slack saying it runs offline."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from pathlib import Path

import pytest

import bot.config
from bot.config import SettingsError, find_env_file, load_settings
from bot.dialogue.models import Speaker, Turn
from bot.llm.offline import OFFLINE_MODEL
from bot.slack.blocks import OFFLINE_NOTE, root_blocks
from tests.fakes.slack_server import FakeSlack
from tests.redis_fixtures import REDIS_TEST_URL
from tests.support import make_session, run_cli

ROOT = Path(__file__).resolve().parent.parent


# ---- which .env is read ------------------------------------------------------------------


@pytest.fixture
def folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """A project root and another folder to run from; no SORA_ENV_FILE."""
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.setattr(bot.config, "PROJECT_ROOT", root)
    monkeypatch.delenv("SORA_ENV_FILE", raising=False)
    monkeypatch.delenv("DEFAULT_TARGET", raising=False)
    monkeypatch.chdir(elsewhere)
    return root, elsewhere


def test_the_projects_env_is_read_from_another_folder(folders: tuple[Path, Path]) -> None:
    root, _ = folders
    (root / ".env").write_text("DEFAULT_TARGET=veo-3.1\n", encoding="utf-8")
    assert find_env_file() == root / ".env"
    assert load_settings().default_target == "veo-3.1"


def test_a_env_in_the_current_folder_wins_over_the_projects(folders: tuple[Path, Path]) -> None:
    root, elsewhere = folders
    (root / ".env").write_text("DEFAULT_TARGET=veo-3.1\n", encoding="utf-8")
    (elsewhere / ".env").write_text("DEFAULT_TARGET=kling-3.0\n", encoding="utf-8")
    assert load_settings().default_target == "kling-3.0"


def test_a_named_env_file_wins_and_a_missing_one_is_refused(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, elsewhere = folders
    (root / ".env").write_text("DEFAULT_TARGET=veo-3.1\n", encoding="utf-8")
    named = elsewhere / "staging.env"
    named.write_text("DEFAULT_TARGET=runway-gen-4.5\n", encoding="utf-8")
    monkeypatch.setenv("SORA_ENV_FILE", str(named))
    assert load_settings().default_target == "runway-gen-4.5"
    monkeypatch.setenv("SORA_ENV_FILE", str(elsewhere / "nope.env"))
    with pytest.raises(SettingsError, match=r"SORA_ENV_FILE .*nope\.env: no such file"):
        find_env_file()


def test_the_banner_names_the_env_file_and_the_report_folder(tmp_path: Path) -> None:
    env_file = tmp_path / "team.env"
    env_file.write_text("DEFAULT_TARGET=veo-3.1\n", encoding="utf-8")
    p = run_cli(
        "run", "A lighthouse keeper", "--rounds", "1", "--env-file", str(env_file), cwd=tmp_path
    )
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr.decode()
    assert f"Settings: the environment and {env_file}." in out
    assert f"Report to {tmp_path / 'out'}/." in out
    assert "target veo-3.1" in out


def test_a_missing_env_file_is_one_line(tmp_path: Path) -> None:
    p = run_cli("run", "idea", "--env-file", "missing.env", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.decode().splitlines() == ["sora-copilot: --env-file missing.env: no such file."]


# ---- help -------------------------------------------------------------------------------


def test_run_help_lists_personas_targets_and_the_default_rounds(tmp_path: Path) -> None:
    text = " ".join(run_cli("run", "--help", cwd=tmp_path).stdout.decode().split())
    for name in ("founder", "director", "brand", "photographer"):
        assert name in text
    for name in ("sora-2", "veo-3.1", "runway-gen-4.5", "kling-3.0", "generic"):
        assert name in text
    assert "DEFAULT_ROUNDS, 6" in text and "1-12" in text


@pytest.mark.parametrize("command", ["serve", "dev", "worker", "resume"])
def test_every_process_says_what_it_is_and_needs(command: str, tmp_path: Path) -> None:
    text = " ".join(run_cli(command, "--help", cwd=tmp_path).stdout.decode().split())
    assert "Needs" in text or "needs" in text, text


def test_worker_help_hides_the_test_only_flags(tmp_path: Path) -> None:
    text = run_cli("worker", "--help", cwd=tmp_path).stdout.decode()
    assert "--surface" not in text and "--offline-latency" not in text
    assert "--concurrency" in text


@pytest.mark.parametrize("value", ["0", "-3", "1001", "many"])
def test_a_worker_concurrency_below_one_is_refused(value: str, tmp_path: Path) -> None:
    p = run_cli("worker", "--concurrency", value, cwd=tmp_path, env={"REDIS_URL": REDIS_TEST_URL})
    assert p.returncode == 2
    assert "--concurrency" in p.stderr.decode() and "taking jobs" not in p.stderr.decode()


# ---- processes refuse what cannot work ---------------------------------------------------


async def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(run_cli, *args, cwd=cwd, env=env)


async def test_the_worker_refuses_a_token_slack_refuses(tmp_path: Path) -> None:
    async with FakeSlack() as slack:
        env = {
            "REDIS_URL": REDIS_TEST_URL,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": "xoxb-not-a-real-token",
        }
        p = await _cli("worker", env=env, cwd=tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in err
    assert "taking jobs" not in err and "xoxb-not-a-real-token" not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_without_slack_says_one_thing_and_closes_its_sessions(tmp_path: Path) -> None:
    p = run_cli(
        "dev",
        cwd=tmp_path,
        env={
            "SLACK_API_URL": f"http://127.0.0.1:{_closed_port()}/api/",
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_APP_TOKEN": "xapp-1",
        },
    )
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("sora-copilot: Slack is not reachable at"), lines


# ---- Slack says when the offline model writes ---------------------------------------------


def _text(blocks: list[dict[str, object]]) -> str:
    return repr(blocks)


def _opening(model: str) -> Turn:
    return Turn(
        index=0, round=0, speaker=Speaker.COPILOT, author="Sora Copilot", text="Hi", model=model
    )


def test_the_root_says_when_the_offline_model_writes_the_dialogue() -> None:
    session = make_session()
    assert OFFLINE_NOTE not in _text(root_blocks(session))  # nothing written yet
    session.turns.append(_opening(OFFLINE_MODEL))
    assert "Offline model" in _text(root_blocks(session))
    claude = make_session()
    claude.turns.append(_opening("claude-sonnet-5-5"))
    assert "Offline model" not in _text(root_blocks(claude))


# ---- .env.example explains every setting ---------------------------------------------------


def test_every_setting_in_env_example_has_a_comment_saying_what_it_is_for() -> None:
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    unexplained = []
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line) and not (i and lines[i - 1].startswith("# ")):
            unexplained.append(line.split("=", 1)[0])
    assert not unexplained, unexplained
