"""common/threads.py: the thread count of one process and the OpenMP wait policy of the entry points."""

import os
import subprocess
import sys
from pathlib import Path

from common.threads import SPIN_COUNT, WAIT_POLICY, cpu_threads, prefer_passive_wait, usable_cores

ROOT = Path(__file__).resolve().parents[2]


def test_threads_are_the_usable_cores_divided_among_the_processes_of_the_machine():
    assert cpu_threads({}, cores=8) == 8
    assert cpu_threads({"LOCAL_WORLD_SIZE": "2"}, cores=8) == 4
    assert cpu_threads({"LOCAL_WORLD_SIZE": "3"}, cores=8) == 2
    assert cpu_threads({"LOCAL_WORLD_SIZE": "4"}, cores=2) == 1  # never 0
    assert cpu_threads({"LOCAL_WORLD_SIZE": "x"}, cores=6) == 6
    assert cpu_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, cores=8) is None  # the user's choice
    assert cpu_threads({}) == usable_cores() == len(os.sched_getaffinity(0))


def test_passive_wait_is_a_default_the_user_can_override():
    environ: dict[str, str] = {}
    prefer_passive_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": WAIT_POLICY, "GOMP_SPINCOUNT": SPIN_COUNT}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    prefer_passive_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {"GOMP_SPINCOUNT": "0"}  # the user's spin count stays
    prefer_passive_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": WAIT_POLICY, "GOMP_SPINCOUNT": "0"}


def test_the_entry_points_set_the_wait_policy_before_torch_loads():
    """``python -m dvi`` and ``python -m prior_training`` run common/threads.py first; here an unknown command
    ends them early, and a torch imported before the policy would show as 'torch' in sys.modules."""
    probe = ("import os, runpy, sys\n"
             "import common.threads as threads\n"
             "seen, original = [], threads.prefer_passive_wait\n"
             "threads.prefer_passive_wait = lambda *a: (seen.append('torch' in sys.modules), original(*a))\n"
             "sys.argv = [MODULE, 'bogus']\n"
             "try:\n    runpy.run_module(MODULE, run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(seen, os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for module in ("dvi", "prior_training"):
        done = subprocess.run([sys.executable, "-c", probe.replace("MODULE", repr(module))], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == f"[False] {WAIT_POLICY}", (module, done.stdout, done.stderr)
