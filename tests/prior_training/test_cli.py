"""End to end: fit from the CLI on generated images, export, reload and denoise; bad inputs."""

from pathlib import Path

import pytest
import torch

from common.images import write_image
from common.prior_files import MANIFEST_NAME, default_prior_paths, load_prior, read_manifest
from prior_training.cli import expand_shortcuts, main
from tests import conftest
from tests.conftest import smooth_image

TINY = ["--model.depth", "3", "--model.features", "8", "--data.patch_size", "16", "--data.num_workers", "0",
        "--data.images_per_batch", "2", "--data.patches_per_image", "4", "--data.val_images", "2",
        "--data.val_crop", "32", "--trainer.val_check_interval", "2", "--trainer.enable_model_summary", "false"]


def run_fit(folder: Path, *extra: str) -> None:
    main(["fit", "--dataset", "folder", "--data-root", str(folder), *TINY, "--trainer.max_steps", "4", *extra])


def test_fit_writes_checkpoint_and_events_then_export_loads_and_denoises(image_folder, tmp_path):
    run_fit(image_folder, "--model.light_fraction", "0.5", "--model.loss_weighting", "inverse_sigma",
            "--model.weight_offset", "3")
    run = tmp_path / "runs" / "prior_training" / "version_0"
    assert list(run.glob("events.out.tfevents.*"))
    best = sorted((run / "checkpoints").glob("best-*.ckpt"))
    assert best and (run / "checkpoints" / "last.ckpt").is_file()
    out = tmp_path / "ckpts" / "tiny.pt"
    main(["export", str(best[0]), "--out", str(out), "--training-data", "generated test images"])
    model, meta = load_prior(out, channels=3)
    assert (meta.depth, meta.features, meta.training_data) == (3, 8, "generated test images")
    assert meta.steps >= 2 and set(meta.val_psnr) == {"0", "1", "2", "5", "15", "25", "50"}
    assert meta.training_noise == "sigma ~ 0.5 U[0,100] + 0.5 LogU[0.1,100] (0-255 scale), MSE weighted 1/(sigma+3)"
    assert (tmp_path / "ckpts" / MANIFEST_NAME).is_file()
    assert read_manifest(tmp_path / "ckpts")["tiny.pt"]["prior_set"] == "full" == meta.prior_set
    main(["export", str(best[0]), "--out", str(tmp_path / "ckpts" / "light.pt"), "--prior-set", "light"])
    assert read_manifest(tmp_path / "ckpts")["light.pt"]["prior_set"] == "light"
    assert default_prior_paths(3, prior_set="light", folder=tmp_path / "ckpts") == [tmp_path / "ckpts" / "light.pt"]
    y = torch.rand(1, 3, 20, 20)
    out_y = model(y)
    assert out_y.shape == y.shape and torch.isfinite(out_y).all()
    torch.testing.assert_close(model(2 * y), 2 * out_y, rtol=1e-4, atol=1e-5)  # still bias-free


def test_grayscale_fit_links_channels(image_folder, tmp_path):
    run_fit(image_folder, "--channels", "1")
    ckpt = next((tmp_path / "runs" / "prior_training" / "version_0" / "checkpoints").glob("last.ckpt"))
    main(["export", str(ckpt), "--out", str(tmp_path / "gray.pt")])
    assert load_prior(tmp_path / "gray.pt", channels=1)[1].channels == 1


def test_shortcuts_and_auto_precision_are_expanded():
    argv = expand_shortcuts(["fit", "--dataset", "div2k", "--data-root=/d", "--precision", "auto"])
    assert argv == ["fit", "--data.dataset", "div2k", "--data.data_root=/d", "--trainer.precision", "32-true"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_bad_data_folders_exit_with_one_line(case, tmp_path, capsys):
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        for i in range(3):
            write_image(folder / f"ok{i}.png", smooth_image(i, size=32))
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SystemExit) as exit_info:
        run_fit(folder)
    assert exit_info.value.code != 0
    line = one_error_line(capsys)
    assert {"missing": "does not exist", "empty": "holds no", "unreadable": "broken.png"}[case] in line


def test_unknown_dataset_name_and_manual_dataset(tmp_path, capsys):
    # was ~100 lines of usage before the error
    line = conftest.one_error_line(main, ["fit", "--dataset", "nope"], capsys)
    assert "nope" in line and "folder" in line and len(line) < 250
    with pytest.raises(SystemExit):
        main(["fit", "--dataset", "imagenet-val", "--data-root", str(tmp_path / "cache"), *TINY])
    assert "ILSVRC2012_img_val" in one_error_line(capsys)


def test_export_of_missing_or_foreign_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x.pt")])
    assert "does not exist" in one_error_line(capsys)
    junk = tmp_path / "junk.ckpt"
    torch.save({"weights": torch.zeros(1)}, junk)
    with pytest.raises(SystemExit):
        main(["export", str(junk), "--out", str(tmp_path / "x.pt")])
    assert "prior_training checkpoint" in one_error_line(capsys)
    assert not (tmp_path / "x.pt").exists()


