"""An append-only CSV results table, safe against concurrent writers and torn rows.

One row per finished item (an image and method of ``evaluate``), identified by its ``key`` column (or
columns: a tuple of names; a key column after the first that an older table's header lacks reads as ""). Every
change happens under an exclusive ``fcntl.flock`` on a sidecar lock file (``.NAME.lock`` beside
the table), so two processes on one table never interleave or duplicate rows:

* :meth:`ResultsTable.append` writes the whole line (header first for a new table) with one
  ``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``; a row whose key is already in the
  table is not written again (``append`` returns False).
* :meth:`ResultsTable.rows` reads the table back and checks every row: a last line without its
  newline (the machine stopped mid-write), a wrong number of fields, a NUL byte, a value that is
  not a number in a ``numeric`` column, or a repeated key. Each damaged row is reported (a
  ``UserWarning`` naming the line) and dropped, and the file is rewritten atomically without it,
  so the item counts as not done and is computed again.
* :meth:`ResultsTable.locked` holds the lock across a whole run (re-entrant), so a second run on
  the same table waits, or with ``timeout`` refuses with one line.

Lines end with ``\\r\\n`` (the csv module's default, as tables written before this module); a
value may not contain a line break.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path

from common.errors import InputError
from common.publish import write_atomic

LINE_END = "\r\n"
LOCK_POLL_SECONDS = 0.05  # how often a waiting run with a timeout retries the lock


class ResultsTable:
    """The CSV table at ``path`` with ``columns`` (used when the file is new; an existing file keeps
    the header it has, see :attr:`header`). ``key`` (default: the first column) identifies a row;
    ``numeric`` columns must hold numbers. ``timeout`` is how long to wait for another process's
    lock, in seconds (None: as long as it takes; 0: refuse at once). With several key columns, a row's key
    (:meth:`key_of`, :meth:`keys`, :meth:`drop`) is the tuple of their values."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str], *,
                 key: str | tuple[str, ...] | None = None,
                 numeric: Collection[str] = (), timeout: float | None = None) -> None:
        if not columns or len(set(columns)) != len(columns):
            raise ValueError(f"columns must be distinct and not empty, got {list(columns)}")
        self.path = Path(path)
        self.columns = list(columns)
        self.key = self.columns[0] if key is None else key
        self._key_columns = (self.key,) if isinstance(self.key, str) else tuple(self.key)
        if not self._key_columns or any(name not in self.columns for name in self._key_columns):
            raise ValueError(f"key {self.key!r} is not one of the columns {self.columns}")
        self.numeric = frozenset(numeric)
        self.timeout = timeout
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._lock_fd: int | None = None
        self._depth = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[ResultsTable]:
        """Hold the table's exclusive lock for the block (re-entrant within this object)."""
        if self._depth == 0:
            self._lock_fd = self._acquire()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    @property
    def header(self) -> list[str]:
        """The columns of the file as it is (``columns`` while it does not exist or is empty)."""
        with self.locked():
            return self._read()[0]

    def rows(self) -> list[dict[str, str]]:
        """The valid rows, in file order; damaged rows are reported, dropped and removed from the file."""
        with self.locked():
            return self._read()[1]

    def key_of(self, row: Mapping[str, object]) -> str | tuple[str, ...]:
        """The key of ``row``: its key column's value, or the tuple of the key columns' values."""
        values = tuple(str(row.get(name, "")) for name in self._key_columns)
        return values[0] if isinstance(self.key, str) else values

    def keys(self) -> set[str | tuple[str, ...]]:
        """The keys of the valid rows (the items already done)."""
        return {self.key_of(row) for row in self.rows()}

    def append(self, row: Mapping[str, object]) -> bool:
        """Append ``row`` (values of the file's columns; extra keys are ignored) as one line.

        Returns False, writing nothing, when a row with the same key is already in the table.
        A value with a line break, or a missing ``key`` or ``numeric`` value, is a ValueError.
        """
        with self.locked():
            header, rows = self._read()
            if self.key_of(row) in {self.key_of(existing) for existing in rows}:
                return False
            missing = [name for name in header
                       if name not in row and (name in self._key_columns or name in self.numeric)]
            if missing:
                raise ValueError(f"row for {self.path} lacks {missing}")
            text = _line([str(row.get(name, "")) for name in header])
            if not self.path.exists() or self.path.stat().st_size == 0:
                text = _line(header) + text
            data = text.encode()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                try:
                    written = os.write(fd, data)
                    if written != len(data):  # a full disk: take the partial line back out
                        os.ftruncate(fd, os.fstat(fd).st_size - written)
                        raise OSError(28, "No space left on device")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as err:
                raise InputError(f"cannot append to {self.path}: {err.strerror or err}; "
                                 "check the folder is writable and has space") from None
            return True

    def drop(self, keys: Collection[str | tuple[str, ...]]) -> int:
        """Remove the rows whose key is in ``keys`` (the file is rewritten atomically); return how many went.

        When no row is left the file is emptied, so the next :meth:`append` starts it with ``columns``
        (a table with an older header is renewed that way)."""
        with self.locked():
            header, rows = self._read()
            kept = [row for row in rows if self.key_of(row) not in keys]
            if len(kept) < len(rows):
                lines = [_line(header), *(_line([row[name] for name in header]) for row in kept)] if kept else []
                write_atomic(self.path, "".join(lines).encode())
            return len(rows) - len(kept)

    def _acquire(self) -> int:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise InputError(f"cannot create the lock file {self.lock_path}: {err.strerror or err}; "
                             "check the folder is writable") from None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:  # type: ignore[operator]
                    os.close(fd)
                    raise InputError(f"{self.path} is in use by another process (lock {self.lock_path} held "
                                     f"for over {self.timeout:g} s); wait for it to finish or choose another "
                                     "output folder") from None
                time.sleep(LOCK_POLL_SECONDS)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        """(header, valid rows) of the file, repairing it when damaged rows are found. Needs the lock."""
        if not self.path.exists():
            return list(self.columns), []
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError as err:
            raise InputError(f"cannot read {self.path}: {err.strerror or err}; check permissions") from None
        if not text:
            return list(self.columns), []
        lines = text.split("\n")
        complete = lines[-1] == ""  # the file ends with a newline
        lines = lines[:-1] if complete else lines
        if len(lines) == 1 and not complete and _line(self.columns).startswith(lines[0]):
            warnings.warn(f"{self.path} line 1: incomplete header (no line end); table started again",
                          UserWarning, stacklevel=2)
            write_atomic(self.path, b"")
            return list(self.columns), []
        header = _fields(lines[0])
        if not text.startswith(lines[0] + "\n") or header is None or self._key_columns[0] not in header:
            raise InputError(f"{self.path} is not a results table of this toolkit (header {lines[0][:80]!r}); "
                             "move it away or choose another output folder")
        rows, kept, seen = [], [lines[0]], set()
        for number, line in enumerate(lines[1:], start=2):
            truncated = number == len(lines) and not complete
            fields = None if truncated else _fields(line)
            problem = _problem(fields, header, self.numeric, truncated, seen, self.key_of,
                               "+".join(self._key_columns))
            if problem:
                warnings.warn(f"{self.path} line {number}: {problem} ({line[:60]!r}); row dropped, it will be "
                              "computed again", UserWarning, stacklevel=2)
                continue
            row = dict(zip(header, fields))  # type: ignore[arg-type]
            seen.add(self.key_of(row))
            rows.append(row)
            kept.append(line)
        if len(kept) != len(lines):
            write_atomic(self.path, "".join(line.rstrip("\r") + LINE_END for line in kept).encode())
        return header, rows


def _line(values: Sequence[str]) -> str:
    for value in values:
        if "\n" in value or "\r" in value:
            raise ValueError(f"a results table value may not contain a line break: {value!r}")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=LINE_END).writerow(values)
    return buffer.getvalue()


def _fields(line: str) -> list[str] | None:
    line = line.rstrip("\r")
    if "\x00" in line or not line:
        return None
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error:
        return None


def _problem(fields: list[str] | None, header: list[str], numeric: frozenset[str], truncated: bool,
             seen: set[str | tuple[str, ...]], key_of: Callable[[Mapping[str, object]], object], label: str) -> str:
    """Why a row is damaged ("" when it is not)."""
    if truncated:
        return "incomplete last row (no line end)"
    if fields is None:
        return "unreadable row"
    if len(fields) != len(header):
        return f"{len(fields)} fields instead of {len(header)}"
    row = dict(zip(header, fields))
    for name in header:
        if name in numeric and not _is_number(row[name]):
            return f"{name} is {row[name]!r}, not a number"
    if key_of(row) in seen:
        return f"{label} {key_of(row)!r} repeats an earlier row"
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
