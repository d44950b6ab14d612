"""Publishing output files: all files of one result appear together or not at all.

:class:`OutputGroup` writes each file of a result to a temporary name in its destination
folder (``.NAME.XXXX.tmp``, fsynced), then renames them all into place with ``os.replace``.
When anything fails, while writing or while renaming, the files already renamed are taken
back (a file that was there before is restored) and the temporary files are removed, so a
failed run leaves the output folders as they were. Paths given in ``protect`` (the inputs)
are never written.

:func:`check_writable` is the pre-flight check of the same rules, run before expensive work
(a fit), so that an impossible output path costs nothing. :func:`write_atomic` is a group of
one file.

Typical use (``encode_image`` / ``write_image(..., group=)`` in :mod:`common.images`)::

    check_writable([out, variance], protect=[noisy])     # before the fit
    ...
    with OutputGroup(protect=[noisy]) as group:         # after it
        group.add(out, png_bytes)
        group.add(variance, lambda handle: np.save(handle, array))
    # leaving the block publishes both; an exception inside it publishes neither
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from common.errors import InputError

PathLike = str | os.PathLike[str]
Content = bytes | bytearray | memoryview | Callable[[BinaryIO], object]

_UMASK = os.umask(0o022)  # read the process umask once (it can only be read by setting it) ...
os.umask(_UMASK)  # ... and put it back at once
FILE_MODE = 0o666 & ~_UMASK  # what an ordinary open() would give: not the 0o600 of a temp file


def _check_target(path: Path, protect: Sequence[PathLike]) -> Path:
    """Refuse a target that is an input, a directory, or under a file; return the nearest existing
    folder at or above its parent (where its missing parents would be created)."""
    target = path.resolve()
    for item in protect:
        other = Path(item)
        if target == other.resolve() or (path.exists() and other.exists() and os.path.samefile(path, other)):
            raise InputError(f"refusing to overwrite the input {other} with {path}; choose another output")
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder; choose another output path")
    return folder


def check_writable(paths: Iterable[PathLike], *, protect: Sequence[PathLike] = ()) -> None:
    """Pre-flight check that every path in ``paths`` can be published; raise InputError if not.

    For each path: it is not one of ``protect`` (an input), not a directory, not given twice;
    its parent folder exists or can be created (no ancestor is a file) and the nearest
    existing folder accepts a new file (probed by creating and removing an empty temporary
    file, which also catches read-only mounts and permissions that ``os.access`` misses for
    root). Nothing is created or left behind.
    """
    seen: set[Path] = set()
    probed: set[Path] = set()
    for item in paths:
        path = Path(item)
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path} is given twice as an output; give each output its own name")
        seen.add(key)
        folder = _check_target(path, protect)
        if folder.resolve() in probed:
            continue
        probed.add(folder.resolve())
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise InputError(f"cannot write {path}: folder {folder} is not writable ({err.strerror or err}); "
                             "choose another output folder or fix its permissions") from None


class OutputGroup:
    """The files of one result, published together or not at all (see the module docstring).

    ``add`` stages a file (temporary name, content written and fsynced); ``publish`` renames
    every staged file into place; ``discard`` removes the staged files. As a context manager the
    group publishes on a normal exit and discards on an exception. Every failure is an InputError
    (for OSError) or the original exception, after the clean-up.
    """

    def __init__(self, *, protect: Sequence[PathLike] = ()) -> None:
        self._protect = tuple(protect)
        self._staged: list[tuple[Path, str]] = []  # (target, temporary file)

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.publish()
        else:
            self.discard()

    @property
    def paths(self) -> list[Path]:
        """The targets staged so far, in order."""
        return [target for target, _ in self._staged]

    def add(self, path: PathLike, content: Content, *, protect: Sequence[PathLike] = ()) -> Path:
        """Stage ``content`` (bytes, or a callable that writes to a binary file handle) for ``path``.

        The target is checked as in :func:`check_writable` (against the group's ``protect`` and
        this call's), missing parent folders are created.
        On any failure every file staged in this group is removed and the error is raised.
        """
        path = Path(path)
        try:
            if path.resolve() in {target.resolve() for target in self.paths}:
                raise InputError(f"{path} is given twice as an output; give each output its own name")
            _check_target(path, (*self._protect, *protect))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except OSError as err:
                raise _cannot_write(path, err) from None
            self._staged.append((path, temp))
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), FILE_MODE)
                    if isinstance(content, (bytes, bytearray, memoryview)):
                        handle.write(content)
                    else:
                        content(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as err:
                raise _cannot_write(path, err) from None
        except BaseException:
            self.discard()
            raise
        return path

    def publish(self) -> list[Path]:
        """Rename every staged file onto its target; all or nothing. Returns the published paths."""
        for target, _ in self._staged:  # a target may have turned into a folder since it was added
            if target.is_dir():
                self.discard()
                raise InputError(f"cannot write {target}: it is a directory; give a file name")
        done: list[tuple[Path, str | None]] = []  # (target, backup of the file it replaced)
        current = None
        try:
            for target, temp in self._staged:
                current = target
                backup = _keep_old(target)
                try:
                    os.replace(temp, target)
                except BaseException:
                    if backup is not None:
                        os.unlink(backup)
                    raise
                done.append((target, backup))
        except BaseException as err:
            _roll_back(done)
            self.discard()
            if isinstance(err, OSError):
                raise _cannot_write(current, err, published="nothing of this result was written") from None
            raise
        for _, backup in done:
            if backup is not None:
                os.unlink(backup)
        published = self.paths
        self._staged.clear()
        return published

    def discard(self) -> None:
        """Remove every staged temporary file (the targets are untouched)."""
        for _, temp in self._staged:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
        self._staged.clear()


def write_atomic(path: PathLike, content: Content, *, protect: Sequence[PathLike] = ()) -> None:
    """Write one file atomically (an :class:`OutputGroup` of one)."""
    with OutputGroup(protect=protect) as group:
        group.add(path, content)


def _cannot_write(path: Path | None, err: OSError, *, published: str = "") -> InputError:
    tail = f"; {published}" if published else ""
    return InputError(f"cannot write {path}: {err.strerror or err}{tail}; check the folder is writable")


def _keep_old(target: Path) -> str | None:
    """A hard link (or copy) of the file at ``target`` beside it, to restore on roll-back; None if none."""
    if not target.is_file():
        return None
    while True:
        backup = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}.old"))
        try:
            os.link(target, backup)
            return backup
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            shutil.copy2(target, backup)
            return backup


def _roll_back(done: list[tuple[Path, str | None]]) -> None:
    for target, backup in reversed(done):
        try:
            if backup is not None:
                os.replace(backup, target)
            else:
                os.unlink(target)
        except OSError:
            pass  # best effort: the original error is the one to report


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``folder`` itself (no lock file is left) for the block: for a
    read-modify-write of a file in it, such as two exports adding their entries to one MANIFEST.json at once.
    Waits while another process (or another descriptor of this one) holds it; without ``fcntl`` (Windows) or
    where a folder cannot be opened, the block runs unlocked."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
