"""The Redis benches run for real, small: `bench.queue_compare` and `bench.redis_layouts`.

The full comparison (streaQ, taskiq-redis, the cluster) takes minutes and an optional
extra; here our queue alone, on the test Redis, with a short idle time, checks that
the bench measures and that a SIGKILLed worker's job is run again by another. The
layouts bench runs a few sessions on the test Redis and on the suite's cluster
(SORA_TEST_REDIS_CLUSTER_URL, which scripts/test starts; else the bench's own).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _queues
from tests.redis_fixtures import REDIS_TEST_URL

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Traceback" not in out, out
    return p


async def test_our_queue_is_measured_and_survives_a_sigkill() -> None:
    p = await asyncio.to_thread(
        bench,
        "bench.queue_compare",
        "--redis-url",
        REDIS_TEST_URL,
        "--kinds",
        "ours",
        "--no-cluster",
        "--jobs",
        "40",
        "--one-at-a-time",
        "5",
        "--idle-ms",
        "500",
        "--idle-s",
        "0.2",
    )
    ours = json.loads(p.stdout.strip().splitlines()[-1])["single"]["ours"]
    # One XADD per job; the worker's XREADGROUP and its ack (XACK + XDEL in one MULTI).
    assert ours["one_at_a_time"]["enqueue_rt"] == 1.0
    assert ours["one_at_a_time"]["worker_rt"] >= 2
    assert ours["bulk_2"]["split"][0] + ours["bulk_2"]["split"][1] == 80  # two runs of 40
    assert ours["crash"]["redelivered"] is not None, ours["crash"]
    assert ours["errors"] == []


def test_the_missing_extras_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streaq", None)  # makes `import streaq` fail
    monkeypatch.setitem(sys.modules, "taskiq_redis", None)
    assert _queues.missing_extras() == ["streaq", "taskiq-redis"]


async def test_the_layouts_bench_measures_one_redis_and_says_what_the_cluster_did() -> None:
    cluster = os.environ.get("SORA_TEST_REDIS_CLUSTER_URL")
    p = await asyncio.to_thread(
        bench,
        "bench.redis_layouts",
        "--redis-url",
        REDIS_TEST_URL,
        "--sessions",
        "4",
        *(["--cluster-url", cluster] if cluster else []),
    )
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["single"]["turns"] >= 4 * 6  # every session locked, some turns each
    assert result["single"]["round_trips_per_turn"] > 0
    if result["cluster"]["supported"]:
        for n in ("1", "2"):
            assert result["cluster"][n]["turns"] == result["single"]["turns"]
    else:
        assert "cluster not supported by this build" in p.stdout
