"""``python -m dvi``. OpenMP's wait policy is chosen before torch loads (:mod:`common.threads`)."""

from common.threads import prefer_passive_wait

prefer_passive_wait()

from dvi.interface.cli import main  # noqa: E402 - after the wait policy, which must precede torch

main()
