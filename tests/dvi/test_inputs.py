"""Every input checked up front (:mod:`dvi.interface.inputs`): one ``error:`` line, before any fit or file.

The mechanisms of issue 20: all images of a ``denoise`` read and checked before the first fit; the whole pair
list of an ``evaluate`` before its output folder and lock exist; the same size wording from every command; the
preset taken from wherever it was given; the API's arguments refused as InputError.
"""

from pathlib import Path

import numpy as np
import pytest

import dvi.fitting.large
from common.errors import InputError
from common.images import write_image
from dvi.config import load_preset
from dvi.interface.cli import main, parse
from dvi.interface.options import config_from
from tests.conftest import one_error_line, smooth_image
from tests.dvi.test_cli import FAST, files_and_bytes, write_pair


def no_fits(monkeypatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr(dvi.fitting.large, "fit_images", lambda *a, **k: calls.append(a) or [])
    monkeypatch.setattr(dvi.fitting.large, "fit_tiled", lambda *a, **k: calls.append(a))
    return calls


def test_two_image_denoise_with_one_too_small_writes_nothing(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok, _ = write_pair(tmp_path)
    small = tmp_path / "small20.png"
    write_image(small, smooth_image(0, size=20))
    fits, before = no_fits(monkeypatch), files_and_bytes(tmp_path)
    line = one_error_line(main, ["denoise", "--image", str(ok), str(small), "--priors", str(tiny_priors[3]),
                                 *FAST, "--output-dir", "out"], capsys)
    assert "small20.png is 20x20 pixels, too small" in line, line
    assert fits == [] and files_and_bytes(tmp_path) == before and not (tmp_path / "out").exists()


def test_the_size_rule_has_one_wording_in_every_command(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = tmp_path / "small20.png"
    write_image(small, smooth_image(0, size=20))
    estimate = one_error_line(main, ["estimate-noise", "--image", str(small)], capsys)
    denoise = one_error_line(main, ["denoise", "--image", str(small), "--priors", str(tiny_priors[3]), *FAST],
                             capsys)
    for line in (estimate, denoise):
        assert f"{small} is 20x20 pixels, too small" in line and "stride" not in line, line


@pytest.mark.parametrize("case", ["empty_list", "list_and_noisy", "list_is_folder", "crop_too_large",
                                  "one_pair_too_small", "gray_priors_for_rgb"])
def test_evaluate_validates_the_whole_pair_list_before_creating_anything(case, tiny_priors, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    write_image(data / "a_noisy.png", smooth_image(1))
    write_image(data / "a_clean.png", smooth_image(1))
    (tmp_path / "pairs.txt").write_text("data/a_noisy.png data/a_clean.png\n")
    source, priors, extra = ["--list", "pairs.txt"], [str(tiny_priors[3])], []
    if case == "empty_list":
        (tmp_path / "pairs.txt").write_text("# nothing yet\n")
    elif case == "list_and_noisy":
        source += ["--noisy", "data"]
    elif case == "list_is_folder":
        source = ["--list", "data"]
    elif case == "crop_too_large":
        extra = ["--crop", "1000"]
    elif case == "one_pair_too_small":
        write_image(data / "b_noisy.png", smooth_image(2, size=20))
        write_image(data / "b_clean.png", smooth_image(2, size=20))
        (tmp_path / "pairs.txt").write_text("data/a_noisy.png data/a_clean.png\ndata/b_noisy.png data/b_clean.png\n")
    elif case == "gray_priors_for_rgb":
        priors = [str(tiny_priors[1])]
    fits, before = no_fits(monkeypatch), files_and_bytes(tmp_path)
    line = one_error_line(main, ["evaluate", *source, "--output", "out", "--priors", *priors, *FAST, *extra],
                          capsys)
    expected = {"empty_list": "lists no pairs", "list_and_noisy": "--list replaces --noisy",
                "list_is_folder": "is a folder", "crop_too_large": "--crop 1000 is larger",
                "one_pair_too_small": "b_noisy.png is 20x20 pixels", "gray_priors_for_rgb": "1-channel"}[case]
    assert expected in line, line
    assert fits == [] and files_and_bytes(tmp_path) == before
    assert not (tmp_path / "out").exists()  # neither the folder nor its .results.csv.lock


def test_a_preset_given_in_a_config_file_is_applied(tmp_path):
    (tmp_path / "f.yaml").write_text("preset: fast\n")
    command, args = parse(["denoise", "--image", "x.png", "--config", str(tmp_path / "f.yaml")])
    fast, reference = load_preset("fast"), load_preset("reference")
    assert fast.method.steps != reference.method.steps
    config = config_from(args)
    assert (command, args.preset) == ("denoise", "fast") and config.method == fast.method and config.nets == fast.nets
    _, args = parse(["denoise", "--image", "x.png", "--config", str(tmp_path / "f.yaml"), "--steps", "3"])
    assert config_from(args).method.steps == 3  # an option given still wins over the preset


def test_the_api_refuses_bad_arguments_as_input_errors(tmp_path):
    from dvi.api import denoise, prior_list

    image = np.full((64, 64, 3), 0.5, np.float32)
    with pytest.raises(InputError, match="preset='fast'"):
        denoise(image, config="fast")
    with pytest.raises(InputError, match="bogus"):
        denoise(image, bogus=1)
    assert prior_list("a.pt") == [Path("a.pt")] and prior_list(Path("a.pt")) == [Path("a.pt")]
    with pytest.raises(InputError, match="a.pt"):
        denoise(image, priors=str(tmp_path / "a.pt"), preset="fast", steps=1)
    with pytest.raises(InputError, match="priors must be"):
        prior_list(3)


def test_a_bad_value_names_its_option_from_a_config_file_and_the_command_line(tmp_path, capsys):
    (tmp_path / "f.yaml").write_text('steps: "many"\n')
    line = one_error_line(main, ["denoise", "--image", "x.png", "--config", str(tmp_path / "f.yaml")], capsys)
    assert line == "error: --steps (config key steps) must be a whole number, not 'many'", line
    line = one_error_line(main, ["denoise", "--image", "x.png", "--steps", "many"], capsys)
    assert line == "error: --steps must be a whole number, not 'many'", line
    line = one_error_line(main, ["evaluate", "--list", "x.txt", "--limit", "1.5"], capsys)
    assert line == "error: --limit must be a whole number, not '1.5'", line
