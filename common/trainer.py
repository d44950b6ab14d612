"""One Trainer for both stages: device, precision, TensorBoard under ``runs/``, rich, seeding."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from common.errors import InputError

RUNS_DIR = Path("runs")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN runs bf16
    convolutions faster than float32; elsewhere bf16 on a CPU is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent means "not known"
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str | int, *, accelerator: str = "auto", cpu_bf16: bool = False) -> str | int:
    """Lightning precision for ``precision``; ``"auto"`` picks by hardware.

    ``auto``: ``bf16-mixed`` on a CUDA GPU that supports bfloat16, ``16-mixed`` on older GPUs; on a CPU
    (or when ``accelerator`` is ``cpu``) ``32-true``, or ``bf16-mixed`` when ``cpu_bf16`` is set and the
    CPU has native bfloat16 (:func:`cpu_has_native_bf16`). Other values pass through unchanged.
    """
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_bf16 and cpu_has_native_bf16() else "32-true"


def check_accelerator(accelerator: str, *, option: str = "--device") -> None:
    """Refuse a GPU ``accelerator`` (``gpu``/``cuda``) on a machine where torch sees none: one
    :class:`InputError` line naming ``option``, not Lightning's traceback."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError(f"{option} {accelerator}: torch sees no CUDA GPU on this machine; use {option} cpu or auto")


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (hardware lines, tips); warnings and errors still show."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


class ProgressBar(RichProgressBar):
    """The rich progress bar of both stages, without the logger version (``v_num``: a number only for
    ``version_N`` runs, the tail of a named run's name otherwise) and without an epoch total where training is bounded by steps or time (Lightning shows ``max_epochs - 1``,
    i.e. ``Epoch 3/-2`` for the unbounded ``max_epochs=-1``)."""

    def get_metrics(self, trainer, pl_module) -> dict:  # noqa: ANN001 - Lightning's hook signature
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        own = getattr(self.trainer.lightning_module, "progress_description", None)
        if own:  # a stage-2 fit: one epoch of steps, named by its image (dvi.fitting.fit)
            return str(own)
        description = super()._get_train_description(current_epoch)
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs < 1:
            description = description.replace(f"/{max_epochs - 1}", "", 1)
        return description


def default_callbacks(*, learning_rate: bool) -> list[Callback]:
    """The progress bar (:class:`ProgressBar`), plus LearningRateMonitor when the stage has a learning-rate schedule."""
    callbacks: list[Callback] = [ProgressBar(leave=True)]
    if learning_rate:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def tensorboard_logger(*, stage: str, name: str | None = None, root: Path = RUNS_DIR) -> TensorBoardLogger:
    """TensorBoard logs under ``root/<stage>/<name>/`` (``name`` None: ``version_N``)."""
    return TensorBoardLogger(save_dir=str(root), name=stage, version=name, default_hp_metric=False)


class Trainer(L.Trainer):
    """``lightning.Trainer`` that also accepts ``precision="auto"`` (see :func:`resolve_precision`)."""

    def __init__(self, *args: Any, precision: str | int = "auto", accelerator: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, accelerator=accelerator,
                         precision=resolve_precision(precision, accelerator=accelerator), **kwargs)


def build_trainer(
    *,
    stage: str,
    name: str | None = None,
    precision: str | int = "auto",
    accelerator: str = "auto",
    seed: int | None = 0,
    learning_rate_monitor: bool = False,
    callbacks: list[Callback] | None = None,
    root: Path = RUNS_DIR,
    progress_bar: bool = True,
    **trainer_options: Any,
) -> Trainer:
    """The Trainer both stages use: seeded, TensorBoard-logged, rich progress, chosen precision."""
    quiet_lightning()
    if seed is not None:
        L.seed_everything(seed, workers=True, verbose=False)
    extra = default_callbacks(learning_rate=learning_rate_monitor) if progress_bar else []
    return Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=tensorboard_logger(stage=stage, name=name, root=root),
        callbacks=extra + list(callbacks or []),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        **trainer_options,
    )
