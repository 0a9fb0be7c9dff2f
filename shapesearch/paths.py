"""Where results may be written: checked before any work starts, so a run never fails at its end.

Every front end (command line, Python jobs, model jobs) asks these before searching or
compressing; a bad destination becomes an :class:`~shapesearch.errors.ArgumentError` naming
the argument, and nothing is created when the answer is no.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ArgumentError


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of ``path`` (itself included) that exists, as far as we may look
    (os.path's tests, unlike Path's, answer False instead of raising where we may not enter)."""
    path = Path(os.path.abspath(path))
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    return path


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory``: asked of the file system itself, since
    permission bits say nothing for root or on read-only and virtual file systems.  The probe
    is an unnamed temporary file (O_TMPFILE), so the directory is left as it was."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _check_can_create(path: Path, argument: str, what: str) -> None:
    """``path`` does not exist yet: its nearest existing ancestor must be a writable directory."""
    base = _existing_ancestor(path)
    if not os.path.isdir(base):
        raise ArgumentError(argument, f"{path}: {base} is a file, so no {what} can be made under it; "
                                      "give a path whose parents are directories")
    if not _writable(base):
        raise ArgumentError(argument, f"{path}: {base} is not writable; give a {what} you may write to")


def check_writable_dir(path: str | Path, argument: str = "out") -> None:
    """``path`` is a writable directory or can be created as one (nothing is created here)."""
    path = Path(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ArgumentError(argument, f"{path} is a file; give a directory")
        if not _writable(path):
            raise ArgumentError(argument, f"{path} is not writable; give a directory you may write to")
        return
    _check_can_create(path, argument, "directory")


def check_writable_file(path: str | Path, argument: str = "out", overwrite: bool = False) -> None:
    """``path`` can be written as a new file (or replaced, with ``overwrite``)."""
    path = Path(path)
    if os.path.isdir(path):
        raise ArgumentError(argument, f"{path} is a directory; give a file name")
    if os.path.exists(path):
        if not overwrite:
            raise ArgumentError(argument, f"{path} exists; choose another name or overwrite it")
        if not os.access(path, os.W_OK) or not _writable(path.parent):
            raise ArgumentError(argument, f"{path} is not writable; give a file you may write to")
        return
    _check_can_create(path, argument, "file")


def make_dir(path: str | Path, argument: str = "out") -> Path:
    """Create directory ``path`` (and its parents) after :func:`check_writable_dir`."""
    check_writable_dir(path, argument)
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a race, or a file system that os.access misjudged
        raise ArgumentError(argument, f"{path} cannot be created ({exc.strerror}); give another directory") from exc
    return path


def readable_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_outside(path: str | Path, source: str | Path, argument: str = "out") -> None:
    """Refuse an output that is the input ``source`` or lies inside it (a model directory written
    over by its own compression, or its config.json by a plan)."""
    out, source = Path(os.path.realpath(path)), Path(os.path.realpath(source))
    if os.path.exists(source) and (out == source or source in out.parents):  # os.path: False where we may not look
        where = "is" if out == source else "lies inside"
        raise ArgumentError(argument, f"{path} {where} the input {source}, which it would write over; give another "
                                      "path")
