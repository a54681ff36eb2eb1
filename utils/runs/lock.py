"""One process per run: an OS file lock beside the run's results.

Two processes on the same ``{name}_{run}`` would write the same state files; on a GPU, which is
not bitwise deterministic, the saved history could then mix cycles of two different runs. The
lock is ``fcntl.flock`` on ``{stem}.lock``: the kernel drops it when its holder exits, however it
exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from utils.errors import UserError


class RunLockedError(UserError, RuntimeError):
    """Another live process holds this run."""


# In RunLockedError's line, after the run's name: how a sweep tells that refusal in a job's log.
ALREADY_RUNNING = " is already running in "


class NoFileLocksError(UserError, OSError):
    """The file system of a lock's folder (results, data or splits) refuses ``flock``."""


def _flock(fd: int, operation: int, path: Path) -> None:
    """``fcntl.flock``; a file system without locks (Lustre or NFS mounted without them) is named
    in one line rather than failing every run with a traceback."""
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        raise
    except OSError as err:
        raise NoFileLocksError(
            f"{path.parent} does not support file locks ({err.strerror}); use a folder on a file "
            "system that does (on a cluster, one that locks across nodes)"
        ) from None


class LockPermissionError(UserError, PermissionError):
    """This user may not write the lock file, or create it in its folder."""


def _open_for_locking(path: Path) -> int:
    """The lock file open for writing, created if absent; a lock file or folder that this user
    may not write (someone else's, in a folder shared between users) is named in one line."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        what = f"write the lock {path}" if path.exists() else f"create a lock in {path.parent}"
        raise LockPermissionError(
            f"cannot {what}: permission denied (another user's?); work in a folder of your own, "
            "or have its owner make it group-writable"
        ) from None


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


# The descriptors of the locks this process holds. A forked child (a DataLoader worker) would
# share each lock with it and keep it past its death, so the child drops its copies at once:
# each becomes /dev/null, and the number stays valid for whatever closes it later.
_HELD: set[int] = set()


def _drop_held_in_child() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        os.dup2(null, fd, inheritable=False)
    os.close(null)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_held_in_child)


# ``is_locked`` holds a shared lock for an instant; a run starting in that instant waits it out.
PROBE_GRACE_S = 1.0


def _take(fd: int, grace_s: float, path: Path) -> bool:
    """Take the exclusive lock on ``fd``, retrying for ``grace_s``; whether it was taken."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold the lock at ``path`` for the duration; ``RunLockedError`` if another process has it."""
    fd = _open_for_locking(path)
    try:
        if not _take(fd, PROBE_GRACE_S, path):
            raise RunLockedError(
                f"{path.stem}{ALREADY_RUNNING}{_holder(path)} (lock {path}); wait for it "
                "to finish or stop it, then run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(path: Path) -> str | None:
    """Who holds the lock at ``path``, or None when nobody does (never blocks, never creates)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        _flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, path)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)
    return None


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold the lock at ``path``, waiting for another holder to finish first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_for_locking(path)
    try:
        _flock(fd, fcntl.LOCK_EX, path)
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)
