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


def _small_step(priors):
    import torch

    from benchmarks.dvi_speed import build, configured, training_step
    from dvi.config import load_preset

    settings = configured(load_preset("fast"), "unet_width=8")
    y = torch.rand(1, 3, 32, 32)
    return training_step(*build(settings, y, priors=priors, device="cpu"), precision="32-true"), settings


def test_flop_phases_split_the_total_and_the_priors_share_is_the_convolutions_of_the_k_priors():
    import torch

    from benchmarks.dvi_speed import flop_by_phase, flop_per_step
    from common.bfdncnn import BFDnCNN

    torch.manual_seed(0)
    depth, features, channels, pixels = 4, 6, 3, 32 * 32
    priors = [BFDnCNN(channels=channels, depth=depth, features=features).eval() for _ in range(3)]
    step, settings = _small_step(priors)
    phases = flop_by_phase(step)
    assert sum(phases.values()) == flop_per_step(step)
    # 2 FLOP per multiply-add, 9 taps, C->F, (depth-2) x F->F, F->C, per sample of each of the K components
    per_call = 2 * 9 * pixels * (channels * features + (depth - 2) * features**2 + features * channels)
    assert phases["priors"] == settings.method.components * settings.method.mc_samples * per_call
    assert phases["nets"] > 0 and phases["backward"] > phases["nets"]  # backward: input and weight gradients


def test_profile_times_every_phase_of_a_real_step():
    from benchmarks.dvi_speed import phase_rows, profile_steps
    from common.bfdncnn import BFDnCNN
    from dvi.fitting.module import PHASES

    step, _ = _small_step([BFDnCNN(channels=3, depth=3, features=4).eval()])
    step()
    events, wall = profile_steps(step, device="cpu", steps=2)
    rows = {phase: seconds for phase, seconds, _ in phase_rows(events, wall=wall, steps=2, flop={})}
    assert list(rows) == [*PHASES, "other"]
    assert all(rows[phase] > 0 for phase in PHASES), rows
    assert sum(rows[phase] for phase in PHASES) <= 1.01 * wall  # the labelled regions do not overlap


def test_grouped_priors_compute_the_k_separate_priors():
    import torch

    from benchmarks.prior_forward import grouped, variants
    from common.bfdncnn import BFDnCNN

    torch.manual_seed(1)
    folded = [BFDnCNN(channels=3, depth=4, features=5).folded().requires_grad_(False) for _ in range(3)]
    x = torch.rand(2, 3, 3, 12, 12)
    with torch.no_grad():
        separate = torch.stack([net(x[:, k]) for k, net in enumerate(folded)], dim=1)
        together = grouped(folded)(x.flatten(1, 2)).view_as(x)
        torch.testing.assert_close(together, separate, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(separate[:, 0], separate[:, 1])  # the components really differ
        calls = variants(folded, x)
        for name in ("nchw", "nhwc", "grouped"):
            torch.testing.assert_close(calls[name](), separate, rtol=1e-5, atol=1e-6)
