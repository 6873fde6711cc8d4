"""Binary formats a bootloader hands to the kernel: DTB (fdt), ATAG lists (atags), U-Boot environments (ubootenv).

Each module decodes and encodes with construct and raises its own subclass of
:class:`cma_tool.binfmt.blob_error.BlobError` (a ConfigError) naming the byte
offset of anything malformed.
"""
