"""Stage 1 with ``--trainer.devices 2 --trainer.strategy ddp`` on the CPU: a real 2-process run over gloo."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from common.prior_files import load_prior  # noqa: F401 - the export below must read back
from tests.prior_training.test_cli import TINY

ROOT = Path(__file__).resolve().parents[2]


class LossRecorder(L.Callback):
    """Writes each rank's training loss per step to ``folder/rank<R>.txt`` (before DDP averages gradients,
    the loss is the rank's own batch's)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as handle:
            handle.write(f"{trainer.global_step} {float(loss):.9g}\n")


def test_two_process_ddp_fit_writes_a_checkpoint_and_ranks_draw_their_own_batches(image_folder, tmp_path):
    losses = tmp_path / "losses"
    command = [sys.executable, "-m", "prior_training", "fit", "--dataset", "folder", "--data-root", str(image_folder),
               *TINY, "--data.pipeline", "device", "--trainer.max_steps", "4", "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
               "--trainer.callbacks+=tests.prior_training.test_ddp.LossRecorder",
               "--trainer.callbacks.folder", str(losses)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
    run = tmp_path / "runs" / "prior_training" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and list(run.glob("events.out.tfevents.*"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    per_rank = [dict(line.split() for line in (losses / f"rank{r}.txt").read_text().splitlines()) for r in (0, 1)]
    assert set(per_rank[0]) == set(per_rank[1]) == {"1", "2", "3", "4"}
    # the same weights on both ranks at every step (DDP), so equal losses would mean equal batches
    assert all(per_rank[0][step] != per_rank[1][step] for step in per_rank[0]), per_rank
