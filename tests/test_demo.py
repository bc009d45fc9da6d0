"""The README's first command: ``linepulse demo`` runs the whole platform with no set-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_the_platform_on_embedded_defaults(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LINEPULSE_MQTT_URL", "LINEPULSE_DATABASE_URL")
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "demo",
            "--duration",
            "15",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "gateway gw-line1: online" in out
    assert re.search(r"state  plant1/packaging/line1/filler: \w+", out)
    stored = [int(n) for n in re.findall(r"db     (\d+) samples", out)]
    assert stored and stored[-1] > 0, out
    assert stored == sorted(stored), "the stored sample count went down"
    parts = [int(n) for n in re.findall(r"(\d+) parts counted", out)]
    assert parts and parts[-1] > 0, out
    assert "gateway gw-line1: offline" in out
    # The API ran, the line got its OEE settings, and its OEE came back as figures.
    assert re.search(r"api    viewer key lp_\w+", out), out
    oee = re.findall(r"oee    plant1/packaging/line1 since start: .* OEE ([\d.]+) %", out)
    assert oee and 0 < float(oee[-1]) <= 100, out
    # The local database and broker kept their data under the data dir.
    assert (tmp_path / "demo" / "postgres").is_dir()
    assert (tmp_path / "demo" / "gateway" / "outbox.sqlite").exists()
