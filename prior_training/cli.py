"""``python -m prior_training``: LightningCLI (fit / validate / test) plus ``export``."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from common.errors import InputError, exit_on_input_error
from common.threads import apply_cpu_threads
from common.prior_files import PriorMeta, export_prior
from common.prior_sets import FULL_SET, PRIOR_SETS
from common.trainer import RUNS_DIR, ProgressBar, quiet_lightning, resolve_precision
from prior_training.checkpoints import read_checkpoint, safe_checkpoint_globals
from prior_training.data import PatchDataModule
from prior_training.module import GaussianDenoiser

# Short spellings of the datamodule's most used options.
SHORTCUTS = {"--dataset": "--data.dataset", "--data-root": "--data.data_root", "--channels": "--data.channels",
             "--precision": "--trainer.precision"}

def trainer_defaults() -> dict[str, object]:
    """Defaults of ``--trainer.*``: precision auto, TensorBoard under runs/prior_training, rich bar, LR monitor,
    a checkpoint of the best worst-sigma change in validation PSNR (plus last.ckpt for resuming)."""
    return {
        "precision": resolve_precision("auto"),
        "max_steps": 20000,
        "val_check_interval": 500,
        "check_val_every_n_epoch": None,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": -1,  # the whole validation before the first step: it sets the default val_targets
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
    learning-rate monitor and a checkpoint of the best ``val/worst_change`` (``--checkpoint.*``: the worst noise
    level's validation PSNR against its target, see GaussianDenoiser)."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.link_arguments("data.channels", "model.channels")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # no version counter: the run's one last.ckpt is overwritten (SaveLastOnStop and Lightning's own
        # end-of-training save would otherwise leave last.ckpt and last-v1.ckpt)
        parser.set_defaults({"checkpoint.monitor": "val/worst_change", "checkpoint.mode": "max", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-{step}", "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(ProgressBar, "progress_bar")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(SaveLastOnStop, "save_last_on_stop")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 - LightningCLI's signature
        """``--print_config`` prints only a configuration the model and data classes accept: their
        constructors hold the rules (``--channels 2``, ``--model.depth 1``, a light fraction above 1 ...), so
        the command line is parsed once without the flag and both classes are built from it (no side effects:
        they only check their options) before the configuration is printed."""
        if isinstance(args, list) and any(str(arg).startswith("--print_config") for arg in args):
            config = parser.parse_args([arg for arg in args if not str(arg).startswith("--print_config")])
            check_options(config[config.subcommand] if config.get("subcommand") else config)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """The options checked as for ``--print_config``; a run shorter than ``log_every_n_steps`` logs at its
        last step (else TensorBoard gets no scalars)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_options(config)
        trainer = config["trainer"]
        max_steps, every = trainer.get("max_steps") or -1, trainer.get("log_every_n_steps")
        if max_steps > 0 and every is not None and every > max_steps:
            trainer["log_every_n_steps"] = max_steps


def check_options(options) -> None:  # noqa: ANN001 - a jsonargparse Namespace of one subcommand
    """Build the datamodule, then the model, from their options: an option they refuse is an InputError naming
    it. The datamodule first, since ``--channels`` is its option (the model's is linked to it)."""
    PatchDataModule(**options.data.as_dict())
    GaussianDenoiser(**options.model.as_dict())


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


def ckpt_path_argument(argv: list[str]) -> str | None:
    """The value of ``--ckpt_path`` in ``argv`` (None when absent)."""
    for index, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name == "--ckpt_path":
            return value if sep else (argv[index + 1] if index + 1 < len(argv) else "")
    return None


def check_ckpt_path(argv: list[str]) -> None:
    """A ``--ckpt_path`` file must be a readable prior_training checkpoint (missing, truncated, foreign or
    code-carrying files are a user error, checked with a ``weights_only`` load before Lightning sees it)."""
    path = ckpt_path_argument(argv)
    if path not in (None, "", "last", "best", "hpc", "registry", "null"):
        read_checkpoint(Path(path), option="--ckpt_path")


def run_lightning(argv: list[str]) -> None:
    """fit / validate / test through LightningCLI (config files, --print_config).

    Checkpoints are restored with ``weights_only=True`` (unless ``--weights_only`` is given; LightningCLI
    itself reads a checkpoint's hyperparameters that way and configures the network from them); a command
    line the parser rejects is one line.
    """
    check_ckpt_path(argv)
    quiet_lightning()
    apply_cpu_threads()
    if argv[:1] in (["fit"], ["validate"], ["test"]) and not any(arg.startswith("--weights_only") for arg in argv):
        argv = [*argv, "--weights_only", "true"]
    try:
        with safe_checkpoint_globals(), warnings.catch_warnings():
            # args= is this command line itself (sys.argv[1:] holds the same words): not the mix LightningCLI warns of
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            PriorTrainingCLI(GaussianDenoiser, PatchDataModule, args=expand_shortcuts(argv),
                             trainer_defaults=trainer_defaults(), seed_everything_default=0,
                             save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False})
    except argparse.ArgumentError as err:
        raise InputError(f"{' '.join(str(err).split())}; see {help_hint(argv)}") from None


COMMANDS = ("fit", "validate", "test", "export")


def help_hint(argv: list[str]) -> str:
    """Where to read more: the command's --help, or the list of commands when the command itself is unknown."""
    command = argv[0] if argv else ""
    if command in COMMANDS:
        return f"'python -m prior_training {command} --help'"
    return f"'python -m prior_training --help' (commands: {', '.join(COMMANDS)})"


def export(checkpoint: Path, out: Path, *, training_data: str | None = None, prior_set: str = FULL_SET) -> str:
    """Write the denoiser of a Lightning checkpoint as a small prior file, recorded in the manifest beside it as
    one of ``prior_set`` (common/prior_sets.py: the set stage 2 takes by default with ``--prior-set``); return
    its sha256."""
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
                     training_noise=module.noise.describe(),
                     steps=int(raw.get("global_step", 0)) + int(raw.get("steps_before", 0)), val_psnr=dict(raw.get("val_psnr", {})),
                     prior_set=prior_set)
    return export_prior(module.denoiser.eval(), out, meta, protect=[checkpoint])


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors (a missing ``--out``, an unknown option) are one InputError line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message}; see {help_hint(['export'])}")


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        parser = OneLineParser(prog="python -m prior_training export",
                                         description="Export a trained denoiser as a deployable prior file.")
        parser.add_argument("checkpoint", type=Path, help="a .ckpt written by 'fit'")
        parser.add_argument("--out", type=Path, required=True, help="the prior file to write, e.g. checkpoints/NAME.pt")
        parser.add_argument("--training-data", default=None, help="description of the training data for the manifest")
        parser.add_argument("--prior-set", choices=PRIOR_SETS, default=FULL_SET,
                            help="the shipped set it joins: full, or light (what the fast preset uses)")
        args = parser.parse_args(argv[1:])
        digest = export(args.checkpoint, args.out, training_data=args.training_data, prior_set=args.prior_set)
        print(f"wrote {args.out} (sha256 {digest})")
        return
    run_lightning(argv)
