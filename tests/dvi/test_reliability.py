"""Issue 15 in ``python -m dvi``: signals, output pre-flight and publication, overwriting, pixel limit, notes.

Each test reproduces one reported failure. Fits are tiny (64x64 images, the smallest nets, a few steps).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dvi.interface.cli
from common.images import write_image
from dvi.interface.cli import main
from tests.conftest import one_error_line, smooth_image

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--components", "1", "--mc-samples", "1", "--device", "cpu", "--unet-width", "4", "--unet-depth", "2",
         "--aux-layers", "2", "--aux-features", "4", "--restart-sigma", "10", "--progress", "false"]
FAST = ["--steps", "2", *SMALL]


def image(path: Path, *, seed: int = 0, size: int = 64) -> Path:
    write_image(path, smooth_image(seed, size=size))
    return path


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def fit_started(folder: Path) -> bool:
    """True once the TensorBoard events file of a run has grown past its header (scalars of step 1 written)."""
    events = list(folder.rglob("events.out.tfevents.*"))
    return bool(events) and events[0].stat().st_size > 200


def interrupted_run(argv: list[str], cwd: Path, signum: int) -> tuple[int, str, str]:
    """Start ``python -m dvi argv`` in ``cwd``, send ``signum`` once the fit is logging, return (status, out, err)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dvi", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not fit_started(cwd / "runs") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert fit_started(cwd / "runs"), "the fit did not start logging within 120 s"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_denoise_fit_is_non_zero_one_line_and_no_output(signum, status, tiny_priors, tmp_path):
    image(tmp_path / "n.png")
    argv = ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), "--steps", "100000", "--log-every", "1",
            "--output", "out/o.png", *SMALL]
    code, out, err = interrupted_run(argv, tmp_path, signum)
    name = signal.Signals(signum).name
    assert code == status, (code, out, err)
    assert err.strip().splitlines() == [f"interrupted by {name}; nothing written"], err
    assert "Traceback" not in out + err and "wrote" not in out
    assert files_under(tmp_path / "out") == set()


def count_fits(monkeypatch: pytest.MonkeyPatch, *, then=None) -> list[int]:
    """Count the fits (``then(images)`` runs after each real one, e.g. to break an output path meanwhile)."""
    import dvi.fitting.large

    fits, real = [], dvi.fitting.large.fit_images

    def counting(images, *args, **kwargs):
        fits.append(len(images))
        results = real(images, *args, **kwargs)
        if then is not None:
            then()
        return results

    monkeypatch.setattr(dvi.fitting.large, "fit_images", counting)
    return fits


def test_impossible_output_path_is_refused_before_the_fit(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    fits = count_fits(monkeypatch)
    (tmp_path / "out_variance.tif").mkdir()  # the companion of out.png is a folder
    argv = ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST]
    line = one_error_line(main, [*argv, "--output", "out.png"], capsys)
    assert "out_variance.tif: it is a directory" in line, line
    assert fits == [] and not (tmp_path / "out.png").exists()


def test_read_only_output_folder_is_refused_before_the_fit(tiny_priors, tmp_path, capsys, monkeypatch,
                                                          read_only_folder):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    fits = count_fits(monkeypatch)
    line = one_error_line(main, ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST,
                                 "--output-dir", "ro/sub"], capsys)
    assert "is not writable" in line and fits == [], line
    assert files_under(read_only_folder) == set()


def test_a_failure_on_a_later_file_leaves_none_of_the_image(tiny_priors, tmp_path, capsys, monkeypatch):
    """The variance path turns into a folder during the fit (after the pre-flight): no out.png either."""
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    count_fits(monkeypatch, then=lambda: (tmp_path / "out_variance.tif").mkdir())
    line = one_error_line(main, ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST,
                                 "--output", "out.png"], capsys)
    assert "out_variance.tif" in line, line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs") == ["n.png", "out_variance.tif"]


def test_existing_output_needs_overwrite(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    fits = count_fits(monkeypatch)
    argv = ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST, "--output", "o.png"]
    (tmp_path / "o_uncertainty.png").write_bytes(b"old")  # a companion alone is enough
    line = one_error_line(main, argv, capsys)
    assert line == "error: o_uncertainty.png exists; pass --overwrite to replace it, or choose another --output"
    assert fits == [] and (tmp_path / "o_uncertainty.png").read_bytes() == b"old"
    main([*argv, "--overwrite"])
    assert fits == [1] and (tmp_path / "o_uncertainty.png").read_bytes()[:4] == b"\x89PNG"
    assert {"o.png", "o_variance.tif"} <= {p.name for p in tmp_path.iterdir()}


