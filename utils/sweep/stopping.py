"""Stopping a sweep on a signal (Ctrl-C, ``scancel``, ``kill``, a closed terminal).

``sweep.py``'s handler raises ``SystemExit``, so that the jobs are killed and an MPS daemon quits
on the way out. Python drops an exception raised in its at-fork handlers, so the signals are held
back while a process is forked, and the stop is also kept here for the sweep to check between
steps.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

_stop_signal: list[int] = []


def stop_for(signum: int) -> NoReturn:
    """Stop the sweep: ``SystemExit`` with the shell's code for ``signum``, remembered."""
    _stop_signal.append(signum)
    raise SystemExit(128 + signum)


def check_stop() -> None:
    """``SystemExit`` if a signal asked the sweep to stop."""
    if _stop_signal:
        raise SystemExit(128 + _stop_signal[0])


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold the stop signals back while a process is forked; they arrive when it is done."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_stop_signals() -> None:
    """In a forked child (``preexec_fn``): take the signals that the sweep held while forking."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
