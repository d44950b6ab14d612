"""The stage-2 speed benchmark times what it says it times."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_runs_each_configuration_at_its_own_precision():
    """``--compare precision=32-true precision=bf16-mixed`` times one configuration per precision (it once
    ignored the setting and timed float32 twice)."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.dvi_speed", "--sizes", "32", "--steps", "1", "--device", "cpu",
         "--preset", "fast", "--settings", "unet_width=8", "--compare", "precision=32-true", "precision=bf16-mixed"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in run.stdout.splitlines() if "│" in line]
    timed = {row[1]: row[2] for row in rows if row[1].startswith("precision=")}
    assert timed == {"precision=32-true": "32-true", "precision=bf16-mixed": "bf16-mixed"}, run.stdout
    assert any(row[1] == "ratio B/A" and float(row[4]) > 0 for row in rows), run.stdout


def test_a_precision_it_cannot_time_is_one_line():
    run = subprocess.run([sys.executable, "-m", "benchmarks.dvi_speed", "--sizes", "32", "--device", "cpu",
                          "--settings", "precision=64-true"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: precision '64-true' (precision=64-true): dvi_speed times 32-true, 16-mixed, bf16-mixed"]
