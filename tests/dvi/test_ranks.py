"""Sharding ``dvi evaluate`` over the ranks of a launch: the rank arithmetic, and a real 2-process torchrun (gloo)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import InputError
from dvi.fitting.ranks import Group, Launch, fit_strategy, join, ranks_sharing_device
from tests.dvi.test_evaluate import FAST, write_pair

ROOT = Path(__file__).resolve().parents[2]


def test_launch_from_environment_and_shares():
    assert Launch.from_environment({}) == Launch(0, 1, 0)
    assert Launch.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    assert Launch.from_environment({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == Launch(1, 2, 1)
    items = list(range(10))
    shares = [Launch(rank, 3).share(items) for rank in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shares, [])) == items  # every item exactly once
    assert Launch(1, 2).describe(5, 10) == "rank 1/2: 5 of 10 pairs"
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(InputError):
            Launch.from_environment(bad)


def test_one_process_group_is_a_no_op_and_a_launch_without_master_is_one_line():
    group = join({})
    assert isinstance(group, Group) and group.agree([1, 2]) == [1, 2]
    group.finish()
    assert fit_strategy("auto") == "auto" and fit_strategy("cpu") == "auto"
    with pytest.raises(InputError, match="MASTER_ADDR and MASTER_PORT"):
        join({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def rows_by_name(table: Path) -> dict[str, dict[str, str]]:
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), names  # every pair exactly once
    return {row["name"]: row for row in rows}


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # one thread: both runs round alike
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_process_torchrun_evaluate_equals_one_process(tiny_priors, tmp_path):
    data = tmp_path / "data"
    for seed, name in enumerate(["a", "b", "c", "d", "e"], 1):
        write_pair(data, name, seed, size=64)
    common = ["evaluate", "--noisy", str(data), "--clean", str(data), "--priors", str(tiny_priors[3]), *FAST,
              "--precision", "32-true", "--progress", "false", "--image-every", "0", "--unet-width", "8", "--unet-depth", "2",
              "--aux-layers", "3", "--aux-features", "8"]
    run([sys.executable, "-m", "dvi", *common, "--output", "one"], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dvi"]
    out = run([*torchrun, *common, "--output", "two"], tmp_path)
    assert "rank 0/2: 3 of 5 pairs" in out and "rank 1/2: 2 of 5 pairs" in out, out
    assert out.count("ScoreDVI on 5 images") == 1, out  # rank 0 alone summarises, once every row is in
    one, two = rows_by_name(tmp_path / "one" / "results.csv"), rows_by_name(tmp_path / "two" / "results.csv")
    assert sorted(two) == sorted(one) == ["a", "b", "c", "d", "e"]
    for name, row in one.items():
        for column in ("psnr", "ssim", "psnr_8bit", "noisy_psnr", "delta", "lambda", "beta0", "restarts"):
            assert two[name][column] == row[column], (name, column, two[name][column], row[column])
        assert (tmp_path / "two" / f"{name}_denoised.png").is_file()

    # resume on two ranks: rank 0's list of what is left is shared out (here: the 2 rows removed)
    table = tmp_path / "two" / "results.csv"
    lines = table.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("b,", "d,"))]
    table.write_text("".join(kept))
    out = run([*torchrun, *common, "--output", "two"], tmp_path)
    assert "rank 0/2: 1 of 2 pairs" in out and "rank 1/2: 1 of 2 pairs" in out, out
    again = rows_by_name(table)
    assert sorted(again) == ["a", "b", "c", "d", "e"]
    assert {name: again[name]["psnr"] for name in again} == {name: one[name]["psnr"] for name in one}


def test_ranks_on_one_device_split_its_memory(monkeypatch):
    import torch

    two = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert ranks_sharing_device({}) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ranks_sharing_device(two) == 2  # both on the CPU's memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ranks_sharing_device(two) == 1  # one GPU each
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert ranks_sharing_device(two) == 2  # two ranks on one card
    assert ranks_sharing_device({**two, "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}) == 3
