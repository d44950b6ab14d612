"""ScoreDVI fit on a small synthetic noisy image: it denoises, and it is reproducible."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import common.trainer
from common.metrics import psnr
from common.prior_files import load_prior
from dvi.config import Config
from dvi.fitting.fit import fit_image
from dvi.fitting.module import ScoreDVI
from dvi.method.noise_level import analyse_noise, auto_beta0
from tests.conftest import smooth_image

SMALL = Config().replace(steps=100, lr=3e-3, restart_sigma=10.0, components=2, mc_samples=2, unet_width=16, unet_depth=2,
                         aux_features=16, image_every=0, progress=False, precision="32-true", device="cpu")


def noisy_pair(seed=7, sigma=25.0, channels=3):
    clean = smooth_image(seed, channels=channels, size=64)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255
    return clean, clean + noise


def test_fit_denoises_clearly_and_reports_noise_level(tiny_priors):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    clean, noisy = noisy_pair()
    result = fit_image(noisy, [prior, prior], SMALL)
    before, after = psnr(noisy.clamp(0, 1), clean), psnr(result.denoised, clean)
    assert after > before + 3.0, (before, after)
    assert result.denoised.shape == clean.shape and result.variance.shape == clean.shape
    assert (result.variance > 0).all()
    assert abs(result.noise.delta - 25.0) < 2.5
    assert result.noise == analyse_noise(noisy) and result.beta0 == auto_beta0(result.noise.delta)


def test_same_seed_same_output_other_seed_differs(tiny_priors):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    _, noisy = noisy_pair(seed=3)
    short = SMALL.replace(steps=5, restart_sigma=10.0)
    first, second = fit_image(noisy, [prior], short), fit_image(noisy, [prior], short)
    torch.testing.assert_close(first.denoised, second.denoised, rtol=0, atol=0)
    other = fit_image(noisy, [prior], short.replace(seed=1))
    assert not torch.equal(first.denoised, other.denoised)


def test_restart_rule_refits_once_when_sigma_stays_large(tiny_priors):
    prior, _ = load_prior(tiny_priors[3], channels=3)
    _, noisy = noisy_pair(seed=4)
    result = fit_image(noisy, [prior], SMALL.replace(steps=2, restart_sigma=0.0))
    assert result.restarts == 1 and result.seed == SMALL.runtime.seed + 1


def test_grayscale_image_with_grayscale_prior(tiny_priors):
    prior, _ = load_prior(tiny_priors[1], channels=1)
    clean, noisy = noisy_pair(seed=9, channels=1)
    result = fit_image(noisy, [prior], SMALL.replace(steps=3, restart_sigma=10.0))
    assert result.denoised.shape == (1, 64, 64) and result.variance.shape == (1, 64, 64)


def test_steps_carry_no_image_the_images_are_a_module_buffer(tiny_priors, monkeypatch):
    """Each step's batch is only its number: the noisy image is a buffer of the module, moved to the device
    with it once (a per-step copy from the host would make the host wait for a GPU every step)."""
    prior, _ = load_prior(tiny_priors[3], channels=3)
    _, noisy = noisy_pair(seed=3)
    seen, real = [], ScoreDVI.training_step

    def spy(self, step, batch_idx):
        seen.append((step, self.noisy.data_ptr(), torch.equal(self.noisy[0], noisy)))
        return real(self, step, batch_idx)

    monkeypatch.setattr(ScoreDVI, "training_step", spy)
    fit_image(noisy, [prior], SMALL.replace(steps=3))
    assert [step for step, _, _ in seen] == [0, 1, 2]
    assert len({pointer for _, pointer, _ in seen}) == 1 and all(same for _, _, same in seen)


def test_logged_scalars_and_images_are_those_of_the_steps_lightning_writes(tiny_priors, tmp_path, monkeypatch):
    """Scalars are computed on the steps the Trainer writes (every log_every-th, counting from 1), so each
    TensorBoard point is that step's own loss; images follow image_every the same way."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    prior, _ = load_prior(tiny_priors[3], channels=3)
    clean, noisy = noisy_pair(seed=3)
    losses, real = [], ScoreDVI.training_step

    def spy(self, step, batch_idx):
        out = real(self, step, batch_idx)
        losses.append(float(out["loss"]))
        return out

    monkeypatch.setattr(ScoreDVI, "training_step", spy)
    settings = SMALL.replace(steps=6, log_every=3, image_every=2)
    fit_image(noisy, [prior], settings, clean=clean, name="logged")
    events = EventAccumulator(str(tmp_path / "runs" / "dvi" / "logged")).Reload()
    total = events.Scalars("loss/total")
    assert [point.step for point in total] == [2, 5]
    assert [point.value for point in total] == pytest.approx([losses[2], losses[5]], rel=1e-6)
    assert [point.step for point in events.Scalars("fit/psnr")] == [2, 5]
    assert [image.step for image in events.Images("image/estimate")] == [1, 3, 5]


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_runs_the_priors_in_bf16_on_a_cpu_with_native_bf16(tiny_priors, monkeypatch, native):
    """``precision="auto"`` on a CPU: the priors run in bf16 where the CPU has it natively (and the fit still
    denoises), in float32 elsewhere; the variational nets stay float32 either way."""
    monkeypatch.setattr(common.trainer, "cpu_has_native_bf16", lambda: native)
    prior, _ = load_prior(tiny_priors[3], channels=3)
    clean, noisy = noisy_pair()
    seen = {}

    class Record(Callback):
        def on_train_end(self, trainer, module):
            seen.update(precision=trainer.precision, prior=next(module.priors.parameters()).dtype,
                        nets=next(module.nets.parameters()).dtype)

    result = fit_image(noisy, [prior, prior], SMALL.replace(precision="auto"), callbacks=[Record()])
    expected = torch.bfloat16 if native else torch.float32
    assert seen == {"precision": "bf16-mixed" if native else "32-true", "prior": expected, "nets": torch.float32}
    assert psnr(result.denoised, clean) > psnr(noisy.clamp(0, 1), clean) + 3.0


def test_the_progress_bar_shows_the_fit_by_step_and_name_not_epochs():
    """Stage 2's bar read ``Epoch 0/0 ... 100/100``: a fit has steps; it shows the run's name and ``step``."""
    from types import SimpleNamespace

    from common.trainer import ProgressBar

    bar = ProgressBar()
    module = SimpleNamespace(progress_description="b step")
    bar._trainer = SimpleNamespace(lightning_module=module, max_epochs=1)
    assert bar._get_train_description(0) == "b step"
