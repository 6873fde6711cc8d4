"""The error every binary codec raises: what is wrong, in which input, at which byte."""

from __future__ import annotations

from cma_tool.errors import ConfigError, Diagnostic


class BlobError(ConfigError):
    """A binary image (DTB, ATAG list, U-Boot environment) is malformed or cannot be built.

    ``offset`` is the byte offset in the input where the problem was found, or
    None when the problem is not about one byte (a value that does not fit, say).
    """

    #: How the format is named in messages ("DTB", "ATAG list", ...).
    format_name = "blob"

    def __init__(self, what: str, *, offset: int | None = None, source: str = "", hint: str = "") -> None:
        self.offset = offset
        self.source = source or f"<{self.format_name}>"
        self.what = what
        where = self.source if offset is None else f"{self.source}: byte {offset} (0x{offset:x})"
        super().__init__(
            f"{where}: {what}",
            hint=hint,
            diagnostics=[Diagnostic(what if offset is None else f"byte 0x{offset:x}: {what}", file=self.source, hint=hint)],
        )
