"""The stage-1 noise recipe: the mixture law of the noise levels, the loss weights and their options."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from common.errors import InputError
from prior_training.module import GaussianDenoiser
from prior_training.noise import NoiseRecipe
from prior_training.cli import main


def test_the_mixture_puts_its_share_below_each_level() -> None:
    """P(sigma < s) = (1 - f) s / sigma_max + f log(s / floor) / log(sigma_max / floor) for floor <= s."""
    recipe = NoiseRecipe(light_fraction=0.4, sigma_floor=0.1)
    levels = recipe.draw(40000, generator=torch.Generator().manual_seed(3)) * 255.0
    assert levels.min() >= 0 and levels.max() <= 100 + 1e-3
    for s in (0.5, 1.0, 2.0, 10.0, 50.0):
        expected = 0.6 * s / 100 + 0.4 * math.log(s / 0.1) / math.log(1000)
        assert abs((levels < s).float().mean().item() - expected) < 0.01, s


def test_without_a_light_fraction_the_law_is_the_bfcnn_uniform_one() -> None:
    drawn = NoiseRecipe(light_fraction=0.0).draw(1000, generator=torch.Generator().manual_seed(5))
    expected = torch.rand(1000, generator=torch.Generator().manual_seed(5)) * 100 / 255
    torch.testing.assert_close(drawn, expected)  # the same sequence as before the option existed


@pytest.mark.parametrize(("weighting", "at_0", "at_10"), [("mse", 1.0, 1.0), ("inverse_sigma", 1 / 2, 1 / 12),
                                                          ("inverse_variance", 1 / 4, 1 / 104)])
def test_weights_follow_their_equation(weighting: str, at_0: float, at_10: float) -> None:
    weights = NoiseRecipe(loss_weighting=weighting, weight_offset=2.0).weights(torch.tensor([0.0, 10 / 255]))
    torch.testing.assert_close(weights, torch.tensor([at_0, at_10]))


def test_the_weighted_loss_is_a_weighted_mean_of_the_patch_errors() -> None:
    clean, estimate = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    per_patch = (estimate - clean).pow(2).flatten(1).mean(1)
    sigma = torch.tensor([0.0, 98 / 255])
    recipe = NoiseRecipe(loss_weighting="inverse_sigma", weight_offset=2.0)  # weights 1/2 and 1/100
    expected = (per_patch[0] / 2 + per_patch[1] / 100) / (1 / 2 + 1 / 100)
    torch.testing.assert_close(recipe.loss(estimate, clean, sigma), expected)
    torch.testing.assert_close(recipe.loss(estimate, clean, sigma.new_full((2,), 0.1)), F.mse_loss(estimate, clean))
    plain = NoiseRecipe(loss_weighting="mse")
    torch.testing.assert_close(plain.loss(estimate, clean, sigma), F.mse_loss(estimate, clean))


@pytest.mark.parametrize(("option", "value"), [("light_fraction", 1.5), ("sigma_floor", 0.0), ("loss_weighting", "l1"),
                                               ("weight_offset", 0.0), ("sigma_max", float("nan"))])
def test_bad_recipe_options_are_input_errors_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(InputError, match=f"--model.{option} "):
        GaussianDenoiser(depth=3, features=8, **({"light_fraction": 0.5} | {option: value}))


def test_val_targets_need_one_value_per_sigma() -> None:
    with pytest.raises(InputError, match="val_targets"):
        GaussianDenoiser(depth=3, features=8, val_sigmas=(0.0, 25.0), val_targets=(40.0,))


def _trainer(tmp_path, **options) -> L.Trainer:  # noqa: ANN001, ANN003 - test helper
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                     accelerator="cpu", enable_checkpointing=False, **options)


def test_worst_change_is_the_worst_sigma_against_its_target(image_folder, tmp_path) -> None:  # noqa: ANN001
    from prior_training.data import PatchDataModule

    data = PatchDataModule(data_root=image_folder, val_images=2, val_crop=32, num_workers=0)
    model = GaussianDenoiser(depth=3, features=8, val_sigmas=(0.0, 25.0), val_targets=(90.0, 10.0))
    metrics = _trainer(tmp_path).validate(model, datamodule=data, verbose=False)[0]
    changes = [metrics["val/psnr_0"] - 90.0, metrics["val/psnr_25"] - 10.0]
    assert metrics["val/worst_change"] == pytest.approx(min(changes), abs=1e-4)


def test_default_targets_are_the_psnrs_before_the_first_step(image_folder, tmp_path) -> None:  # noqa: ANN001
    from prior_training.data import PatchDataModule

    data = PatchDataModule(data_root=image_folder, val_images=2, val_crop=32, patch_size=16, images_per_batch=2,
                           patches_per_image=2, num_workers=0)
    L.seed_everything(0, verbose=False)
    model = GaussianDenoiser(depth=3, features=8, val_sigmas=(0.0, 25.0))
    start = _trainer(tmp_path).validate(model, datamodule=data, verbose=False)[0]
    assert model.val_targets is None  # an ordinary validation sets no targets
    _trainer(tmp_path, max_steps=2, num_sanity_val_steps=-1, val_check_interval=2).fit(model, datamodule=data)
    assert model.val_targets == pytest.approx((start["val/psnr_0"], start["val/psnr_25"]), abs=1e-4)


def test_print_config_shows_the_recipe_options(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    shown = capsys.readouterr().out
    for line in ("light_fraction: 0.3", "sigma_floor: 0.1", "loss_weighting: log_mse", "weight_offset: 0.5",
                 "monitor: val/worst_change"):
        assert line in shown, line


def test_without_a_sanity_check_the_first_validation_sets_the_targets(image_folder, tmp_path) -> None:  # noqa: ANN001
    """The checkpoint monitors val/worst_change: a fit without sanity check must log it all the same."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from prior_training.data import PatchDataModule

    data = PatchDataModule(data_root=image_folder, val_images=2, val_crop=32, patch_size=16, images_per_batch=2,
                           patches_per_image=2, num_workers=0)
    model = GaussianDenoiser(depth=3, features=8, val_sigmas=(0.0, 25.0))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        accelerator="cpu", max_steps=2, num_sanity_val_steps=0, val_check_interval=2,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/worst_change", mode="max")])
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["val/worst_change"] == 0.0
    assert model.val_targets == pytest.approx((model.val_psnr["0"], model.val_psnr["25"]))
