"""Precision selection shared by both stages."""

import pytest
import torch

import common.trainer
from common.trainer import cpu_has_native_bf16, resolve_precision


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "64-true", 32])
def test_explicit_precision_passes_through(precision):
    assert resolve_precision(precision, accelerator="cpu", cpu_bf16=True) == precision


@pytest.mark.parametrize(("native", "cpu_bf16", "expected"), [
    (True, True, "bf16-mixed"), (False, True, "32-true"), (True, False, "32-true"), (False, False, "32-true")])
def test_auto_on_a_cpu_uses_bf16_only_when_asked_and_native(monkeypatch, native, cpu_bf16, expected):
    monkeypatch.setattr(common.trainer, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", accelerator="cpu", cpu_bf16=cpu_bf16) == expected


def test_native_bf16_is_read_from_either_cpu_check_and_unknown_means_no(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert cpu_has_native_bf16() is False  # a torch without the (private) checks: stay in float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16() is True


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_is_an_input_error_naming_the_option(monkeypatch, accelerator):
    from common.errors import InputError
    from common.trainer import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=f"--device {accelerator}: torch sees no CUDA GPU"):
        check_accelerator(accelerator)
    check_accelerator("cpu")
    check_accelerator("auto")


def test_both_stages_progress_bar_shows_no_logger_version_for_a_named_run(tmp_path):
    """Stage 2 names each run (``<image>-<date>-<ms>``); Lightning's bar showed its last 4 characters as
    ``v_num: -545``. The shared bar leaves the version out and keeps the metrics."""
    import lightning as L

    from common.trainer import ProgressBar, tensorboard_logger

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            loss = (self.weight - 1).square().sum()
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    bar = ProgressBar()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=tensorboard_logger(stage="dvi", name="x-20261201-230512-545",
                        root=tmp_path), callbacks=[bar], enable_model_summary=False, enable_checkpointing=False)
    module = Tiny()
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1))
    shown = bar.get_metrics(trainer, module)
    assert "loss" in shown and "v_num" not in shown
