"""The benchmark still runs end to end (its numbers are for people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_bench_smoke_run_reports_both_servers() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--viewers", "2", "--warmup", "1", "--duration", "3",
         "--width", "320", "--height", "240"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| robotcam |")
            or line.startswith("| aiortc-example |")]
    assert len(rows) == 2, result.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "2" and cells[2] == "2/2", row  # every viewer got video
