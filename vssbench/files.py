"""Files that are never half-written, never lost to a concurrent writer, and checked before the work.

* :func:`atomic_path` yields a temporary path beside the target; the caller writes it, and on success
  it is fsynced and renamed over the target, so a reader (or a killed process) sees the old file or
  the new one, never a mixture. The file gets the permissions the user's umask gives a new file
  (``mkstemp`` alone would make it private to the owner).
* :func:`exclusive_lock` serialises read-modify-write cycles of processes sharing a file (several
  ``bench run`` on one ``--output``): an ``fcntl`` lock on a sidecar ``.NAME.lock`` beside it, since the
  file itself is replaced by each rename.
* :func:`check_writable` is run on every output path before any work, naming the option.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


class UnwritableError(OSError):
    """An output path that cannot be written, named with the option that gave it."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(handle, 0o666 & ~_umask())
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (on ``.NAME.lock`` beside it) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    try:  # never through a link: a planted .lock link would create or truncate its target
        handle = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666 & ~_umask())
    except OSError as error:
        raise UnwritableError(f"cannot lock {path}: {lock_path} ({error.strerror or error}); expected a regular "
                              "file there or nothing (remove it)") from None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise UnwritableError(f"cannot lock {path}: {lock_path} is not a regular file; remove it")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def check_writable(path: str | Path | None, option: str, directory: bool = False) -> None:
    """Raise :class:`UnwritableError` naming ``option`` unless ``path`` (a file, or with ``directory`` a
    folder) can be written: its folder is created as the write would create it, and a probe file is
    written there and removed, with the folders made for it (permission bits alone do not say, e.g. for
    root or a read-only mount)."""
    if path is None:
        return
    path = Path(path)
    folder = path if directory else path.parent
    if not directory and path.is_dir():
        raise UnwritableError(f"{option} {path} is a folder; expected a file path")
    if directory and path.exists() and not path.is_dir():
        raise UnwritableError(f"{option} {path} is a file; expected a folder")
    created = [parent for parent in [folder, *folder.parents] if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.write-test"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600))  # not via a link
        probe.unlink()
        for parent in created:  # nothing is left behind: a run that stops on bad input writes nothing
            parent.rmdir()
    except OSError as error:
        raise UnwritableError(f"{option} {path}: cannot write there ({error.strerror or error}); expected a "
                              "place this user can write") from None
