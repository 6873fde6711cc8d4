"""Quoting for U-Boot's hush shell: one rule for what we type at a prompt and what we script.

Both the generators (boot.cmd, uboot-env.txt) and the U-Boot driver put board
values on hush command lines, so the rule lives here, below both of them.
"""

from __future__ import annotations

from cma_tool.errors import ConfigError


def hush_quote(value: str, *, what: str = "value") -> str:
    """``value`` as one literal hush word: single-quoted.

    Refused (ConfigError): a single quote (hush has no way to escape one
    inside single quotes), a backslash (U-Boot's hush drops backslashes even
    inside single quotes), control characters and newlines (they end or edit
    the command line) and non-ASCII (typed byte by byte, echoed unreliably).
    """
    for index, ch in enumerate(value):
        if ch in "'\\" or not 32 <= ord(ch) < 127:
            raise ConfigError(
                f"{what} {value!r} cannot be typed into U-Boot: character {index + 1} is {ch!r}",
                hint="U-Boot's hush takes printable ASCII without ' and \\ literally; change the value",
            )
    return f"'{value}'"
