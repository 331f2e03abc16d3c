"""`sora-copilot run`: a whole session in a terminal, and clear refusals of bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.cli import main
from tests.redis_fixtures import *  # noqa: F403
from tests.redis_fixtures import REDIS_TEST_URL, delete_prefix
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
    # Beside the locked prompt: the target's parameters and how to use it.
    after_lock = out.split("══ Locked", 1)[1]
    assert "Duration: " in after_lock and "Size: " in after_lock
    assert "Paste into the Sora app" in after_lock
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


def test_one_round_is_singular(tmp_path: Path) -> None:
    p = cli("run", "A lighthouse keeper", "--rounds", "1", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert "at most 1 round." in p.stdout.decode()


def test_a_failed_connection_is_reported_once(tmp_path: Path) -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{_closed_port()}",
        "ANTHROPIC_MAX_RETRIES": "0",
        "OUTAGE_RETRY_SECONDS": "0",  # pause at once rather than wait the outage out
    }
    p = cli("run", "A lighthouse keeper", "--out", "r", tmp_path=tmp_path, env=env)
    both = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, both
    assert both.count("Could not reach the Anthropic API") == 1, both
    assert "It cannot be resumed: it lived in the embedded in-process store" in both
    assert "Traceback" not in both


# ---- hostile input: one clear line and exit 2, never a traceback ------------------------

BAD_UTF8 = os.fsdecode(b"bad \xff\xfe idea")  # how Python hands such bytes to argv


def _sweep_cases(tmp: Path) -> list[tuple[list[str], dict[str, str], int]]:
    """(args, environment, the exit code expected)."""
    (tmp / "a-file").write_text("x", encoding="utf-8")
    ok = ["--offline", "--rounds", "1"]
    return [
        ([], {}, 2),
        (["bogus"], {}, 2),
        (["run"], {}, 2),
        (["run", BAD_UTF8], {}, 2),
        (["run", "idea", "--persona", BAD_UTF8], {}, 2),
        (["run", "idea", "--target", BAD_UTF8], {}, 2),
        (["run", "idea", "--out", BAD_UTF8 + "/x", *ok], {}, 2),
        (["run", "idea", "--rounds", "x"], {}, 2),
        (["run", "idea", "--rounds", "-1"], {}, 2),
        (["run", "idea", "--rounds", "9" * 30], {}, 2),
        (["run", "idea", "--pace", "nan"], {}, 2),
        (["run", "idea", "--pace", "-1"], {}, 2),
        (["run", "idea", "--pace", "inf"], {}, 2),
        (["run", "idea", "--persona", "x" * 5000], {}, 2),
        (["run", "idea", "--target", "../../etc/passwd"], {}, 2),
        (["run", "idea", "--out", "/proc/x", *ok], {}, 2),
        (["run", "idea", "--out", str(tmp / "a-file"), *ok], {}, 2),
        (["run", "idea", "--out", str(tmp / "a-file" / "sub"), *ok], {}, 2),
        (["run", "idea", "--out", "n" * 300, *ok], {}, 2),
        (["run", "idea", *ok], {"DEFAULT_ROUNDS": "six"}, 2),
        (["run", "idea", *ok], {"REDIS_URL": "nonsense"}, 2),
        (["run", "idea", *ok], {"REDIS_URL": "redis://127.0.0.1:1/0"}, 2),
        (["run", "idea", *ok], {"EXTRA_PROFILES_DIR": str(tmp / "a-file")}, 0),
        (["run", "\x1b[31m idea \t with\ncontrol\x07 characters", *ok], {}, 0),
        (["run", "idea", "--persona", "", *ok], {}, 0),
        (["run", "idea", "--out", "", *ok], {}, 0),
        (["resume"], {}, 2),
        (["resume", "../../etc"], {}, 2),
        (["resume", "3f9c0a1b2d4e5f60"], {}, 2),
        (["resume", BAD_UTF8], {}, 2),
        (["resume", "3f9c0a1b2d4e5f60"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, 2),
        (["worker"], {}, 2),
        (["serve"], {}, 2),
        (["dev"], {}, 2),
    ]


def test_hostile_arguments_never_produce_a_traceback(tmp_path: Path) -> None:
    cases = _sweep_cases(tmp_path)

    def one(case: tuple[list[str], dict[str, str], int]) -> tuple[int, bytes, bytes]:
        args, env, _ = case
        p = run_cli(*args, cwd=tmp_path, env=env)
        return p.returncode, p.stdout, p.stderr

    # A few at a time: each is a process that mostly waits on its imports.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, cases))
    failures = []
    for (args, env, expected), (code, out, err) in zip(cases, results, strict=True):
        text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        own_line = err.startswith(b"sora-copilot: ")
        if "Traceback" in text or code != expected or (own_line and len(err.splitlines()) != 1):
            failures.append((args[:3], env, code, text[-600:]))
    assert not failures, failures


def test_out_is_checked_before_the_session_starts(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x", encoding="utf-8")
    p = cli("run", "idea", "--offline", "--out", "taken", tmp_path=tmp_path)
    assert p.returncode == 2
    assert p.stderr.decode().strip() == (
        "sora-copilot: --out taken is a file, not a directory: name a directory for the report."
    )
    assert p.stdout == b""  # no session ran


# ---- resume: a paused terminal session continues, with Redis ----------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_paused_session_resumes_in_the_terminal_with_redis(
    real_redis: Redis, prefix: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": prefix}
    unreachable = {
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{_closed_port()}",
        "ANTHROPIC_MAX_RETRIES": "0",
        "OUTAGE_RETRY_SECONDS": "0",  # pause at once rather than wait the outage out
    }
    try:
        p = cli(
            "run", "A lighthouse keeper", "--rounds", "3", tmp_path=tmp_path, env=env | unreachable
        )
        out = p.stdout.decode() + p.stderr.decode()
        assert p.returncode == 1, out
        [(hint, sid)] = re.findall(r"Resume it with: (.* resume .*?([0-9a-f]{16}))\n", out)
        # The hint works as printed, from another folder, in a shell that has none of the
        # run's settings: it carries the REDIS_URL and REDIS_PREFIX they came from.
        assert f"REDIS_URL={REDIS_TEST_URL}" in hint and f"REDIS_PREFIX={prefix}" in hint
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        p = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", f"{hint} --offline --out {tmp_path / 'out'}"],
            cwd=elsewhere,
            env={k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ANTHROPIC_"))},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        out = p.stdout.decode() + p.stderr.decode()
        assert p.returncode == 0, out
        assert "Sora Copilot · Opening" in out and "══ Locked" in out
        session = json.loads((tmp_path / "out" / f"session-{sid}.json").read_text("utf-8"))
        assert session["session"]["status"] == "locked"
        assert session["session"]["idea"] == "A lighthouse keeper"

        p = cli("resume", sid, "--offline", tmp_path=tmp_path, env=env)
        assert p.returncode == 2
        assert (
            p.stderr.decode()
            .strip()
            .endswith(f"Session {sid} is locked; only a paused session can be resumed.")
        )
    finally:
        await delete_prefix(real_redis, f"{prefix}-terminal")


def test_resume_without_redis_says_why(tmp_path: Path) -> None:
    p = cli("resume", "3f9c0a1b2d4e5f60", tmp_path=tmp_path)
    assert p.returncode == 2
    assert "resume needs REDIS_URL" in p.stderr.decode()


# ---- output that goes away ----------------------------------------------------------------


def _cli_process(*args: str, cwd: Path, **kw: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=env,
        **kw,  # type: ignore[call-overload]
    )


def test_a_reader_that_goes_away_stops_the_session_with_a_report(tmp_path: Path) -> None:
    # `sora-copilot run … | head -1`: paced, so the session is still writing when the pipe closes.
    p = _cli_process(
        "run",
        "A fox",
        "--pace",
        "300",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline().startswith(b"Session ")
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 1, err
    assert "Stopped: the output was closed. Report: out/session-" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    [data] = list((tmp_path / "out").glob("session-*.json"))
    assert json.loads(data.read_text("utf-8"))["session"]["status"] == "stopped"


@pytest.mark.parametrize("redirect", ["<&-", ">&-", "2>&-", ">/dev/full", "2>/dev/full"])
def test_a_closed_or_full_standard_stream_is_no_crash(redirect: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}
    p = subprocess.run(
        [
            "bash",
            "-c",
            f'"$0" -m bot.cli run "A fox" --rounds 1 {redirect}',
            sys.executable,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    both = p.stdout + p.stderr
    assert b"Traceback" not in both and b"Exception ignored" not in both, both
    # A full stdout stops the session (nobody can watch it); the rest run to the lock.
    assert p.returncode == (1 if redirect == ">/dev/full" else 0), both
    assert list((tmp_path / "out").glob("session-*.md"))


def test_a_typed_line_is_signed_with_a_real_name_never_a_bare_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from bot import cli

    monkeypatch.setattr(cli.getpass, "getuser", lambda: "ada")
    monkeypatch.setattr(cli.pwd, "getpwnam", lambda _: SimpleNamespace(pw_gecos="Ada Lovelace,,,"))
    assert cli._user_name() == "Ada Lovelace"
    monkeypatch.setattr(cli.pwd, "getpwnam", lambda _: SimpleNamespace(pw_gecos="root"))
    monkeypatch.setattr(cli.getpass, "getuser", lambda: "root")
    assert cli._user_name() == cli.TERMINAL_USER
    monkeypatch.setattr(cli.pwd, "getpwnam", lambda _: (_ for _ in ()).throw(KeyError(_)))
    assert cli._user_name() == cli.TERMINAL_USER
