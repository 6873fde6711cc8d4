"""Static validation: one board with one of each error class, every error in one run.

Expected lines and numbers come from the kernel's rules (linux-cma.md), not from
what the validator printed: e.g. max-order 11 -> pageblock order 10 -> 1024
pages of 4 KiB -> a 4 MiB CMA unit, so 10M and a base of 0x32200000 are refused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cma_tool.board.load import read_board
from cma_tool.board.validate import check_board
from cma_tool.plan import load_checked_board

DATA = Path(__file__).parent / "data"
BOARDS = Path(__file__).parents[2] / "boards"


def static_errors(name: str) -> list[tuple[int, str]]:
    checked = load_checked_board(DATA / name)
    return sorted((d.line, d.message + " | " + d.hint) for d in checked.diagnostics if d.severity == "error")


def find(errors: list[tuple[int, str]], line: int, *words: str) -> None:
    hits = [m for ln, m in errors if ln == line and all(w in m for w in words)]
    assert hits, f"no error at line {line} with {words}; got:\n" + "\n".join(f"{ln}: {m}" for ln, m in errors)


def test_every_error_class_reported_at_its_line() -> None:
    # Each error is at the line of the value at fault: the size:, reg:, no-map:, memory-region entry or
    # dma-mask-bits: line, not the line that names the node.
    errs = static_errors("every-error.yaml")
    find(errs, 11, "overlaps the bank at 0x40000000")
    # 10 MiB is not a multiple of 4 MiB; as the default node it falls back to Kconfig's 16 MiB 'reserved'.
    find(errs, 16, "10 MiB is not a multiple of 4 MiB", "Kconfig default area instead (16 MiB, named 'reserved')",
         "size: 12 MiB")
    find(errs, 32, "outside every memory bank")
    find(errs, 37, "both reusable and no-map")
    find(errs, 43, "0x32200000", "not aligned to 4 MiB")  # 0x32200000 % 0x400000 = 0x200000
    find(errs, 46, "unknown key 'reusabel'", "did you mean 'reusable'")
    find(errs, 52, "must not be zero")
    find(errs, 55, "'left' and 'right' are both in the bank at 0x30000000")
    find(errs, 58, "memory-region 'camera_pool' names no reserved-memory node")
    find(errs, 61, "unknown pixel format 'YUVY'", "did you mean")
    find(errs, 61, "'buffers' must be a whole number")
    # 28-bit mask: 0x10000000; 'left' ends at 0x34000000.
    find(errs, 70, "'left' ends at 0x34000000, beyond its 28-bit DMA mask (0x10000000)")
    # cma-areas 2 -> 6.1 has 1 + 2 = 3 slots; CMA nodes: linux,cma, left, right, nowhere, odd = 5.
    assert any("5 CMA areas but the kernel has 3 slots" in m for _, m in errs), errs
    # isp: 8 buffers of 1013 pages (1920*1080*2 = 4147200 B), each starting on a 256-page
    # boundary, so one per 1024 pages: a 16 MiB (4096-page) region holds 4; the 5th fails.
    # Span wanted: 7 * 1024 + 1013 = 8181 pages = 32724 KiB.
    find(errs, 27, "'right' (16 MiB) cannot hold", "buffer 5/8 failed", "32724 KiB with alignment")


def test_cli_reports_everything_and_exits_1() -> None:
    out = subprocess.run([sys.executable, "-m", "cma_tool", "validate", str(DATA / "every-error.yaml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ": error: " in ln]
    assert len(lines) == 14, out.stderr
    assert all(ln.startswith(str(DATA / "every-error.yaml") + ":") for ln in lines)


def test_cli_clean_board_exits_0() -> None:
    out = subprocess.run([sys.executable, "-m", "cma_tool", "validate", str(BOARDS / "aquila.yaml")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    # Sizing advice only: MFC's declared needs are 1 MiB of firmware in the 16 MiB left pool and a 4 MiB
    # context in the 16 MiB right pool, each under half; one 4 MiB unit would hold each.
    assert "0 error(s), 2 warning(s)" in out.stdout
    assert "'mfc_left' (16 MiB) is more than twice what its users need (1 MiB with alignment)" in out.stderr
    assert "'mfc_right' (16 MiB) is more than twice what its users need (4 MiB with alignment)" in out.stderr


def test_shipped_boards_are_clean() -> None:
    for name in ("aquila", "goni", "qemu-aquila"):
        board, sink = read_board(BOARDS / f"{name}.yaml")
        assert board is not None
        check_board(board, sink)
        assert not sink.items, [str(d) for d in sink.items]


def test_alignment_below_unit_is_only_a_warning(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "memory: [[0x40000000, 256M]]\nkernel: {profile: linux-6.1, max-order: 12}\n"
        "reserved-memory:\n  linux,cma:\n    compatible: shared-dma-pool\n    reusable: true\n"
        "    size: 16M\n    alignment: 4M\n    linux,cma-default: true\n")
    board, sink = read_board(tmp_path / "b.yaml")
    assert board is not None
    check_board(board, sink)
    assert not sink.errors
    (w,) = sink.warnings
    assert w.line == 8 and "alignment 4 MiB has no effect" in w.message and "8 MiB" in w.message


def test_crossing_a_bank_end(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "memory: [[0x30000000, 80M], [0x40000000, 384M]]\n"
        "reserved-memory:\n  region@34000000:\n    compatible: shared-dma-pool\n    reusable: true\n"
        "    reg: [0x34000000, 32M]\n")
    board, sink = read_board(tmp_path / "b.yaml")
    assert board is not None
    check_board(board, sink)
    (e,) = sink.errors
    # bank 0 ends at 0x30000000 + 80 MiB = 0x35000000; the region runs to 0x36000000.
    assert e.line == 6 and "crosses the end of the bank at 0x30000000 (ends 0x35000000)" in e.message
