"""Feed one input and say what became of it: one of our documented outcomes, or a bug, a hang, too much memory.

Exit codes 0-5 are outcomes the tool documents (a clear error is a good
answer to a bad input); 70 is the tool catching a bug of its own; an
exception reaching here is a bug the tool did not even catch. A feed still
running after ``TIME_LIMIT`` seconds is a hang (SIGALRM interrupts it: the
code under test is Python, so the alarm lands).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from tests.fuzz.classes import InputClass

TIME_LIMIT = 10.0
KINDS = {0: "ok", 1: "config", 2: "usage", 3: "infra", 4: "target", 5: "mismatch", 70: "internal"}


class _Hang(BaseException):
    """Not an Exception: the code under test must not be able to catch it."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok, config, usage, infra, target, mismatch, internal, hang
    seconds: float
    detail: str = ""

    @property
    def bad(self) -> bool:
        return self.kind in ("internal", "hang")


def judge(cls: InputClass, value: Any, *, time_limit: float = TIME_LIMIT) -> Outcome:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    start = time.monotonic()
    try:
        try:
            code = cls.feed(value)
        except SystemExit as exc:  # argparse refusing a command line: its exit code is the answer
            code = exc.code if isinstance(exc.code, int) else 2
        kind = KINDS.get(code, f"exit {code}")
        return Outcome(kind if code != 70 else "internal", time.monotonic() - start)
    except _Hang:
        return Outcome("hang", time.monotonic() - start, f"still running after {time_limit:g} s")
    except RecursionError as exc:
        return Outcome("internal", time.monotonic() - start, f"RecursionError: {exc}")
    except Exception as exc:  # noqa: BLE001 - anything reaching here is the finding
        return Outcome("internal", time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
