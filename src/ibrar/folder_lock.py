"""One writer per run folder: an exclusive lock that a second `ibrar train` or `ibrar eval` is refused by.

Two processes writing one folder interleave their metrics and overwrite each other's checkpoints. The lock is
an `flock` on `<folder>/.ibrar.lock`, which holds the writer's pid for the message. The kernel releases it when
the holder dies, however it dies, so a lock left by a killed process is simply taken over. Within one process
the lock is re-entrant (training, then evaluating into the same folder).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ibrar.errors import IbrarError

LOCK_FILE = ".ibrar.lock"

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, as before the lock existed
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, tuple[int, int]] = {}  # folder -> (open descriptor, depth) for the locks this process holds


class FolderBusyError(IbrarError, RuntimeError):
    """Another live process is writing to the run folder."""


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "an unknown process"


@contextlib.contextmanager
def locked_folder(folder: str | Path) -> Iterator[None]:
    """Hold the folder's write lock for the block; raise `FolderBusyError` naming the holder's pid if another
    live process holds it."""
    folder = Path(folder).resolve()
    if fcntl is None:
        yield
        return
    if folder in _held:
        fd, depth = _held[folder]
        _held[folder] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[folder]
            _held[folder] = (fd, depth - 1)
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusyError(
            f"run folder {folder} is in use by {_holder(lock_path)} (another ibrar train or eval writing to it); "
            "wait for it to finish or stop it, or choose another folder with --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[folder] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held.pop(folder)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # a start that failed: leave no trace
            with contextlib.suppress(OSError):
                lock_path.unlink()
                folder.rmdir()
