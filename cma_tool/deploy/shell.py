"""A Linux shell (busybox sh) on a console.

Every command is framed by a fresh marker (:func:`console.new_marker`): the
board prints it before the command's output and again, with the exit status,
after it; the echo of the typed line never contains it.

Busybox's line editor asks the terminal for the cursor position (``ESC[6n``)
with every prompt; nothing answers it here and it is removed from output.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence

from cma_tool.deploy.console import Console, new_marker, show_bytes, split_marker
from cma_tool.errors import TargetError

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: busybox prints this from init's askfirst entry and waits for Enter.
ACTIVATE = r"Please press Enter to activate this console\."
#: "/ # ", "~ # ", "root@board:~# ", "$ ", each maybe followed by ESC[6n.
DEFAULT_PROMPT = rb"(?m)^[^\r\n]*[#$] (?:\x1b\[6n)?"


def clean_output(text: str) -> str:
    """Board output as plain text: CRLF -> LF, terminal escape sequences removed."""
    return _CSI.sub("", text).replace("\r\n", "\n").replace("\r", "")


class LinuxShell:
    """Drive a root shell on ``console``; call :meth:`attach` once the kernel is booting."""

    def __init__(
        self,
        console: Console,
        *,
        prompt: bytes | str = DEFAULT_PROMPT,
        username: str = "root",
        password: str | None = None,
        default_timeout: float = 30.0,
        silence: float = 5.0,
    ) -> None:
        self.console = console
        self.prompt = prompt
        self.username = username
        self.password = password
        self.default_timeout = default_timeout
        self.silence = silence

    def attach(self, timeout: float = 60.0) -> None:
        """Get to a prompt: press Enter for busybox init, log in if asked, quieten the kernel.

        After ``silence`` seconds without any of those, Enter is pressed: a
        shell already sitting at its prompt answers with a new one.
        """
        patterns = [ACTIVATE, r"(?m)^\S* ?login: ", r"Password: ", self.prompt]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            m = self.console.try_expect(patterns, max(0.0, min(self.silence, left)))
            if m is None:
                if left <= 0:
                    # Raises the usual timeout error, with the last bytes seen.
                    self.console.expect(patterns, 0, waiting_for="a Linux shell prompt or login")
                self.console.sendline()
            elif m.index == 0:
                self.console.sendline()
            elif m.index == 1:
                self.console.sendline(self.username)
            elif m.index == 2:
                if self.password is None:
                    raise TargetError(
                        "the board asks for a password and none was given",
                        hint="give the board's root password, or let the image log root in without one",
                    )
                self.console.sendline(self.password)
            else:
                break
        # Kernel messages on the console would interleave with command output.
        self.run_check("dmesg -n 1", timeout=10)

    def run(self, command: str, timeout: float | None = None) -> tuple[str, int]:
        """Run ``command`` (shell syntax, already quoted); return its output and exit status."""
        marker = new_marker()
        split = split_marker(marker)
        # printf's leading \n ends an output that lacks one; exactly one \n is
        # taken off again below, so output is returned as the command wrote it.
        self.console.sendline(f"echo {split}; {command}; printf '\\n%s %d\\n' {split} \"$?\"")
        wait = self.default_timeout if timeout is None else timeout
        what = f"the output of {command!r}"
        self.console.expect(rf"{marker}\r?\n", wait, waiting_for=what)
        # The output is whatever comes before the closing marker (Match.before),
        # so it may be longer than any single pattern match.
        end = self.console.expect(rf"\r?\n{marker} (\d+)\r?\n", wait, waiting_for=what)
        self.console.expect(self.prompt, wait, waiting_for="the shell prompt after a command")
        output, status = end.before, end.groups[0]
        assert status is not None  # the group always takes part in a match
        return clean_output(output), int(status)

    def run_check(self, command: str, timeout: float | None = None) -> str:
        """Run ``command``; raise TargetError if it exits non-zero; return its output."""
        output, status = self.run(command, timeout)
        if status != 0:
            raise TargetError(
                f"command {command!r} failed on the board with exit status {status}\n"
                f"--- its output ---\n{show_bytes(output.encode())}",
            )
        return output

    def run_argv(self, argv: Sequence[str], timeout: float | None = None) -> tuple[str, int]:
        """Run a command given as words; each word is quoted, so values from a board file stay literal."""
        return self.run(shlex.join(argv), timeout)
