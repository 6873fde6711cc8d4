"""Validation a bring-up engineer trusts: sizes in the kernel's units, holes, every DMA user, the line at fault.

Expected numbers are worked out here from the kernel's rules (linux-cma.md, memblock's
top-down search), never copied from the tool's output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.plan import load_checked_board
from cma_tool.sizes import SizeError, parse_size

AQUILA = Path(__file__).parents[2] / "boards" / "aquila.yaml"


def _board(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    return path


def _placed_default(path: Path) -> tuple[int, int]:
    """Base and size of the board's linux,cma area, for a board without errors."""
    checked = load_checked_board(path)
    assert not [d for d in checked.diagnostics if d.severity == "error"], checked.diagnostics
    assert checked.plan is not None
    (area,) = [a for a in checked.plan.areas if a.name == "linux,cma"]
    return area.base, area.size


def _diags(path: Path, severity: str) -> list[tuple[int, str, str]]:
    checked = load_checked_board(path)
    return [(d.line, d.message, d.hint) for d in checked.diagnostics if d.severity == severity]


@pytest.mark.parametrize("text", ["64MB", "64Mb", "64mb", "64 MB", "64Mib", "16KB", "1GB"])
def test_mb_and_mb_are_refused_with_the_spelling_to_use(text: str) -> None:
    with pytest.raises(SizeError) as err:
        parse_size(text)
    number = text.strip().rstrip("iBbMmKkGg ")
    assert f"write {number}" in err.value.hint and "memparse" in err.value.hint


@pytest.mark.parametrize(("text", "value"), [("64M", 64 << 20), ("64 MiB", 64 << 20), ("16K", 16 << 10),
                                             ("1g", 1 << 30), ("2 GiB", 2 << 30), ("0x4000000", 64 << 20),
                                             ("64", 64), ("64B", 64)])
def test_memparse_units_and_iec_forms_are_accepted(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_mb_in_a_board_is_an_error_at_the_size_line(tmp_path: Path) -> None:
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n    size: 64MB\n")
    # (The node is then dropped, so a second error says the Kconfig default area is too small.)
    (err,) = [e for e in _diags(path, "error") if e[0] == 4]
    assert "'MB' is not a unit the kernel knows" in err[1] and "write 64M or 64 MiB" in err[2]


def test_a_bare_number_is_explained_as_bytes_and_no_wrong_size_is_suggested(tmp_path: Path) -> None:
    # size: 64 is 64 bytes; the 4 MiB unit (max-order 11) makes it an error. Rounding 64 bytes up to
    # one unit ("use size: 4 MiB") would suggest a size nobody meant: the hint names 64M instead.
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n    size: 64\n")
    errors = _diags(path, "error")
    (err,) = [e for e in errors if "not a multiple of 4 MiB" in e[1]]
    assert err[0] == 4 and "size 64 B" in err[1]
    assert "64 means 64 bytes" in err[2] and "write 64M for 64 MiB" in err[2] and "use size:" not in err[2]


def test_a_small_bare_buffer_size_is_a_warning_at_its_line(tmp_path: Path) -> None:
    path = _board(tmp_path, f"include: {AQUILA}\ndevices:\n  mfc:\n    needs:\n      buffers:\n"
                            "        - name: firmware\n          size: 512\n          region: mfc_left\n")
    (warn,) = [w for w in _diags(path, "warning") if "plain number is bytes" in w[1]]
    assert warn[0] == 7 and "512 means 512 bytes" in warn[2]


def test_alloc_ranges_over_a_hole_are_accepted_and_placed_top_down(tmp_path: Path) -> None:
    # Aquila: bank 0 0x30000000-0x35000000, bank 1 0x40000000-0x58000000, hole between.
    # [0x34000000, +0x0e000000) = 0x34000000..0x42000000: 16 MiB of bank 0, 32 MiB of bank 1.
    # memblock walks free memory top-down: bank 1's part 0x40000000..0x42000000 is highest;
    # 0x42000000 - 32 MiB = 0x40000000, 4 MiB aligned, >= the part's start: the area lands there.
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n    size: 32M\n"
                            "    alloc-ranges: [[0x34000000, 0x0e000000]]\n")
    assert _placed_default(path) == (0x40000000, 32 << 20)


