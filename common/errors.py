"""One error type for bad user input, turned into a one-line message at the CLI boundary."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(Exception):
    """Bad input from the user (file, option, data): the message says what is wrong and what to do.

    Library code raises it; :func:`exit_on_input_error` turns it into ``error: <message>`` on
    stderr and exit status 2, never a traceback.
    """


def one_line(err: BaseException) -> str:
    """The user-facing line of ``err``; for an error re-raised from a DataLoader worker
    (whose message carries the worker's traceback) only the original message is kept."""
    text = str(err).strip()
    if "Traceback" in text:
        text = text.splitlines()[-1].split("InputError: ", 1)[-1]
    return " ".join(text.split())


def exit_on_input_error(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI entry point so an :class:`InputError` ends the process with one line."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return main(*args, **kwargs)
        except InputError as err:
            message = one_line(err)
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
