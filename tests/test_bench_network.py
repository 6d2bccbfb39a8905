"""scripts/bench_network.py still runs end to end (its numbers are for people, not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.netns_support import needs_netns

pytestmark = [pytest.mark.browser, needs_netns]


def test_network_bench_smoke_run_reports_every_viewer_and_both_servers() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench_network.py", "--smoke", "--scenarios", "capped"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    viewers = [line for line in lines if line.startswith("| capped |") and line.count("|") == 10]
    servers = [line for line in lines if line.startswith("| capped |") and line.count("|") == 7]
    assert len(viewers) == 6 and len(servers) == 2, result.stdout
    for row in viewers:
        fps = float(row.strip("|").split("|")[3])
        assert fps > 0, row  # every viewer presented frames
