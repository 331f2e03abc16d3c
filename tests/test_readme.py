"""Every command the README shows runs as shown, unless it needs Slack or a deploy platform.

A command is a line of a ```sh block, without its trailing `# comment`. Those that need
Slack, a platform account or a public host are skipped by their first words (SKIPPED,
each with its reason); every other one runs here, in a fresh folder, against the test
Redis and without any key, and must exit 0. A command added to the README is therefore
run by this test unless it is added to SKIPPED with a reason. The benchmarks run with
`--help` (they take minutes at their sizes; each is its own command), which checks that
the module and its options exist.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.redis_fixtures import *  # noqa: F403
from tests.redis_fixtures import REDIS_TEST_URL, delete_prefix

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

SKIPPED = {
    "./scripts/test": "the test suite itself",
    "sora-copilot serve": "needs Slack (a signing secret and a bot token)",
    "sora-copilot worker": "needs Slack (a bot token)",
    "sora-copilot dev": "needs Slack (Socket Mode)",
    "heroku": "needs a Heroku account",
    "git push": "needs a deploy remote",
    "curl https://YOUR-HOST": "needs the deployed host",
}
BENCH = ".venv/bin/python -m bench."


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^ *```(?:sh|bash)\n(.*?)^ *```", text, flags=re.M | re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def skip_reason(command: str) -> str | None:
    for start, why in SKIPPED.items():
        if command == start or command.startswith(start + " "):
            return why
    return None


def as_run_here(command: str) -> str:
    """The command with its program spelled as it is found in this checkout."""
    python = shlex.quote(sys.executable)
    if command.startswith(BENCH):
        return f"{python} -m bench.{command[len(BENCH) :].split()[0]} --help"
    if command.startswith("./scripts/sora-copilot"):
        wrapper = shlex.quote(str(ROOT / "scripts" / "sora-copilot"))
        return wrapper + command[len("./scripts/sora-copilot") :]
    if command.startswith("sora-copilot"):
        return f"{python} -m bot.cli" + command[len("sora-copilot") :]
    if command.startswith(".venv/bin/python"):
        return python + command[len(".venv/bin/python") :]
    return command


COMMANDS = readme_commands()


def test_the_readme_shows_commands() -> None:
    assert COMMANDS[:2] == [
        './scripts/sora-copilot run "A lighthouse keeper finds a message in a bottle"',
        "./scripts/test",
    ]
    assert sum(1 for c in COMMANDS if skip_reason(c) is None) >= 5


@pytest.mark.parametrize("command", [c for c in COMMANDS if skip_reason(c) is None])
async def test_a_readme_command_runs_as_shown(
    command: str, tmp_path: Path, real_redis: Redis, prefix: str
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "SLACK_", "GEMINI_", "RUNWAYML_", "REDIS_"))
    }
    env.update(
        SORA_ENV_FILE=os.devnull,
        REDIS_URL=REDIS_TEST_URL,
        REDIS_PREFIX=prefix,
        PYTHONPATH=str(ROOT),
        BENCH_REDIS_URL=REDIS_TEST_URL,
    )
    p = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", as_run_here(command)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    await delete_prefix(real_redis, f"{prefix}-terminal")
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, f"{command!r} exited {p.returncode}:\n{out[-2000:]}"
    assert "Traceback" not in out, out[-2000:]


def test_the_configuration_section_names_every_setting() -> None:
    from bot.config import Settings

    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    missing = [n.upper() for n in Settings.model_fields if f"`{n.upper()}`" not in section]
    assert not missing, missing
