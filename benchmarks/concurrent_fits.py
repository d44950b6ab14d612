"""Several fits on one machine: wall time of one ``python -m dvi denoise`` alone and of N started at once.

Each variant runs the command alone, then ``--processes`` copies started together (each its own output
folder), and prints the mean wall time of the concurrent copies over the lone one. The variants are the
thread rules of :mod:`common.threads`:

- ``spin``: OpenMP's default wait policy (idle threads spin for a while before they sleep), as before
  the rule: the command runs through ``python -c`` without ``OMP_WAIT_POLICY``;
- ``passive``: ``python -m dvi`` as shipped (``OMP_WAIT_POLICY=PASSIVE`` after
  ``common.threads.SPIN_COUNT`` spins, set before torch loads), or with ``--spin-count N`` spins;
- ``no-spin``: the same with ``GOMP_SPINCOUNT=0`` (sleep at once: the rule before the short spin);
- ``one-thread``: ``OMP_NUM_THREADS=1`` for every process.

    python -m benchmarks.concurrent_fits --image examples/kodim23_noisy.png --processes 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_description

VARIANTS = ("spin", "passive", "no-spin", "one-thread")
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")  # each variant sets its own


def command(variant: str, image: Path, out: Path, extra: list[str], *,
            spin_count: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one fit of ``variant`` (``spin_count``: the passive variant's
    ``GOMP_SPINCOUNT`` instead of the shipped one)."""
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    if variant == "passive" and spin_count is not None:
        env.update(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT=str(spin_count))
    args = ["denoise", "--image", str(image), "--output", str(out / "denoised.png"), *extra]
    if variant == "spin":
        return [sys.executable, "-c", "import sys; from dvi.interface.cli import main; main(sys.argv[1:])", *args], env
    if variant == "one-thread":
        env["OMP_NUM_THREADS"] = "1"
    if variant == "no-spin":
        env["GOMP_SPINCOUNT"] = "0"
    return [sys.executable, "-m", "dvi", *args], env


def run_together(variant: str, image: Path, copies: int, extra: list[str], work: Path, *,
                 spin_count: int | None = None) -> list[float]:
    """Start ``copies`` fits at once; their wall times in seconds."""
    started, processes = [], []
    for index in range(copies):
        out = work / f"{variant}-{copies}-{index}"
        argv, env = command(variant, image, out, extra, spin_count=spin_count)
        started.append(time.perf_counter())
        processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    times = []
    for start, process in zip(started, processes):
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"error: the {variant} fit failed ({process.returncode}): {err.strip()[-300:]}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=Path("examples/kodim23_noisy.png"))
    parser.add_argument("--processes", type=int, default=2, help="fits started at once")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--fit-options", default="--preset fast", help="options of each denoise command")
    parser.add_argument("--spin-count", type=int, default=None, metavar="N",
                        help="the passive variant with GOMP_SPINCOUNT=N instead of the shipped count")
    args = parser.parse_args()
    if args.spin_count is not None and args.spin_count < 0:
        parser.error(f"--spin-count must be 0 or more, not {args.spin_count}")
    print(f"{cpu_description()}; python -m dvi denoise --image {args.image} {args.fit_options}")
    options = args.fit_options.split()
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            alone = run_together(variant, args.image, 1, options, Path(folder), spin_count=args.spin_count)[0]
            together = run_together(variant, args.image, args.processes, options, Path(folder),
                                    spin_count=args.spin_count)
            mean = sum(together) / len(together)
            label = variant if args.spin_count is None or variant != "passive" else f"spin {args.spin_count}"
            print(f"{label:>10}: alone {alone:6.1f} s; {args.processes} at once "
                  f"{' '.join(f'{t:.1f}' for t in together)} s, mean {mean / alone:.2f}x alone", flush=True)


if __name__ == "__main__":
    main()
