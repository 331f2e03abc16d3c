"""A real 3-master Redis Cluster on loopback ports, for the tests that run against a cluster.

`scripts/test` starts one before pytest and exports its URL as
SORA_TEST_REDIS_CLUSTER_URL; a test run without it (pytest alone) starts its
own through the `cluster_url` fixture. Either way the servers are ours, on free
ports, with no persistence, in a temporary directory, and are shut down after.

    python -m tests.redis_cluster start DIR   # prints redis://127.0.0.1:PORT
    python -m tests.redis_cluster stop DIR
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

MASTERS = 3
BUS_OFFSET = 10_000  # Redis Cluster's bus port is the client port + 10000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int = MASTERS) -> list[int]:
    """`n` client ports whose cluster bus ports are free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = random.randint(20_000, 29_999)
        if p not in ports and _free(p) and _free(p + BUS_OFFSET):
            ports.append(p)
    return ports


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    ).stdout


def start(directory: Path) -> str:
    """Start the cluster's servers in `directory`, join them, wait until it serves; its URL."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("a Redis Cluster needs redis-server and redis-cli on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    ports = free_ports()
    for port in ports:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(directory / f"redis-{port}.pid"),
                "--logfile",
                str(directory / f"redis-{port}.log"),
            ],
            check=True,
            timeout=10,
        )
    (directory / "ports").write_text(" ".join(map(str, ports)))
    for port in ports:
        _wait(lambda p=port: _cli(p, "ping").strip() == "PONG", f"redis-server on {port}")
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for port in ports:
        _wait(lambda p=port: "cluster_state:ok" in _cli(p, "cluster", "info"), "cluster_state:ok")
    return f"redis://127.0.0.1:{ports[0]}"


def stop(directory: Path) -> None:
    """Shut down the servers `start` left in `directory`."""
    ports_file = directory / "ports"
    if not ports_file.exists():
        return
    for port in ports_file.read_text().split():
        _cli(int(port), "shutdown", "nosave")
    ports_file.unlink()


def _wait(ready: object, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


if __name__ == "__main__":
    command, where = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        print(start(where))
    else:
        stop(where)