def test_max_pixels_reaches_every_read(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")  # 4096 pixels
    image(tmp_path / "big.png", seed=1, size=80)  # 6400 pixels
    (tmp_path / "pairs.txt").write_text("n.png big.png\n")
    fits = count_fits(monkeypatch)
    priors = ["--priors", str(tiny_priors[3])]
    for argv in (["denoise", "--image", "big.png", *priors, *FAST],
                 ["denoise", "--image", "n.png", "--clean", "big.png", *priors, *FAST],
                 ["evaluate", "--list", "pairs.txt", *priors, *FAST],
                 ["estimate-noise", "--image", "big.png"]):
        line = one_error_line(main, [*argv, "--max-pixels", "5000"], capsys)
        assert "big.png is 80x80 pixels" in line and "--max-pixels" in line, line
    assert fits == [] and {p.name for p in files_under(tmp_path / "outputs")} <= {".results.csv.lock"}
    for limit in ("0", "auto", "6400"):  # 0: no limit; auto: common.images.MAX_PIXELS
        main(["estimate-noise", "--image", "big.png", "--max-pixels", limit])
        assert capsys.readouterr().out.startswith("delta ")


def test_reused_priors_are_announced(tiny_priors, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    count_fits(monkeypatch)
    argv = ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST]
    main([*argv, "--components", "3", "--output", "a.png"])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: 3 components share 1 prior (component k uses prior k mod 1)"]
    main([*argv, "--output", "b.png"])  # K = 1 with one prior: nothing to say
    assert "note:" not in capsys.readouterr().out
    main(["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), str(tiny_priors[3]), *FAST,
          "--output", "b2.png"])  # K = 1 of two files
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: 1 component uses the first of the 2 --priors files"]
    monkeypatch.setenv("SCOREDVI_CHECKPOINTS", str(tiny_priors[3].parent))  # a shipped set of one RGB prior
    main(["denoise", "--image", "n.png", *FAST, "--components", "2", "--output", "c.png"])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: 2 components share 1 prior (component k uses prior k mod 1)"]


def test_prior_set_chooses_the_shipped_priors_a_fit_uses(tiny_priors, tmp_path, capsys, monkeypatch):
    """--prior-set light takes the manifest's light entry (the evaluate row records its sha256), full the others."""
    from common.prior_files import PriorMeta, export_prior, load_prior, sha256_of

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    model, _ = load_prior(tiny_priors[3])
    export_prior(model, shipped / "full.pt", PriorMeta(channels=3, depth=5, features=16))
    model.conv_layers[0].weight.data.mul_(0.5)  # a different file
    export_prior(model, shipped / "light.pt", PriorMeta(channels=3, depth=5, features=16, prior_set="light"))
    monkeypatch.setenv("SCOREDVI_CHECKPOINTS", str(shipped))
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    image(tmp_path / "c.png")
    (tmp_path / "l.txt").write_text("n.png c.png\n")
    for prior_set in ("light", "full"):
        main(["evaluate", "--list", "l.txt", *FAST, "--prior-set", prior_set, "--output", f"out_{prior_set}",
                       "--progress", "false"])
        row = (tmp_path / f"out_{prior_set}" / "results.csv").read_text().splitlines()
        header, values = row[0].split(","), row[1].split(",")
        assert values[header.index("priors")] == sha256_of(shipped / f"{prior_set}.pt")[:12]


def test_too_small_max_memory_is_one_plain_line(tiny_priors, tmp_path, capsys, monkeypatch):
    """It printed a negative GiB and a 13-digit bytes-per-pixel figure."""
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "n.png")
    fits = count_fits(monkeypatch)
    line = one_error_line(main, ["denoise", "--image", "n.png", "--priors", str(tiny_priors[3]), *FAST,
                                 "--max-memory", "0.001"], capsys)
    assert line.startswith("error: 0.001 GiB (--max-memory) is too little: fitting even a 64x64 px tile needs about ")
    assert "-0" not in line and not re.search(r"\d{5}", line) and fits == [], line


@pytest.mark.parametrize(("argv", "named"), [(["evaluate", "--list", "l.txt", "--resume-mismatch", "keep"],
                                              "--resume-mismatch"),
                                             (["denoise", "--image", "n.png", "--overwrite", "yes"], "yes"),
                                             (["denoise", "--image", "n.png", "--max-pixels", "-5"], "--max-pixels")])
def test_new_options_refuse_bad_values_in_one_line(argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert named in one_error_line(main, argv, capsys)


def test_api_sigterm_is_a_non_zero_exit_and_max_pixels_is_an_option(tiny_priors, tmp_path):
    """Without the CLI's handler (the Python API), Lightning's code-less SIGTERMException exited with status 0."""
    from lightning.pytorch.callbacks import Callback

    import dvi
    from common.errors import InputError
    from common.prior_files import load_priors
    from dvi.config import load_preset
    from dvi.fitting.fit import fit_image

    class Terminate(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    config = load_preset("fast").replace(steps=50, components=1, mc_samples=1, device="cpu", progress=False,
                                         unet_width=4, unet_depth=2, aux_layers=2, aux_features=4)
    priors = load_priors([tiny_priors[3]], channels=3)
    with pytest.raises(SystemExit) as exit_info:
        fit_image(smooth_image(0, size=64), priors, config, callbacks=[Terminate()])
    assert exit_info.value.code == 143
    path = image(tmp_path / "n.png")
    with pytest.raises(InputError, match="64x64 pixels.*--max-pixels"):
        dvi.denoise(path, config=config, priors=[tiny_priors[3]], max_pixels=4000)
