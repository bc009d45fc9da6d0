"""``linepulse api run`` as a real server: one process, or several workers on one port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.harness import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]


def _health(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        assert response.status == 200
        body: dict[str, str] = json.loads(response.read())
        return body


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_server_answers_and_stops_on_sigterm(api_database_url: str, workers: str) -> None:
    port = free_port()
    env = {**os.environ, "LINEPULSE_DATABASE_URL": api_database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "api", "run", "--port", str(port),
         "--workers", workers],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_port(port, timeout=30)
        for _ in range(6):  # whichever worker answers, it reaches the database
            assert _health(port) == {"status": "ok", "database": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal in a single process.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def test_a_bad_worker_count_is_refused() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "api", "run", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "--workers: must be 1..64, not 0" in run.stderr
