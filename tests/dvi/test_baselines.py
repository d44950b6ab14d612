"""dvi/baselines.py and dvi/figures.py: the classical denoisers beside ScoreDVI and the pictures of results."""

import importlib.util
import io

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import InputError
from common.metrics import psnr
from dvi.baselines import BASELINES, METHODS, check_methods, denoise_baseline, settings_record
from dvi.figures import SETTINGS, Panel, comparison_png, psnr_plot_png, result_panels, zoom_region
from tests.conftest import smooth_image

HAS_BM3D = importlib.util.find_spec("bm3d") is not None


def noisy_pair(channels: int = 3, sigma: float = 20.0, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    clean = smooth_image(3, channels=channels, size=size)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * sigma / 255
    return (clean + noise).clamp(0, 1), clean


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", ["nlm", "wavelet", *(["bm3d"] if HAS_BM3D else [])])
def test_each_filter_removes_much_of_the_noise_and_keeps_the_image_format(method, channels):
    noisy, clean = noisy_pair(channels)
    out = denoise_baseline(method, noisy, delta=20.0)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert psnr(out, clean) > psnr(noisy, clean) + 3.0, method


def test_noisy_is_the_input_and_the_noise_level_decides_the_strength():
    noisy, clean = noisy_pair()
    assert torch.equal(denoise_baseline("noisy", noisy, delta=20.0), noisy)
    weak, strong = (denoise_baseline("nlm", noisy, delta=d) for d in (1.0, 20.0))
    assert (weak - noisy).abs().mean() < (strong - noisy).abs().mean()
    assert torch.isfinite(denoise_baseline("wavelet", noisy, delta=0.0)).all()  # sigma 0 does not divide by zero


def test_bad_calls_and_method_lists():
    noisy, _ = noisy_pair()
    with pytest.raises(ValueError, match="not a baseline"):
        denoise_baseline("scoredvi", noisy, delta=5.0)
    for delta in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delta"):
            denoise_baseline("nlm", noisy, delta=delta)
    assert check_methods(["wavelet", "noisy", "scoredvi", "noisy"]) == ("scoredvi", "noisy", "wavelet")
    with pytest.raises(InputError, match="'median' is not one of"):
        check_methods(["scoredvi", "median"])
    with pytest.raises(InputError, match="at least one"):
        check_methods([])
    if not HAS_BM3D:
        with pytest.raises(InputError, match=r"pip install -e '\.\[baselines\]'"):
            check_methods(["bm3d"])
    assert set(BASELINES) < set(METHODS)


def test_the_recorded_settings_tell_the_methods_apart():
    records = [settings_record(method) for method in ("noisy", "nlm", "wavelet")]
    assert records[0] == {"method": "noisy"}
    assert records[1]["nlm_h_factor"] == 0.8 and "wavelet_method" not in records[1]
    assert records[2]["wavelet_method"] == "BayesShrink" and "nlm_patch_size" not in records[2]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_zoom_region_is_the_detailed_square_inside_the_image():
    image = torch.full((3, 64, 80), 0.5)
    image[:, 40:56, 8:24] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))  # the only detail
    top, left, side = zoom_region(image)
    assert side == 16 and 0 <= top <= 64 - side and 0 <= left <= 80 - side
    assert abs(top - 40) <= side // 2 and abs(left - 8) <= side // 2


def test_comparison_has_one_panel_per_result_with_scores_and_a_clean_panel_last():
    noisy, clean = noisy_pair()
    denoised = denoise_baseline("wavelet", noisy, delta=20.0)
    panels = result_panels(noisy, clean=clean, denoised=denoised, variance=torch.rand(3, 48, 48) * 1e-3,
                           baselines={"noisy": noisy, "nlm": denoise_baseline("nlm", noisy, delta=20.0)})
    assert [p.title for p in panels] == ["noisy input", "ScoreDVI", "ScoreDVI uncertainty", "NLM", "clean reference"]
    assert panels[0].caption.startswith(f"PSNR {psnr(noisy, clean):.2f} dB")
    assert panels[2].heat and float(panels[2].image.max()) == pytest.approx(1.0)
    width, height = png_size(comparison_png(panels, suptitle="x"))
    assert width == round(len(panels) * SETTINGS.panel_width * SETTINGS.dpi)
    assert height == round(SETTINGS.panel_height * SETTINGS.dpi)
    gray = [Panel("gray", noisy[:1])]  # a gray image is drawn too, without a reference (no caption)
    assert png_size(comparison_png(gray))[0] == round(SETTINGS.panel_width * SETTINGS.dpi)
    assert result_panels(noisy)[0].caption == ""
    with pytest.raises(ValueError):
        comparison_png([])


def test_psnr_plot_draws_every_method_and_refuses_an_empty_table():
    rows = [{"name": f"img{i}", "method": m, "psnr": str(30 + i + (m == "nlm"))}
            for i in range(3) for m in ("noisy", "nlm")]
    rows.append({"name": "img0", "method": "wavelet", "psnr": "nan"})  # a failed score is left out, not drawn
    width, height = png_size(psnr_plot_png(rows, title="t"))
    assert width == round(SETTINGS.plot_min_width * SETTINGS.dpi) and height == round(SETTINGS.plot_height * SETTINGS.dpi)
    pixels = np.asarray(Image.open(io.BytesIO(psnr_plot_png(rows))).convert("L"))
    assert pixels.min() < 100  # lines and text were drawn on the white figure
    with pytest.raises(ValueError, match="no rows"):
        psnr_plot_png([])
