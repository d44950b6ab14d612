"""``python -m dvi evaluate``: pairs from folders or a list, per-image CSV, summary, resume, errors."""

import csv
from pathlib import Path

import pytest
import torch

import dvi.interface.cli
import dvi.fitting.large
from common.images import read_image, write_image
from common.metrics import psnr
from dvi.interface.cli import main
from dvi.interface.evaluate import COLUMNS
from tests.conftest import one_error_line as shared_one_error_line
from tests.conftest import smooth_image

FAST = ["--steps", "2", "--components", "1", "--mc-samples", "1", "--device", "cpu", "--restart-sigma", "10"]
# restart-sigma 10: after 2 steps sigma is still large; keep the restart rule from doubling every fit



def write_pair(folder: Path, name: str, seed: int, *, size: int = 64, clean_size: int | None = None) -> None:
    clean = smooth_image(seed, size=size)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * 20 / 255
    write_image(folder / f"{name}_noisy.png", noisy.clamp(0, 1))
    write_image(folder / f"{name}_clean.png", clean if clean_size is None else smooth_image(seed, size=clean_size))


def read_rows(table: Path) -> list[dict[str, str]]:
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def summary_rows(out: str, method: str = "scoredvi") -> dict[str, list[str]]:
    """The rich summary table's body rows of ``method``, keyed by subset, without the method cell
    (subset, images, PSNR, SSIM, 8-bit PSNR, noisy PSNR, s/image)."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 8 and cells[0] and cells[1] == method and cells[2].isdigit():
            rows[cells[0]] = [cells[0], *cells[2:]]
    return rows


def count_fits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the runs of each image fitted (one per image of a batch)."""
    names, real = [], dvi.fitting.large.fit_images

    def counting(images, *args, name=None, **kwargs):
        names.extend([name] * len(images))
        return real(images, *args, name=name, **kwargs)

    monkeypatch.setattr(dvi.fitting.large, "fit_images", counting)
    return names


def test_folder_pairs_csv_summary_and_resume(tiny_priors, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    write_pair(data, "a", 1)
    write_pair(data, "b", 2)
    argv = ["evaluate", "--noisy", "data", "--clean", "data", "--output", "out", "--priors", str(tiny_priors[3]), *FAST]
    fits = count_fits(monkeypatch)
    main(argv)
    assert [name.split("/")[0] for name in fits] == ["evaluate", "evaluate"]

    table = tmp_path / "out" / "results.csv"
    rows = read_rows(table)
    assert [row["name"] for row in rows] == ["a", "b"]
    for row in rows:
        clean = read_image(data / f"{row['name']}_clean.png").pixels
        noisy = read_image(data / f"{row['name']}_noisy.png").pixels
        denoised = read_image(tmp_path / "out" / f"{row['name']}_denoised.png")
        assert denoised.pixels.shape == (3, 64, 64) and denoised.bit_depth == 8
        # the PNG is 8-bit: it scores exactly the psnr_8bit column; psnr is that of the float estimate
        assert abs(psnr(denoised.pixels, clean) - float(row["psnr_8bit"])) < 0.05, row
        assert abs(float(row["psnr"]) - float(row["psnr_8bit"])) < 0.5, row
        assert abs(psnr(noisy, clean) - float(row["noisy_psnr"])) < 1e-3, row
        assert 0 < float(row["ssim"]) <= 1 and float(row["seconds"]) > 0
        assert abs(float(row["delta"]) - 20) < 2 and float(row["lambda"]) == 1.0 and float(row["beta0"]) == 0.01
        assert (row["steps"], row["height"], row["width"], row["restarts"]) == ("2", "64", "64", "0")

    out = capsys.readouterr().out
    assert "ScoreDVI on 2 images" in out
    summary = summary_rows(out)
    assert set(summary) == {"a", "b", "all"} and [summary[k][1] for k in ("a", "b", "all")] == ["1", "1", "2"]
    mean_8bit = sum(float(row["psnr_8bit"]) for row in rows) / 2
    assert summary["all"][4] == f"{mean_8bit:.2f}" and summary["a"][2] == f"{float(rows[0]['psnr']):.2f}"

    # resume: nothing to do, the table is unchanged and still summarised
    before = table.read_bytes()
    main(argv)
    out = capsys.readouterr().out
    assert len(fits) == 2 and table.read_bytes() == before
    assert "a: already in" in out and "b: already in" in out and set(summary_rows(out)) == {"a", "b", "all"}

    # a row lost (e.g. killed mid-image): only that image is fitted again
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(rows[0])
    main(argv)
    assert len(fits) == 3 and fits[2].startswith("evaluate/b-")
    again = read_rows(table)
    assert [row["name"] for row in again] == ["a", "b"] and again[0] == rows[0]


def test_list_file_with_relative_paths_and_crop(tiny_priors, tmp_path, capsys, monkeypatch):
    write_pair(tmp_path / "data", "x", 3, size=80)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "pairs.txt").write_text("# noisy clean\n\n../data/x_noisy.png ../data/x_clean.png  # the only pair\n")
    monkeypatch.chdir(tmp_path / "data")  # paths are relative to the list file, not the working folder
    main(["evaluate", "--list", str(lists / "pairs.txt"), "--crop", "64", "--output", str(tmp_path / "out"),
          "--priors", str(tiny_priors[3]), *FAST])
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert [(row["name"], row["height"], row["width"]) for row in rows] == [("x", "64", "64")]
    assert read_image(tmp_path / "out" / "x_denoised.png").pixels.shape == (3, 64, 64)
    assert set(summary_rows(capsys.readouterr().out)) == {"x", "all"}


