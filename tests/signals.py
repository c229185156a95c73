"""Signals for the processes tests start."""

from __future__ import annotations

import signal

__all__ = ["interruptible"]


def interruptible() -> None:
    """``preexec_fn`` for a process a test stops with Ctrl-C (SIGINT): SIGINT back to its
    default, so the child (Python) turns it into KeyboardInterrupt as a terminal's Ctrl-C
    would. A run started in the background of a non-interactive shell (``cmd &``,
    ``nohup``) inherits SIGINT *ignored*, and every child would ignore the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
