"""Issue 15 in ``python -m dvi evaluate``: configuration recorded and checked on resume, damaged rows,
a concurrent second run, colliding names, a signal mid-run. Tiny fits (64x64, smallest nets, 2 steps)."""

import csv
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import dvi.fitting.large
from common.images import read_image, write_image
from common.metrics import psnr
from dvi.interface.cli import main
from dvi.interface.evaluate import COLUMNS, unique_names, Pair
from tests.conftest import one_error_line, smooth_image

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--components", "1", "--mc-samples", "1", "--device", "cpu", "--unet-width", "4", "--unet-depth", "2",
         "--aux-layers", "2", "--aux-features", "4", "--restart-sigma", "10", "--progress", "false"]


def write_pair(folder: Path, name: str, seed: int) -> None:
    clean = smooth_image(seed, size=64)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * 20 / 255
    write_image(folder / f"{name}_noisy.png", noisy.clamp(0, 1))
    write_image(folder / f"{name}_clean.png", clean)


def rows(table: Path) -> list[dict[str, str]]:
    with open(table, newline="") as handle:
        return list(csv.DictReader(handle))


def count_fits(monkeypatch: pytest.MonkeyPatch, *, callbacks_for=None) -> list[str]:
    """Names of the images fitted; ``callbacks_for(n)`` gives the Lightning callbacks of the n-th fit."""
    names, real = [], dvi.fitting.large.fit_images

    def counting(images, *args, name=None, **kwargs):
        names.extend([name] * len(images))
        extra = callbacks_for(len(names)) if callbacks_for is not None else []
        return real(images, *args, name=name, callbacks=extra, **kwargs)

    monkeypatch.setattr(dvi.fitting.large, "fit_images", counting)
    return names


@pytest.fixture()
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_pair(tmp_path / "data", "a", 1)
    write_pair(tmp_path / "data", "b", 2)
    return tmp_path / "data"


def argv_for(tiny_priors, *extra: str) -> list[str]:
    return ["evaluate", "--noisy", "data", "--clean", "data", "--output", "out", "--priors", str(tiny_priors[3]),
            *SMALL, *extra]


def test_rows_of_another_configuration_are_refused_or_recomputed(tiny_priors, data, capsys, monkeypatch):
    fits = count_fits(monkeypatch)
    table = Path("out/results.csv")
    main(argv_for(tiny_priors, "--steps", "2"))
    first = rows(table)
    assert [r["steps"] for r in first] == ["2", "2"] and len({r["config_id"] for r in first}) == 1
    assert (first[0]["preset"], first[0]["components"], first[0]["mc_samples"], first[0]["crop"],
            first[0]["seed"], first[0]["channels"]) == ("reference", "1", "1", "", "0", "3")
    assert len(first[0]["priors"]) == 12 and len(first[0]["config_id"]) == 12
    before = table.read_bytes()
    # settings that change results: one line each, nothing fitted, the table untouched
    for extra, changed in ((["--steps", "3"], "steps 2 -> 3"), (["--steps", "2", "--crop", "56"], "crop none -> 56"),
                           (["--steps", "2", "--seed", "1"], "seed 0 -> 1"),
                           (["--steps", "2", "--lr", "0.002"], "config_id")):
        line = one_error_line(main, argv_for(tiny_priors, *extra), capsys)
        assert line.startswith("error: results.csv in out was made with another configuration (2 of 2 rows, e.g. a (scoredvi): ")
        assert changed in line and line.endswith("use another --output or --resume-mismatch recompute"), line
    assert len(fits) == 2 and table.read_bytes() == before
    # settings that only change how it runs: resumed
    main(argv_for(tiny_priors, "--steps", "2", "--log-every", "1", "--batch", "1", "--max-pixels", "0"))
    assert len(fits) == 2 and table.read_bytes() == before
    # recompute: the old rows are replaced, not added to
    main(argv_for(tiny_priors, "--steps", "3", "--resume-mismatch", "recompute"))
    out = capsys.readouterr().out
    assert "2 rows of another configuration removed" in out and len(fits) == 4
    again = rows(table)
    assert [(r["name"], r["steps"]) for r in again] == [("a", "3"), ("b", "3")]
    assert again[0]["config_id"] != first[0]["config_id"]


