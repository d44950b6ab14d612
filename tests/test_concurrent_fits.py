"""benchmarks/concurrent_fits: each variant's command line and thread environment."""

import sys
from pathlib import Path

import pytest

from benchmarks.concurrent_fits import command, main


def test_variants_set_their_own_thread_variables_and_drop_the_callers(monkeypatch):
    for key, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("OMP_NUM_THREADS", "7"), ("GOMP_SPINCOUNT", "5")):
        monkeypatch.setenv(key, value)
    image, out = Path("in.png"), Path("out")
    argv, env = command("passive", image, out, ["--preset", "fast"])
    assert argv[:3] == [sys.executable, "-m", "dvi"] and argv[-2:] == ["--preset", "fast"]
    assert not {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"} & set(env)  # python -m dvi sets its own
    _, env = command("passive", image, out, [], spin_count=3000)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["GOMP_SPINCOUNT"] == "3000" and "OMP_NUM_THREADS" not in env
    _, env = command("one-thread", image, out, [], spin_count=3000)  # --spin-count changes only the passive variant
    assert env["OMP_NUM_THREADS"] == "1" and "GOMP_SPINCOUNT" not in env
    _, env = command("no-spin", image, out, [])
    assert env["GOMP_SPINCOUNT"] == "0"
    argv, env = command("spin", image, out, [])
    assert argv[1] == "-c" and "OMP_WAIT_POLICY" not in env


def test_a_negative_spin_count_is_one_error_line_before_any_fit(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["concurrent_fits", "--spin-count", "-5"])
    monkeypatch.setattr("benchmarks.concurrent_fits.run_together", lambda *a, **k: pytest.fail("a fit was started"))
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "error: --spin-count must be 0 or more, not -5" in capsys.readouterr().err
