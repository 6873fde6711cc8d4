"""The agent's framed output (firmware/cmatool-run), read the same way whatever carried it.

    ==== CMA-TOOL BEGIN <name> ====
    ...
    ==== CMA-TOOL END <name> rc=<exit code> bytes=<N> sha256=<hex> ====
    ...
    ==== CMA-TOOL DONE rc=<capture's exit code> ====

Console (QEMU, U-Boot, a serial line) or SSH: the same text, one reader.
The END line's byte count and sha256 are of the section's text as the agent
printed it: a section that does not add up arrived damaged (a console that
dropped or changed bytes), which is the link's fault, not the model's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

BEGIN_MARK = "==== CMA-TOOL BEGIN "
END_MARK = "==== CMA-TOOL END "
DONE_MARK = "==== CMA-TOOL DONE rc="
#: The agent's last line as a console pattern: the whole line, so a match means it arrived complete.
DONE_LINE = rb"==== CMA-TOOL DONE rc=-?\d+ ====\r?\n"

_BEGIN = re.compile(r"^==== CMA-TOOL BEGIN (?P<name>\S+) ====\s*$")
_END = re.compile(r"^==== CMA-TOOL END (?P<name>\S+) rc=(?P<rc>-?\d+)"
                  r"(?: bytes=(?P<bytes>\d+) sha256=(?P<sha256>[0-9a-f]{64}))? ====\s*$")
_DONE = re.compile(r"^==== CMA-TOOL DONE rc=(?P<rc>-?\d+) ====\s*$")
#: A terminal escape (colour, cursor): a console's, never the board's words.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console_text(raw: bytes) -> str:
    """Console bytes as text: what is not UTF-8 shown as U+FFFD, the tty's CR before LF dropped."""
    return raw.decode(errors="replace").replace("\r\n", "\n")


@dataclass(frozen=True)
class Section:
    """One framed block; ``rc`` is None when its END line never came (the run was cut off)."""

    name: str
    text: str  # its lines, each ending in "\n"
    rc: int | None
    #: What the agent said it printed (bytes, sha256), or None: an agent without sha256sum, or older.
    declared: tuple[int, str] | None = None
    #: The lines as they arrived (only the console's CR before LF taken off), what ``declared`` is of.
    raw: str = ""

    @property
    def damage(self) -> str | None:
        """Why the section does not add up to what the agent declared, or None (intact, or unverifiable)."""
        if self.declared is None:
            return None
        data = self.raw.encode("utf-8", "surrogateescape")
        size, digest = self.declared
        if len(data) != size:
            return f"{len(data)} bytes arrived of the {size} the agent printed"
        if hashlib.sha256(data).hexdigest() != digest:
            return f"its {size} bytes arrived changed (sha256 differs)"
        return None


@dataclass
class AgentOutput:
    sections: dict[str, Section] = field(default_factory=dict)
    done_rc: int | None = None
    outside: list[str] = field(default_factory=list)  # lines outside any section: the console's own


def split_sections(text: str) -> AgentOutput:
    """Every section by name, the DONE line's rc, and the lines around them (terminal escapes and CR removed)."""
    out = AgentOutput()
    lines: dict[str, list[str]] = {}
    raws: dict[str, list[str]] = {}
    current: str | None = None
    # Split at LF only: a section's own text may hold other line breaks (\r, \x0c, ...) that count in its sha256.
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()  # the text's last newline ends a line, it does not start one
    for raw in parts:
        raw = raw.removesuffix("\r")  # the tty's CR before LF is the console's, not the agent's
        line = ANSI.sub("", raw.replace("\r", ""))
        if m := _BEGIN.match(line):
            current = m.group("name")
            lines[current], raws[current] = [], []
            continue
        if m := _END.match(line):
            name = m.group("name")
            declared = (int(m.group("bytes")), m.group("sha256")) if m.group("bytes") else None
            out.sections[name] = Section(name, "".join(f"{ln}\n" for ln in lines.get(name, [])), int(m.group("rc")),
                                         declared, "".join(f"{ln}\n" for ln in raws.get(name, [])))
            current = None
            continue
        if m := _DONE.match(line):
            out.done_rc = int(m.group("rc"))
            continue
        if current is not None:
            lines[current].append(line)
            raws[current].append(raw)
        else:
            out.outside.append(line)
    if current is not None:  # cut off inside a section: keep what it printed
        out.sections[current] = Section(current, "".join(f"{ln}\n" for ln in lines[current]), None)
    return out
