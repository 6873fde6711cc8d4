"""The agent's framed output (firmware/cmatool-run), read the same way whatever carried it.

    ==== CMA-TOOL BEGIN <name> ====
    ...
    ==== CMA-TOOL END <name> rc=<exit code> ====
    ...
    ==== CMA-TOOL DONE rc=<capture's exit code> ====

Console (QEMU, U-Boot, a serial line) or SSH: the same text, one reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BEGIN_MARK = "==== CMA-TOOL BEGIN "
END_MARK = "==== CMA-TOOL END "
DONE_MARK = "==== CMA-TOOL DONE rc="
#: The agent's last line as a console pattern: the whole line, so a match means it arrived complete.
DONE_LINE = rb"==== CMA-TOOL DONE rc=-?\d+ ====\r?\n"

_BEGIN = re.compile(r"^==== CMA-TOOL BEGIN (?P<name>\S+) ====\s*$")
_END = re.compile(r"^==== CMA-TOOL END (?P<name>\S+) rc=(?P<rc>-?\d+) ====\s*$")
_DONE = re.compile(r"^==== CMA-TOOL DONE rc=(?P<rc>-?\d+) ====\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Section:
    """One framed block; ``rc`` is None when its END line never came (the run was cut off)."""

    name: str
    text: str  # its lines, each ending in "\n"
    rc: int | None


@dataclass
class AgentOutput:
    sections: dict[str, Section] = field(default_factory=dict)
    done_rc: int | None = None
    outside: list[str] = field(default_factory=list)  # lines outside any section: the console's own


def split_sections(text: str) -> AgentOutput:
    """Every section by name, the DONE line's rc, and the lines around them (terminal escapes and CR removed)."""
    out = AgentOutput()
    lines: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = _ANSI.sub("", raw.replace("\r", ""))
        if m := _BEGIN.match(line):
            current = m.group("name")
            lines[current] = []
            continue
        if m := _END.match(line):
            name = m.group("name")
            out.sections[name] = Section(name, "".join(f"{ln}\n" for ln in lines.get(name, [])), int(m.group("rc")))
            current = None
            continue
        if m := _DONE.match(line):
            out.done_rc = int(m.group("rc"))
            continue
        if current is not None:
            lines[current].append(line)
        else:
            out.outside.append(line)
    if current is not None:  # cut off inside a section: keep what it printed
        out.sections[current] = Section(current, "".join(f"{ln}\n" for ln in lines[current]), None)
    return out
