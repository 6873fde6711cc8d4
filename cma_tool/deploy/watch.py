"""Following the agent on a console: the kernel starts /init, the agent runs the plan, says DONE, powers off.

Every way onto a board whose agent runs from our initrd (QEMU's direct boot,
U-Boot on the emulator or on a bench board) ends the same way, so it is
written once here.
"""

from __future__ import annotations

from collections.abc import Callable

from cma_tool.deploy.console import Console
from cma_tool.deploy.sections import DONE_LINE

#: What the kernel prints as the agent's ``poweroff -f`` takes effect.
POWER_DOWN = rb"reboot: (?:Power down|System halted|Restarting system)"
#: After the DONE line, how long the kernel may take to say it powered down.
POWER_DOWN_WAIT = 5.0


def watch_agent(console: Console, left: Callable[[], float], on_stage: Callable[[str], None]) -> None:
    """Wait for /init (stage "init"), then the agent's DONE line (stage "captured"), then the power-down.

    ``left()`` is the time the session has left. A silent board, a panic or
    a reset raise the console's own errors (the board's fault). The power-down
    line is kept in the log when it comes; the run is complete without it.
    """
    console.expect(rb"Run /init", left(), waiting_for="the kernel to start /init")
    on_stage("init")
    console.expect(DONE_LINE, left(), waiting_for="the agent to finish its plan ('==== CMA-TOOL DONE rc=N ====')")
    on_stage("captured")
    everything = [bad.name for bad in console.bad_patterns]
    with console.disable_check(*everything):
        console.try_expect(POWER_DOWN, min(POWER_DOWN_WAIT, left()))
