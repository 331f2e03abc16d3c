"""`sora-copilot run`: a whole session in a terminal, and clear refusals of bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.cli import main
from tests.support import run_cli


def cli(
    *args: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    # A terminal that declares no UTF-8: the CLI must still write UTF-8.
    return run_cli(
        *args, cwd=tmp_path, env={"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "", **(env or {})}
    )


def test_run_offline_locks_a_prompt_and_writes_a_utf8_report(tmp_path: Path) -> None:
    idea = "A lighthouse keeper 🐋 finds a letter — 東京"
    p = cli("run", idea, "--persona", "director", "--out", "reports", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    err = p.stderr.decode("utf-8")
    out = p.stdout.decode("utf-8")
    assert "Running offline" in err and "ANTHROPIC_API_KEY is not set" in err
    assert "── Sora Copilot · Opening ──" in out and "── Tomás Ferreira · Round 1 of 6 ──" in out
    assert "══ Locked" in out
    [report] = list((tmp_path / "reports").glob("session-*.md"))
    [data] = list((tmp_path / "reports").glob("session-*.json"))
    session = json.loads(data.read_text(encoding="utf-8"))["session"]
    locked = session["locked"]["draft"]
    approved = [
        t for t in session["turns"] if t["verdict"] and t["verdict"]["decision"] == "approve"
    ]
    assert approved and approved[0]["verdict"]["version"] == locked["version"]
    assert locked["prompt_text"].encode("utf-8") in report.read_bytes()
    assert "🐋".encode() in report.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "   "], "The idea is empty"),
        (["run", "x" * 2001], "The idea is 2001 characters; the limit is 2000."),
        (["run", "idea", "--persona", "fonder"], "Unknown persona 'fonder'"),
        (["run", "idea", "--target", "sora-9"], "Unknown target 'sora-9'"),
        (["run", "idea", "--rounds", "0"], "Rounds must be between 1 and 12, not 0."),
        (["run", "idea", "--rounds", "13"], "Rounds must be between 1 and 12, not 13."),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--offline"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out").exists()
