"""Stop signals: SIGTERM (a scheduler stopping us) and SIGINT (Ctrl-C) ask long work to
checkpoint and stop; a second Ctrl-C aborts at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: set by SIGTERM / SIGINT (see :func:`stop_on_signals`); training checkpoints and stops
STOP = threading.Event()


def request_stop(*_: object) -> None:
    """Ask running training loops to checkpoint and stop after the current batch."""
    STOP.set()


def stop_requested() -> bool:
    """Whether a stop was asked for (by a signal or :func:`request_stop`)."""
    return STOP.is_set()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While training runs (in this thread or a flow's task thread), SIGTERM (a scheduler
    stopping us) and SIGINT (Ctrl-C) make it checkpoint and stop; a second Ctrl-C aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the process's main thread (the CLI) installs the handlers
        return
    STOP.clear()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: object) -> None:
        if STOP.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request_stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
