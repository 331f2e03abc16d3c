"""`sora-copilot render` and `run --render` as a person runs them: a clip beside the report,
a vendor job that Ctrl-C leaves resumable, and one clear line for each mistake."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from tests.fakes.video_server import FakeVideoAPI, JobScript
from tests.support import _CLI_ENV_DROPPED, run_cli, wait_until


@pytest.fixture(scope="module")
def locked_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A locked offline session's report (the offline model locks every session)."""
    cwd = tmp_path_factory.mktemp("session")
    done = run_cli("run", "A lighthouse keeper finds a message", "--offline", cwd=cwd)
    assert done.returncode == 0, done.stderr.decode()
    (report,) = (cwd / "out").glob("session-*.json")
    return report


@pytest.fixture
def report(locked_report: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out" / locked_report.name
    copy.parent.mkdir()
    shutil.copy(locked_report, copy)
    return copy


@pytest.fixture
async def fake() -> AsyncIterator[FakeVideoAPI]:
    async with FakeVideoAPI() as server:
        yield server


def vendor_env(fake: FakeVideoAPI) -> dict[str, str]:
    return {
        "GEMINI_API_KEY": fake.gemini_key,
        "GEMINI_BASE_URL": fake.base_url,
        "RUNWAYML_API_SECRET": fake.runway_secret,
        "RUNWAYML_BASE_URL": fake.base_url,
        "RENDER_POLL_SECONDS": "0.05",
    }


async def start_cli(*args: str, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """The CLI as a child this event loop does not wait on, so the fake keeps serving."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_CLI_ENV_DROPPED)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        cwd=cwd,
        env={**base, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await start_cli(*args, cwd=cwd, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_run_with_render_ends_with_a_playable_clip_beside_the_report(tmp_path: Path) -> None:
    done = run_cli("run", "A fox at dawn", "--offline", "--render", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    (clip,) = (tmp_path / "out").glob("session-*.draft.mp4")
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames > 0
    assert "Rendering offline" in done.stdout.decode()
    assert f"Clip:   out/{clip.name}" in done.stdout.decode()


@pytest.mark.parametrize("renderer", ["veo", "omni", "runway"])
async def test_render_a_report_on_a_vendor(
    fake: FakeVideoAPI, report: Path, tmp_path: Path, renderer: str
) -> None:
    code, out, err = await cli(
        "render", str(report), "--renderer", renderer, cwd=tmp_path, env=vendor_env(fake)
    )
    assert code == 0, err
    clip = report.parent / report.name.replace(".json", ".draft.mp4")
    assert clip.read_bytes() == fake.clip
    assert len(fake.submissions) == 1
    record = json.loads(clip.with_name(clip.name.replace(".mp4", ".render.json")).read_text())
    assert record["status"] == "done" and record["job_id"]
    assert record["plan"]["renderer"] == renderer
    assert "Master:" in out


async def test_ctrl_c_leaves_the_vendor_job_resumable(
    fake: FakeVideoAPI, report: Path, tmp_path: Path
) -> None:
    fake.script(JobScript("done", checks=100_000))
    env = vendor_env(fake)
    proc = await start_cli("render", str(report), "--renderer", "veo", cwd=tmp_path, env=env)
    record = report.parent / report.name.replace(".json", ".draft.render.json")

    def running() -> bool:
        return record.exists() and json.loads(record.read_text())["status"] == "running"

    await wait_until(running, "the job id saved")
    await wait_until(lambda: fake.submissions and fake.submissions[0].checks > 0, "a check")
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert "--resume" in err.decode() and "keeps running" in err.decode()

    # Without --resume the in-flight job is not submitted again.
    code, _, err2 = await cli("render", str(report), cwd=tmp_path, env=env)
    assert code == 2 and "add --resume" in err2 and len(err2.strip().splitlines()) == 1

    job = fake.submissions[0]
    job.script.checks = job.checks + 2  # the vendor finishes it meanwhile
    code, out, err3 = await cli("render", str(report), "--resume", cwd=tmp_path, env=env)
    assert code == 0, err3
    assert "Resuming" in out and len(fake.submissions) == 1
    assert report.with_name(report.name.replace(".json", ".draft.mp4")).read_bytes() == fake.clip


async def test_a_refusal_is_one_line_and_exits_1(
    fake: FakeVideoAPI, report: Path, tmp_path: Path
) -> None:
    fake.script(JobScript("refused"))
    env = vendor_env(fake)
    code, _, err = await cli("render", str(report), "--renderer", "runway", cwd=tmp_path, env=env)
    assert code == 1
    assert err.strip() == (
        "No clip: Runway refused the prompt: The prompt was rejected by content moderation. "
        "(SAFETY.INPUT.TEXT) (this attempt was charged)"
    )
    assert len(fake.submissions) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["render", "out/session-0000000000000000.json"], "No report at"),
        (["render", "nope!"], "neither a report"),
        (["render", "{report}", "--renderer", "runway"], "needs RUNWAYML_API_SECRET"),
        (["render", "{report}", "--renderer", "sora"], "Unknown renderer"),
        (["render", "{report}", "--resume"], "Nothing to resume"),
    ],
)
def test_bad_input_is_one_line(report: Path, tmp_path: Path, args: list[str], says: str) -> None:
    done = run_cli(*(a.replace("{report}", str(report)) for a in args), cwd=tmp_path)
    err = done.stderr.decode()
    assert done.returncode == 2
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