def test_a_table_without_recorded_configuration_is_not_taken_as_this_one(tiny_priors, data, capsys, monkeypatch):
    fits = count_fits(monkeypatch)
    old = ["name", "psnr", "ssim", "psnr_8bit", "noisy_psnr", "delta", "lambda", "beta0", "restarts", "seconds",
           "peak_gpu_mb", "peak_rss_mb", "steps", "height", "width", "batch"]
    Path("out").mkdir()
    with open("out/results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(old)
        writer.writerow(["a", 30, 0.9, 30, 20, 20, 1, 0.01, 0, 1, "nan", 100, 2, 64, 64, 1])
    line = one_error_line(main, argv_for(tiny_priors, "--steps", "2"), capsys)
    assert "(1 of 1 rows, e.g. a (no method): no configuration recorded)" in line and fits == []
    main(argv_for(tiny_priors, "--steps", "2", "--resume-mismatch", "recompute"))
    assert len(fits) == 2 and [r["name"] for r in rows(Path("out/results.csv"))] == ["a", "b"]
    with open("out/results.csv", newline="") as handle:
        assert next(csv.reader(handle)) == COLUMNS  # the emptied table started again with today's columns


def test_a_damaged_last_row_is_reported_and_recomputed(tiny_priors, data, capsys, monkeypatch):
    fits = count_fits(monkeypatch)
    main(argv_for(tiny_priors, "--steps", "2"))
    table = Path("out/results.csv")
    whole = rows(table)
    table.write_bytes(table.read_bytes()[:-25])  # power lost mid-write: b's row cut short, no line end
    capsys.readouterr()
    main(argv_for(tiny_priors, "--steps", "2"))  # used to die in summarise with a TypeError
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "line 3: incomplete last row" in warnings[0], out
    assert len(fits) == 3 and fits[2].startswith("evaluate/b")
    assert [r["name"] for r in rows(table)] == ["a", "b"] and rows(table)[0] == whole[0]
    assert "ScoreDVI on 2 images" in out


def test_a_second_evaluate_waits_for_the_first_and_duplicates_nothing(tiny_priors, data, capsys, monkeypatch):
    """The test holds the table's lock as a first run would; the second run (a real process) waits, and
    finds the row the first one added meanwhile: only b is computed, no row twice."""
    main(argv_for(tiny_priors, "--steps", "2", "--limit", "1"))  # a row for "a" to copy
    table = Path("out/results.csv")
    row_a = table.read_bytes()
    table.unlink()
    lock = os.open("out/.results.csv.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dvi", *argv_for(tiny_priors, "--steps", "2")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(20)  # python, torch and the pairs loaded: it now waits on the lock
        assert proc.poll() is None, proc.communicate()
        table.write_bytes(row_a)  # the "first run" finished a
        fcntl.flock(lock, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(lock)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "in use by another evaluate; waiting" in out and "a: already in" in out, out
    assert [r["name"] for r in rows(table)] == ["a", "b"]


def test_pairs_with_the_same_stem_keep_their_folders(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pair(tmp_path / "d1", "x", 1)
    write_pair(tmp_path / "d2", "x", 2)
    Path("pairs.txt").write_text("d1/x_noisy.png d1/x_clean.png\nd2/x_noisy.png d2/x_clean.png\n")
    count_fits(monkeypatch)
    main(["evaluate", "--list", "pairs.txt", "--output", "out", "--priors", str(tiny_priors[3]), *SMALL,
          "--steps", "2"])
    table = rows(Path("out/results.csv"))
    assert [r["name"] for r in table] == ["d1_x", "d2_x"]
    for row, folder in zip(table, ("d1", "d2")):  # each file is its own pair's result
        denoised = read_image(Path("out") / f"{row['name']}_denoised.png").pixels
        clean = read_image(Path(folder) / "x_clean.png").pixels
        assert abs(psnr(denoised, clean) - float(row["psnr_8bit"])) < 0.05
    assert not Path("out/x_denoised.png").exists()


def test_unique_names_rules():
    p = Path("/data")
    pairs = [Pair("x", p / "d1/x.png", p / "c/x.png"), Pair("x", p / "d2/x.png", p / "c/x.png"),
             Pair("y", p / "y.png", p / "c/y.png"), Pair("z", p / "z.png", p / "c/z.png"),
             Pair("z", p / "z.tif", p / "c/z.png")]
    assert [q.name for q in unique_names(pairs)] == ["d1_x", "d2_x", "y", "z_png", "z_tif"]
    with pytest.raises(Exception, match="listed more than once"):
        unique_names([pairs[2], pairs[2]])


class SignalAtStep(Callback):
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def on_train_batch_end(self, trainer, *args) -> None:
        os.kill(os.getpid(), self.signum)


def test_sigterm_mid_run_keeps_the_rows_written_and_says_so(tiny_priors, data, capsys, monkeypatch):
    """SIGTERM during the second image's fit (real Lightning loop, in this process): status 143, one line,
    the first row and PNG stay, nothing of the second; a rerun computes only the second."""
    fits = count_fits(monkeypatch, callbacks_for=lambda n: [SignalAtStep(signal.SIGTERM)] if n == 2 else [])
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv_for(tiny_priors, "--steps", "2"))
    assert exit_info.value.code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted by SIGTERM; nothing written for the images in progress; the 1 row already in "
                   "out/results.csv stay (run again to resume)"], err
    assert [r["name"] for r in rows(Path("out/results.csv"))] == ["a"]
    assert Path("out/a_denoised.png").exists() and not Path("out/b_denoised.png").exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers and len(fits) == 2
    main(argv_for(tiny_priors, "--steps", "2"))
    assert len(fits) == 3 and [r["name"] for r in rows(Path("out/results.csv"))] == ["a", "b"]


def test_results_table_drop_rewrites_without_the_rows_and_empties_when_none_is_left(tmp_path):
    from common.results_table import ResultsTable

    table = ResultsTable(tmp_path / "t.csv", ["name", "v"], numeric=["v"])
    for name, value in (("a", 1), ("b", 2), ("c", 3)):
        table.append({"name": name, "v": value})
    assert table.drop({"b", "x"}) == 1 and [r["name"] for r in table.rows()] == ["a", "c"]
    assert table.drop(set()) == 0
    assert (tmp_path / "t.csv").read_bytes() == b"name,v\r\na,1\r\nc,3\r\n"
    assert table.drop({"a", "c"}) == 2 and (tmp_path / "t.csv").read_bytes() == b""
    assert table.append({"name": "d", "v": 4}) and table.rows() == [{"name": "d", "v": "4"}]


def test_configuration_id_follows_what_changes_results_and_not_how_fast():
    from dvi.config import OPTIONS, Config
    from dvi.interface.evaluate import RESULT_NEUTRAL, configuration_id

    def ident(config, crop=None, hashes=("ab",), fmt="auto"):
        return configuration_id(config, crop=crop, prior_hashes=list(hashes), prior_format=fmt)

    base = Config()
    assert set(RESULT_NEUTRAL) <= set(OPTIONS)  # no stale name
    for key, value in {"precision": "32-true", "tile": 0, "tile_overlap": 16, "seed": 3, "steps": 9,
                       "unet_width": 8, "noise_low": 5, "beta0": 0.02}.items():
        assert ident(base.replace(**{key: value})) != ident(base), key
    for key, value in {"device": "cpu", "batch": 2, "max_memory": 4.0, "log_every": 3, "image_every": 0,
                       "channels_last": False, "progress": False, "max_pixels": 0, "cuda_graphs": False}.items():
        assert ident(base.replace(**{key: value})) == ident(base), key
    assert len({ident(base), ident(base, crop=64), ident(base, hashes=("cd",)), ident(base, hashes=("ab", "ab")),
                ident(base, fmt="reference")}) == 5
