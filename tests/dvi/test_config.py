"""The one configuration: CLI defaults, --print_config round trip, presets, validation, the API against the CLI."""

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from common.errors import InputError
from common.images import read_image, write_image
from common.pixels import to_8bit
from common.prior_files import PriorFormat
from dvi.config import OPTIONS, PRESETS, Config, load_preset
from dvi.interface.cli import build_parser, main, parse
from dvi.interface.options import PRIOR_FORMATS, config_from
from tests.conftest import one_error_line, smooth_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", PRESETS)
def test_cli_defaults_and_help_are_the_configurations_for_every_field(preset, capsys):
    expected = load_preset(preset)
    args = parse(["denoise", "--image", "x.png", "--preset", preset])[1]
    assert config_from(args) == expected
    for key, item in OPTIONS.items():
        value = expected.get(key)
        node = args
        for part in item.path:
            node = node[part]
        assert node == ("auto" if value is None else value), key
    with pytest.raises(SystemExit):
        build_parser(preset=preset).parse_args(["denoise", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for key, item in OPTIONS.items():
        value = expected.get(key)
        assert f"(default: {'auto' if value is None else value})" in help_text.split(item.flag + " ", 2)[-1], key


def test_print_config_fed_back_with_config_gives_the_same_settings(tmp_path, capsys):
    argv = ["denoise", "--image", "a.png", "b.png", "--preset", "fast", "--steps", "7", "--beta0", "0.02",
            "--tile", "auto", "--noise-low", "8", "--seed", "3", "--save-components", "--output-dir", "res"]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code == 0
    (tmp_path / "saved.yaml").write_text(capsys.readouterr().out)
    original, again = parse(argv)[1], parse(["denoise", "--config", str(tmp_path / "saved.yaml")])[1]
    assert config_from(again) == config_from(original)
    assert config_from(again).method.steps == 7 and config_from(again).method.noise.low == 8.0
    for key in ("image", "save_components", "output_dir", "preset"):
        assert again[key] == original[key], key


def test_presets_load_and_match_the_documented_values():
    assert load_preset("reference") == Config()
    reference, fast = Config(), load_preset("fast")
    assert (reference.method.steps, reference.method.components, reference.method.mc_samples) == (400, 3, 5)
    assert (reference.method.lr, reference.method.restart_sigma, reference.nets.unet_width) == (1e-3, 0.05, 64)
    assert (fast.method.steps, fast.method.components, fast.method.prior_set, fast.method.mc_samples, fast.method.lr,
            fast.method.restart_sigma, fast.nets.unet_width, fast.nets.aux_layers) == (100, 1, "light", 1, 3e-3, 1.0, 32, 3)
    # everything else is the reference's
    changed = {key for key in OPTIONS if fast.get(key) != reference.get(key)}
    assert changed == {"steps", "components", "prior_set", "mc_samples", "lr", "restart_sigma", "unet_width",
                       "aux_layers"}
    with pytest.raises(InputError, match="--preset"):
        load_preset("slow")


def test_prior_formats_listed_without_torch_are_the_loaders():
    assert PRIOR_FORMATS == tuple(f.value for f in PriorFormat)


# ------------------------------------------------------------------ validation

NUMERIC = [key for key, item in OPTIONS.items() if item.check.kind in (int, float)]
ZERO_ALLOWED = {"ema", "restart_sigma", "noise_low", "batch", "tile", "tile_overlap", "image_every", "seed",
                "max_pixels"}


def expected_valid(key: str, value: float) -> bool:
    """An oracle independent of the checks: no option takes non-finite, negative or astronomically large values;
    zero only where it means something (no tiling, no images, no smoothing...); whole-number options no fractions."""
    if not math.isfinite(value) or value < 0 or value > 1e9:
        return False
    if value == 0:
        return key in ZERO_ALLOWED
    if OPTIONS[key].check.kind is int and not float(value).is_integer():
        return False
    if key == "ema":  # the weight of the old average: below 1
        return value < 1
    if key == "lr":
        return value <= 1
    if key == "noise_high":  # above the default --noise-low 10
        return value > 10
    if key == "noise_low":  # below the default --noise-high 25
        return value < 25
    return True


def candidates(seed: int = 0, count: int = 60) -> list[tuple[str, str, bool]]:
    rng = random.Random(seed)
    specials = ["nan", "inf", "-inf", "-1", "0", "1e300", "1e30", "-0.5", "2.5"]
    cases = [(key, value) for key in ("beta0", "alpha0", "lr", "steps", "seed", "max_memory", "max_pixels")
             for value in ("nan", "inf", "-1")]
    cases += [(rng.choice(NUMERIC), rng.choice(specials)) for _ in range(count)]
    cases += [(key, str(OPTIONS[key].default)) for key in NUMERIC if OPTIONS[key].default is not None]
    return [(key, value, expected_valid(key, float(value))) for key, value in cases]


@pytest.mark.parametrize(("key", "value", "valid"), candidates())
def test_every_invalid_option_value_is_one_line_naming_it(key, value, valid, tmp_path, capsys):
    flag = OPTIONS[key].flag
    line = one_error_line(main, ["estimate-noise", "--image", str(tmp_path / "missing.png"), f"{flag}={value}"],
                          capsys)
    if valid:
        assert "does not exist" in line, line  # the value passed; the (missing) image is the problem
    else:
        assert f"{flag} " in line and "must be" in line, line


@pytest.mark.parametrize(("extra", "named"), [(["--precision", "bogus"], "--precision"), (["--seed", "-1"], "--seed"),
                                              (["--device", "gpu"], "--device"), (["--steps", "x"], "--steps"),
                                              (["--beta0", "nan"], "--beta0"), (["--prior-format", "x"], "--prior-format")])
def test_bad_runtime_values_are_one_line_without_traceback(extra, named, tmp_path, capsys):
    write_image(tmp_path / "n.png", smooth_image(0, size=64))
    line = one_error_line(main, ["denoise", "--image", str(tmp_path / "n.png"), *extra], capsys)
    assert named in line, line
    assert not (tmp_path / "outputs").exists()


def test_help_answers_without_torch():
    code = ("import sys\nfrom dvi.interface.cli import main\ntry:\n    main(['denoise', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n"
            "import dvi\nassert 'torch' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--steps" in run.stdout


# ------------------------------------------------------------------ the API against the CLI

TINY = dict(steps=2, components=1, mc_samples=1, device="cpu", restart_sigma=10.0, seed=4, precision="32-true")


def test_api_on_an_array_equals_the_cli_on_the_same_image_and_seed(tiny_priors, tmp_path, capsys):
    from dvi import denoise

    clean = smooth_image(1, size=64)
    noisy = (clean + 20 / 255 * __import__("torch").randn(clean.shape, generator=__import__("torch").Generator()
                                                          .manual_seed(1))).clamp(0, 1)
    write_image(tmp_path / "noisy.png", noisy)
    pixels = read_image(tmp_path / "noisy.png").pixels  # what the CLI fits: the 8-bit file's values
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    main(["denoise", "--image", "noisy.png", "--priors", str(tiny_priors[3]), "--output", "cli.png", *flags])
    printed = capsys.readouterr().out
    result = denoise(pixels.permute(1, 2, 0).numpy(), priors=[tiny_priors[3]], **TINY)  # (H, W, C) numpy
    assert isinstance(result.image, np.ndarray) and result.image.shape == (64, 64, 3)
    written = read_image(tmp_path / "cli.png").pixels
    np.testing.assert_array_equal(to_8bit(result.fit.denoised).numpy(), to_8bit(written).numpy())
    np.testing.assert_array_equal(result.variance.transpose(2, 0, 1), tifffile.imread(tmp_path / "cli_variance.tif"))
    assert f"delta {result.delta:.2f}" in printed and f"beta0 {result.beta0:g}" in printed
    assert result.restarts == 0 and result.seconds > 0


def test_api_refuses_bad_images_and_options_with_input_errors():
    from dvi import denoise

    with pytest.raises(InputError, match="floats"):
        denoise(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        denoise(np.full((64, 64), 2.0))
    with pytest.raises(InputError, match="--lr"):
        denoise(np.zeros((64, 64)), lr=float("inf"))
    with pytest.raises(InputError, match="unknown setting"):
        denoise(np.zeros((64, 64)), stepz=3)