def test_missing_ckpt_path_is_one_line(image_folder, capsys):
    with pytest.raises(SystemExit):
        main(["test", "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--ckpt_path", "nope.ckpt"])
    assert "--ckpt_path nope.ckpt does not exist" in one_error_line(capsys)


def test_validate_and_test_subcommands_report_psnr(image_folder, tmp_path, capsys):
    run_fit(image_folder)
    last = tmp_path / "runs" / "prior_training" / "version_0" / "checkpoints" / "last.ckpt"
    for command in ("validate", "test"):
        main([command, "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--ckpt_path", str(last)])
        assert f"{'val' if command == 'validate' else 'test'}/psnr_25" in capsys.readouterr().out


def test_last_checkpoint_holds_the_final_step_when_training_stops_between_validations(image_folder, tmp_path):
    """max_steps 5 with validation every 2 steps: last.ckpt must be of step 5, not of the validation at 4."""
    main(["fit", "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--trainer.max_steps", "5"])
    last = tmp_path / "runs" / "prior_training" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 5


class Payload:
    """Unpickling it calls ``open(marker, "w")``: code a checkpoint must not be able to run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker, evil = tmp_path / "marker", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "hyper_parameters": Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # the failure it guards against: a plain load runs the payload
    assert marker.exists()
    marker.unlink()
    return evil, marker


def test_export_does_not_run_code_from_a_crafted_checkpoint(tmp_path, capsys):
    evil, marker = crafted_checkpoint(tmp_path)
    line = conftest.one_error_line(main, ["export", str(evil), "--out", str(tmp_path / "x.pt")], capsys)
    assert "evil.ckpt" in line and "could run code" in line
    assert not marker.exists() and not (tmp_path / "x.pt").exists()


def test_fit_ckpt_path_of_a_bad_checkpoint_is_one_line(image_folder, tmp_path, capsys):
    run_fit(image_folder)
    last = tmp_path / "runs" / "prior_training" / "version_0" / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    truncated, foreign = tmp_path / "truncated.ckpt", tmp_path / "foreign.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(3)}, foreign)
    evil, marker = crafted_checkpoint(tmp_path)
    fit = ["fit", "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--trainer.max_steps", "6"]
    for path, words in ((truncated, "corrupt, truncated or not a torch file"), (foreign, "not a prior_training checkpoint"),
                        (evil, "could run code")):
        line = conftest.one_error_line(main, [*fit, "--ckpt_path", str(path)], capsys)
        assert str(path) in line and words in line
    assert not marker.exists()


def test_resume_writes_the_runs_one_last_checkpoint(image_folder, tmp_path):
    run_fit(image_folder)
    folder = tmp_path / "runs" / "prior_training" / "version_0" / "checkpoints"
    main(["fit", "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--trainer.max_steps", "6",
          "--trainer.logger.init_args.version", "version_0", "--ckpt_path", str(folder / "last.ckpt")])
    assert sorted(p.name for p in folder.glob("last*")) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 6


def test_short_fit_without_validation_logs_scalars_and_one_last_checkpoint(image_folder, tmp_path, capsys):
    """3 steps (< log_every_n_steps 10), no validation and no sanity check: before, no scalars reached
    TensorBoard, last.ckpt and last-v1.ckpt were written, and the bar read 'Epoch 2/-2 ... v_num: 0'."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    capsys.readouterr()
    main(["fit", "--dataset", "folder", "--data-root", str(image_folder), *TINY, "--trainer.max_steps", "3",
          "--trainer.val_check_interval", "100", "--trainer.num_sanity_val_steps", "0"])
    shown = capsys.readouterr().out
    run = tmp_path / "runs" / "prior_training" / "version_0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and saved["val_psnr"] == {}  # no validation ran: saved anyway
    main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "short.pt")])
    assert load_prior(tmp_path / "short.pt", channels=3)[1].steps == 3
    events = EventAccumulator(str(run))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"] and events.Scalars("train/loss")
    assert "Epoch" in shown and "v_num" not in shown and "/-" not in shown


@pytest.mark.parametrize(("options", "named"), [
    (["--channels", "2"], "--data.channels"), (["--model.depth", "1"], "--model.depth"),
    (["--model.features", "0"], "--model.features"), (["--model.light_fraction", "2"], "--model.light_fraction")])
@pytest.mark.parametrize("print_config", [True, False])
def test_options_the_classes_refuse_are_one_line_also_for_print_config(options, named, print_config, tmp_path,
                                                                       capsys):
    """The constructors hold the rules; --print_config must not print a configuration that fit would refuse,
    and fit refuses it before any data is read (the data folder here does not exist)."""
    argv = ["fit", "--data-root", str(tmp_path / "absent"), *options]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"] if print_config else argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert not captured.out.strip()  # no configuration printed
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0] and "does not exist" not in err[0]
