"""What a Python buildpack reads: a dependency file, the Python version, the processes."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_requirements_install_this_project_whose_pins_live_in_pyproject() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # One place for the pins; no index URL, no second list to drift from pyproject.toml.
    assert lines == ["."]


def test_the_python_version_file_names_a_version_the_project_supports() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    major, minor = (int(p) for p in version.split(".")[:2])
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires.startswith(">=")
    low = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    assert (major, minor) >= low[:2]


def test_the_procfile_runs_the_web_process_and_a_worker() -> None:
    procs = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert {k: v.strip() for k, v in procs.items()} == {
        "web": "sora-copilot serve",
        "worker": "sora-copilot worker",
    }
