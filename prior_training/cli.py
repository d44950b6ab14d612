"""``python -m prior_training``: LightningCLI (fit / validate / test) plus ``export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from common.errors import InputError, exit_on_input_error
from common.prior_files import PriorMeta, export_prior
from common.trainer import RUNS_DIR, quiet_lightning, resolve_precision
from prior_training.checkpoints import read_checkpoint, safe_checkpoint_globals
from prior_training.data import PatchDataModule
from prior_training.module import GaussianDenoiser

# Short spellings of the datamodule's most used options.
SHORTCUTS = {"--dataset": "--data.dataset", "--data-root": "--data.data_root", "--channels": "--data.channels",
             "--precision": "--trainer.precision"}

def trainer_defaults() -> dict[str, object]:
    """Defaults of ``--trainer.*``: precision auto, TensorBoard under runs/prior_training, rich bar, LR monitor,
    best-validation-PSNR checkpoint (plus last.ckpt for resuming)."""
    return {
        "precision": resolve_precision("auto"),
        "max_steps": 20000,
        "val_check_interval": 500,
        "check_val_every_n_epoch": None,
        "log_every_n_steps": 10,
        "benchmark": True,  # fixed patch shapes: cuDNN picks its fastest convolutions once
        "logger": lazy_instance(TensorBoardLogger, save_dir=str(RUNS_DIR), name="prior_training",
                                default_hp_metric=False),
    }


class SaveLastOnStop(Callback):
    """Write ``last.ckpt`` when training ends after the last validation (a ``max_time`` or ``max_steps``
    stop between validations): otherwise ``last.ckpt`` only holds the weights of the last validation and a
    time-limited round loses the steps since then."""

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning's hook signature
        for checkpoint in trainer.checkpoint_callbacks:
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.save_last and checkpoint.dirpath:
                name = f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
                trainer.save_checkpoint(Path(checkpoint.dirpath) / name)


class PriorTrainingCLI(LightningCLI):
    """Links the image channel count of the data to the network; adds the rich progress bar, the
    learning-rate monitor and a checkpoint of the best mean validation PSNR (``--checkpoint.*``)."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.link_arguments("data.channels", "model.channels")
        parser.link_arguments("model.sigma_max", "data.sigma_max")  # the device pipeline draws the noise
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/psnr", "checkpoint.mode": "max", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-{step}"})
        parser.add_lightning_class_args(RichProgressBar, "progress_bar")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(SaveLastOnStop, "save_last_on_stop")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})


def expand_shortcuts(argv: list[str]) -> list[str]:
    """Rewrite ``--dataset X`` / ``--dataset=X`` (and the other SHORTCUTS) to the datamodule's names, and
    ``--trainer.precision auto`` to the precision :func:`resolve_precision` picks for this machine."""
    out: list[str] = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name in SHORTCUTS:
            name = SHORTCUTS[name]
        if out and out[-1] == "--trainer.precision" and arg == "auto" or name == "--trainer.precision" and value == "auto":
            value, arg = str(resolve_precision("auto")), str(resolve_precision("auto"))
        out.append(name + sep + value if sep else (name if name.startswith("--") else arg))
    return out


def check_ckpt_path(argv: list[str]) -> None:
    """A ``--ckpt_path`` that names a missing file is a user error, not a traceback."""
    for index, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name == "--ckpt_path":
            path = value if sep else (argv[index + 1] if index + 1 < len(argv) else "")
            if path not in ("", "last", "best", "hpc", "registry", "null") and not Path(path).is_file():
                raise InputError(f"--ckpt_path {path} does not exist; pass a .ckpt written by 'fit' "
                                 "(e.g. runs/prior_training/version_0/checkpoints/last.ckpt)")


def run_lightning(argv: list[str]) -> None:
    """fit / validate / test through LightningCLI (config files, --print_config)."""
    check_ckpt_path(argv)
    quiet_lightning()
    with mock.patch.object(sys, "argv", [sys.argv[0], *expand_shortcuts(argv)]):
        PriorTrainingCLI(GaussianDenoiser, PatchDataModule, trainer_defaults=trainer_defaults(),
                         seed_everything_default=0, save_config_kwargs={"overwrite": True})


def export(checkpoint: Path, out: Path, *, training_data: str | None = None) -> str:
    """Write the denoiser of a Lightning checkpoint as a small prior file; return its sha256."""
    raw = read_checkpoint(checkpoint)
    try:
        hparams = {key: value for key, value in raw["hyper_parameters"].items()
                   if not key.startswith("_") and key != "init_prior"}
        module = GaussianDenoiser(**hparams)
        module.load_state_dict(raw["state_dict"])
    except Exception as err:  # a damaged or foreign file fails in many ways
        raise InputError(f"cannot read {checkpoint} as a prior_training checkpoint ({type(err).__name__}); "
                         "pass a .ckpt written by 'python -m prior_training fit'") from None
    data = raw.get("datamodule_hyper_parameters", {})
    described = training_data or f"{data.get('dataset', '?')}:{data.get('data_root') or 'cache'}"
    hp = module.hparams
    meta = PriorMeta(channels=hp.channels, depth=hp.depth, features=hp.features,
                     sigma_range=(0.0, float(hp.sigma_max)), training_data=described,
                     steps=int(raw.get("global_step", 0)) + int(raw.get("steps_before", 0)), val_psnr=dict(raw.get("val_psnr", {})))
    return export_prior(module.denoiser.eval(), out, meta)


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        parser = argparse.ArgumentParser(prog="python -m prior_training export",
                                         description="Export a trained denoiser as a deployable prior file.")
        parser.add_argument("checkpoint", type=Path, help="a .ckpt written by 'fit'")
        parser.add_argument("--out", type=Path, required=True, help="the prior file to write, e.g. checkpoints/NAME.pt")
        parser.add_argument("--training-data", default=None, help="description of the training data for the manifest")
        args = parser.parse_args(argv[1:])
        digest = export(args.checkpoint, args.out, training_data=args.training_data)
        print(f"wrote {args.out} (sha256 {digest})")
        return
    run_lightning(argv)