def test_the_issues_range_over_both_banks_places_the_default_at_the_top(tmp_path: Path) -> None:
    # [0, 0xc0000000) holds both banks; the highest free 32 MiB block is 0x58000000 - 32 MiB = 0x56000000.
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n"
                            "    alloc-ranges: [[0x0, 0xc0000000]]\n")
    assert _placed_default(path) == (0x56000000, 32 << 20)


def test_an_area_cannot_span_the_hole(tmp_path: Path) -> None:
    # 32 MiB in a range holding 16 MiB of each bank: no single bank part is large enough.
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n    size: 32M\n"
                            "    alloc-ranges: [[0x34000000, 0x0d000000]]\n")
    errors = _diags(path, "error")
    assert any(line == 4 and "larger than the memory of any one bank" in msg and "largest: 16 MiB" in msg
               for line, msg, _ in errors), errors


def test_a_range_with_no_memory_is_a_warning_at_its_entry(tmp_path: Path) -> None:
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  linux,cma:\n"
                            "    alloc-ranges:\n      - [0x60000000, 16M]\n      - [0x40000000, 384M]\n")
    warnings = _diags(path, "warning")
    assert any(line == 5 and "holds no memory" in msg for line, msg, _ in warnings), warnings


def test_dma_mask_is_checked_for_users_of_the_default_area(tmp_path: Path) -> None:
    # One 2 GiB bank 0x40000000..0xc0000000; linux-6.1 places the 64 MiB default node top-down:
    # 0xc0000000 - 64 MiB = 0xbc000000 (the issue's address). A 31-bit mask reaches 0x80000000 only.
    path = _board(tmp_path, "memory: [[0x40000000, 2G]]\nkernel: {profile: linux-6.1, max-order: 11}\n"
                            "reserved-memory:\n  linux,cma:\n    label: cma_default\n    compatible: shared-dma-pool\n"
                            "    reusable: true\n    size: 64M\n    linux,cma-default: true\n"
                            "devices:\n  cam:\n    driver: s5p-fimc\n    dma-mask-bits: 31\n")
    errors = _diags(path, "error")
    assert [(line, msg) for line, msg, _ in errors] == [
        (13, "device 'cam': the default area 'cma_default' is placed at 0xbc000000..0xc0000000, beyond its "
             "31-bit DMA mask (0x80000000)")]


def test_a_board_without_its_soc_include_warns_what_defaulted(tmp_path: Path) -> None:
    # No max-order anywhere: linux-6.1's profile value 12 stands, pageblock order 11 -> 2048 pages of
    # 4 KiB = 8 MiB, twice the 4 MiB the S5PV210 include would have given.
    path = _board(tmp_path, "memory: [[0x30000000, 80M], [0x40000000, 384M]]\n")
    warnings = _diags(path, "warning")
    assert any("no kernel max-order given" in msg and "12 (CMA unit: 8 MiB)" in msg and "include:" in hint
               for _, msg, hint in warnings), warnings


def test_a_bare_reg_size_and_a_bare_carveout_size_are_explained(tmp_path: Path) -> None:
    # reg: [0x33000000, 64] on a CMA node: 64 bytes, not a 4 MiB multiple: the error's hint says bytes.
    # A no-map carveout of size 512 is no CMA area (no unit to miss): a warning that 512 is bytes.
    path = _board(tmp_path, f"include: {AQUILA}\nreserved-memory:\n  region@33000000:\n    reg: [0x33000000, 64]\n"
                            "  carveout:\n    compatible: shared-dma-pool\n    no-map: true\n    size: 512\n")
    (err,) = [e for e in _diags(path, "error") if e[0] == 4]
    assert "not aligned to 4 MiB" in err[1] and "64 means 64 bytes" in err[2] and "use a base" not in err[2]
    (warn,) = [w for w in _diags(path, "warning") if "plain number" in w[1]]
    assert warn[0] == 8 and "512 means 512 bytes" in warn[2]
