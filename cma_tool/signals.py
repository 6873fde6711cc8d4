"""SIGTERM as an exception, so that a board which is up gets powered off and the record gets finished.

A lab scheduler or a CI job's timeout ends a run with SIGTERM. Python's
default would end the process at once, leaving QEMU or a bench board's power
on and report.json saying "running". Inside :func:`sigterm_raises` the signal
raises an exception instead, which unwinds through every context manager as
Ctrl-C does. `cma-tool run`, the matrix and the pytest plugin each choose the
exception, as each reports a stop differently.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def sigterm_raises(exception: Callable[[int], BaseException]) -> Iterator[None]:
    """While inside, SIGTERM raises ``exception(signum)`` in the main thread; the old handler is back after.

    Only the main thread receives signals and may set their handlers: in any
    other thread this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise exception(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
