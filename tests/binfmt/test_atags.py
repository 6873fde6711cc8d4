"""ATAG lists against the layout in arch/arm/include/uapi/asm/setup.h, word by word."""

from __future__ import annotations

import struct

import pytest

from cma_tool.binfmt import atags
from cma_tool.binfmt.atags import AtagCmdline, AtagCore, AtagError, AtagInitrd2, AtagMem, AtagOther

MiB = 1 << 20
CORE, MEM, CMDLINE, INITRD2, MEM64 = 0x54410001, 0x54410002, 0x54410009, 0x54420005, 0x54420002


def words(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def test_aquila_boot_list_matches_setup_h() -> None:
    cmdline = "console=ttySAC2,115200"  # 22 bytes + NUL = 23 -> 6 words
    blob = atags.build(atags.boot_tags([(0x30000000, 80 * MiB), (0x40000000, 384 * MiB)], cmdline, initrd=(0x44000000, 0x00200000)))
    expected = (
        words(5, CORE, 1, 4096, 0)
        + words(4, MEM, 0x05000000, 0x30000000)  # struct tag_mem32 { size; start; }
        + words(4, MEM, 0x18000000, 0x40000000)
        + words(4, INITRD2, 0x44000000, 0x00200000)  # struct tag_initrd { start; size; }
        + words(8, CMDLINE)
        + cmdline.encode()
        + b"\0" * 2
        + words(0, 0)
    )
    assert blob == expected


def test_parse_reads_what_u_boot_writes() -> None:
    # U-Boot sizes the command line tag as (8 + strlen + 1 + 4) >> 2 words,
    # one word more than needed when strlen + 1 is a multiple of 4.
    line = b"mem=64M"  # 7 + 1 = 8 bytes; U-Boot gives (8 + 8 + 4) >> 2 = 5 words
    blob = words(2, CORE) + words(5, CMDLINE) + line + b"\0" + b"\0" * 4 + words(4, MEM, 0x04000000, 0x30000000) + words(0, 0)
    assert atags.parse(blob) == [AtagCore(short=True), AtagCmdline("mem=64M"), AtagMem(0x30000000, 64 * MiB)]


def test_round_trip_keeps_unknown_tags_and_wide_banks() -> None:
    tags: list[atags.Atag] = [
        AtagCore(flags=0, pagesize=4096, rootdev=0x0100),
        AtagMem(0x1_0000_0000, 0x8000_0000, wide=True),
        AtagOther(0x54410007, words(0x1234)),  # ATAG_REVISION
        AtagCmdline(""),
    ]
    blob = atags.build(tags)
    # struct tag_mem64 { u64 size; u64 start; } right after the 20-byte core tag
    assert blob[20:44] == words(6, MEM64) + struct.pack("<QQ", 0x8000_0000, 0x1_0000_0000)
    assert atags.parse(blob) == tags
    assert atags.parse(blob + b"garbage after the end") == tags


@pytest.mark.parametrize(
    ("blob", "offset", "text"),
    [
        (b"", 0, "truncated"),
        (words(5, CORE, 1, 4096), 0, "runs past the end"),
        (words(4, MEM, 1, 2) + words(0, 0), 0, "not ATAG_CORE"),
        (words(2, CORE) + words(1, MEM) + words(0, 0), 8, "less than its own header"),
        (words(2, CORE) + words(3, MEM, 5) + words(0, 0), 8, "ATAG_MEM has size 3 words, expected 4"),
        (words(4, CORE, 1, 2) + words(0, 0), 0, "expected 2 or 5"),
        (words(2, CORE) + words(3, CMDLINE) + b"abcd" + words(0, 0), 8, "not NUL-terminated"),
        (words(2, CORE) + words(0, MEM), 8, "has size 0"),
        (words(2, CORE) + words(2, CORE) + words(0, 0), 8, "a second ATAG_CORE"),
        (words(0, 0), 0, "the list is empty"),
        (words(2, CORE), 8, "truncated"),
    ],
)
def test_bad_lists_name_the_offset(blob: bytes, offset: int, text: str) -> None:
    with pytest.raises(AtagError) as info:
        atags.parse(blob, source="tags.bin")
    assert info.value.offset == offset and text in info.value.what
    assert str(info.value).startswith("tags.bin: byte ")


def test_endless_list_is_refused() -> None:
    blob = words(2, CORE) + words(2, 0x54410099) * (atags.MAX_LIST_BYTES // 8)
    with pytest.raises(AtagError, match="no ATAG_NONE"):
        atags.parse(blob)


@pytest.mark.parametrize(
    ("tags", "text"),
    [
        ([AtagMem(0, MiB)], "must start with ATAG_CORE"),
        ([AtagCore(), AtagCore()], "only first"),
        ([AtagCore(), AtagMem(0xF000_0000, 512 * MiB)], "past 4 GiB"),
        ([AtagCore(), AtagMem(0, 0)], "has size 0"),
        ([AtagCore(), AtagCmdline("x" * 1024)], "keeps only 1023"),
        ([AtagCore(), AtagCmdline("a\0b")], "NUL"),
        ([AtagCore(), AtagOther(0x1234, b"abc")], "not whole words"),
        ([AtagCore(), AtagInitrd2(-1, 5)], "does not fit"),
        ([AtagCore(flags=1 << 32)], "does not fit"),
    ],
)
def test_bad_values_cannot_be_built(tags: list[atags.Atag], text: str) -> None:
    with pytest.raises(AtagError, match=text):
        atags.build(tags)


def test_longest_command_line_the_kernel_keeps() -> None:
    line = "x" * (atags.COMMAND_LINE_SIZE - 1)
    assert atags.parse(atags.build([AtagCore(), AtagCmdline(line)]))[1] == AtagCmdline(line)
