"""One error hierarchy, split by whose fault it is.

A lab rack retries only :class:`InfraError`; everything else is reported.
Each class carries the process exit code the CLI returns for it, so the
mapping lives in one place (documented in the README, "Exit codes").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ExitCode(enum.IntEnum):
    OK = 0
    CONFIG = 1  # our input is wrong: board file, scenario, command-line values
    USAGE = 2  # the command line itself is malformed (argparse's own code)
    INFRA = 3  # the lab: serial, network, power, QEMU, downloads
    TARGET = 4  # the board: panic, failed boot, capture program failed
    MISMATCH = 5  # the model and the kernel disagree
    BUG = 70  # our own bug (EX_SOFTWARE)
    INTERRUPTED = 130  # stopped on purpose: SIGINT, Ctrl-C (128 + 2, as a shell says it)
    TERMINATED = 143  # stopped on purpose: SIGTERM, e.g. a lab scheduler's timeout (128 + 15)


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an input file, printed as ``file:line:col: severity: message``."""

    message: str
    file: str = "<input>"
    line: int = 0  # 1-based; 0 when unknown
    col: int = 0  # 1-based; 0 when unknown
    severity: str = "error"  # "error" | "warning"
    hint: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        text = f"{where}: {self.severity}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class CmaToolError(Exception):
    """Base of every error we raise on purpose. ``str()`` is the user-facing text."""

    exit_code: ExitCode = ExitCode.BUG
    kind: str = "bug"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n    hint: {self.hint}" if self.hint else "")


class ConfigError(CmaToolError):
    """The input is wrong. Carries every diagnostic found, not just the first."""

    exit_code = ExitCode.CONFIG
    kind = "configuration"

    def __init__(
        self,
        message: str = "",
        *,
        hint: str = "",
        diagnostics: list[Diagnostic] | None = None,
    ) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics or [])
        if not message and self.diagnostics:
            message = "\n".join(str(d) for d in self.diagnostics)
        super().__init__(message, hint=hint)


class UsageError(CmaToolError):
    """The command line asks for something that cannot apply (a flag of another target, an impossible pair)."""

    exit_code = ExitCode.USAGE
    kind = "usage"


class InfraError(CmaToolError):
    """The lab failed: serial port, network, power, QEMU, a download. Retrying may help."""

    exit_code = ExitCode.INFRA
    kind = "infrastructure"


class TargetError(CmaToolError):
    """The board did the wrong thing: reset, panic, failed boot, capture failed."""

    exit_code = ExitCode.TARGET
    kind = "target"


class Mismatch(CmaToolError):
    """The bundled model and the kernel disagree."""

    exit_code = ExitCode.MISMATCH
    kind = "mismatch"


@dataclass
class DiagnosticSink:
    """Collects diagnostics so a validator can report every problem in one run."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, *, file: str = "<input>", line: int = 0, col: int = 0, hint: str = "") -> None:
        self.items.append(Diagnostic(message, file, line, col, "error", hint))

    def warning(self, message: str, *, file: str = "<input>", line: int = 0, col: int = 0, hint: str = "") -> None:
        self.items.append(Diagnostic(message, file, line, col, "warning", hint))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(diagnostics=self.items)