def one_error_line(argv: list[str], capsys) -> str:
    return shared_one_error_line(main, argv, capsys)


@pytest.mark.parametrize("case", ["three_fields", "missing_list", "no_pairs", "mismatched_sizes", "nothing_given"])
def test_bad_pairs_end_with_one_error_line(case, tiny_priors, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    source = ["--noisy", "data", "--clean", "data"]
    if case == "three_fields":
        write_pair(data, "a", 1)
        (tmp_path / "pairs.txt").write_text("data/a_noisy.png data/a_clean.png\ndata/a_noisy.png data/a_clean.png x\n")
        source = ["--list", "pairs.txt"]
    elif case == "missing_list":
        source = ["--list", "nope.txt"]
    elif case == "no_pairs":
        write_image(data / "a_noisy.png", smooth_image(1))
        write_image(data / "b_clean.png", smooth_image(2))
    elif case == "mismatched_sizes":
        write_pair(data, "a", 1, clean_size=48)
    elif case == "nothing_given":
        source = ["--noisy", "data"]
    line = one_error_line(["evaluate", *source, "--output", "out", "--priors", str(tiny_priors[3]), *FAST], capsys)
    expected = {"three_fields": "pairs.txt:2 should hold two paths", "missing_list": "does not exist",
                "no_pairs": "no noisy/clean pairs", "mismatched_sizes": "a_clean.png",
                "nothing_given": "--list FILE"}[case]
    assert expected in line, line
    assert not (tmp_path / "out" / "results.csv").exists()


def test_methods_are_rows_of_one_table_and_figures_show_each_pair(tiny_priors, tmp_path, capsys, monkeypatch):
    """--methods: one row per image and method, the baselines at the row's own delta (the same for all methods of
    an image); --figures: one side-by-side PNG per pair with a panel per result, and the PSNR plot."""
    from PIL import Image

    from dvi.baselines import denoise_baseline
    from dvi.figures import SETTINGS

    data = tmp_path / "data"
    write_pair(data, "a", 1)
    write_pair(data, "b", 2)
    fits = count_fits(monkeypatch)
    main(["evaluate", "--noisy", "data", "--clean", "data", "--output", "out", "--priors", str(tiny_priors[3]), *FAST,
          "--methods", "wavelet", "scoredvi", "noisy", "nlm", "--figures"])
    assert len(fits) == 2
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert sorted((row["name"], row["method"]) for row in rows) == sorted(
        (name, method) for name in ("a", "b") for method in ("scoredvi", "noisy", "nlm", "wavelet"))
    for name in ("a", "b"):
        mine = {row["method"]: row for row in rows if row["name"] == name}
        assert len({row["delta"] for row in mine.values()}) == 1  # one noise estimate for every method
        noisy = read_image(data / f"{name}_noisy.png").pixels
        clean = read_image(data / f"{name}_clean.png").pixels
        assert float(mine["noisy"]["psnr"]) == pytest.approx(psnr(noisy, clean), abs=1e-3)
        nlm = denoise_baseline("nlm", noisy, delta=float(mine["nlm"]["delta"]))
        assert float(mine["nlm"]["psnr"]) == pytest.approx(psnr(nlm, clean), abs=0.02)
        assert float(mine["wavelet"]["psnr"]) > float(mine["noisy"]["psnr"])
        assert mine["nlm"]["lambda"] == "" and mine["scoredvi"]["lambda"] != ""  # fit columns are ScoreDVI's
        with Image.open(tmp_path / "out" / f"{name}_figure.png") as figure:  # noisy, ScoreDVI, std, NLM, wavelet, clean
            assert figure.size == (round(6 * SETTINGS.panel_width * SETTINGS.dpi), round(SETTINGS.panel_height * SETTINGS.dpi))
    with Image.open(tmp_path / "out" / "psnr_by_image.png") as plot:
        assert plot.format == "PNG"
    out = capsys.readouterr().out
    for method in ("scoredvi", "noisy", "nlm", "wavelet"):
        assert set(summary_rows(out, method)) == {"a", "b", "all"}, method


def test_baselines_alone_fit_nothing_and_still_draw_figures(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from dvi.figures import SETTINGS

    data = tmp_path / "data"
    write_pair(data, "a", 1)
    fits = count_fits(monkeypatch)
    main(["evaluate", "--noisy", "data", "--clean", "data", "--output", "out", "--methods", "noisy", "wavelet",
          "--figures", *FAST])
    assert fits == []
    assert [row["method"] for row in read_rows(tmp_path / "out" / "results.csv")] == ["noisy", "wavelet"]
    assert not (tmp_path / "out" / "a_denoised.png").exists()
    with Image.open(tmp_path / "out" / "a_figure.png") as figure:  # noisy, wavelet, clean
        assert figure.size[0] == round(3 * SETTINGS.panel_width * SETTINGS.dpi)
