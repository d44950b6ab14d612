"""SIGTERM and SIGINT during a command: one line and a non-zero status, never a silent success.

Lightning's own SIGTERM handler (``_SignalConnector`` in lightning 2.x) only records the signal; its loops
then raise ``SIGTERMException``, a ``SystemExit`` without a code, so the process used to end with status
0 and no output. SIGINT became a ``KeyboardInterrupt`` that Lightning turns into ``sys.exit(1)`` without
saying why. :func:`signals_raise` installs handlers that raise :class:`Interrupted` instead; Lightning's
connector keeps a handler that was there before it and calls it after its own, so the exception
leaves ``trainer.fit`` (Lightning tears the run down and re-raises it). The command that catches it
adds what was kept (:attr:`Interrupted.note`); :func:`report` prints ``interrupted by SIGTERM; <note>``
and the process ends with the shell's status for the signal, 128 + its number (SIGTERM 143, SIGINT 130).

Outputs stay whole: a file being published when the signal arrives is rolled back by
:class:`common.publish.OutputGroup` (it handles any exception), and a results-table row is appended
with one ``os.write``. A second signal while the first is handled is ignored, so clean-up finishes
(SIGKILL still ends the process at once).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
NOTHING_WRITTEN = "nothing written"


class Interrupted(BaseException):
    """A signal ended the command (a BaseException, like KeyboardInterrupt: ``except Exception`` lets it pass)."""

    def __init__(self, signum: int, note: str = NOTHING_WRITTEN) -> None:
        super().__init__(signum, note)
        self.signum = signum
        self.note = note

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        """The exit status a shell gives a process ended by this signal: 128 + its number."""
        return 128 + self.signum


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted` (once); the old handlers come back after."""
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    # Lightning logs "Received SIGTERM: 15" at INFO level before our handler runs: the one line is ours
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")
    level = connector.level
    connector.setLevel(logging.WARNING)
    for signum in SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        connector.setLevel(level)


def report(err: Interrupted) -> None:
    """Print the one line for ``err`` on stderr and end the process with its status."""
    print(f"interrupted by {err.name}; {err.note}", file=sys.stderr)
    raise SystemExit(err.status) from None
