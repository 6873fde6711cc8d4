"""Board-file C: compiled with the real ARM cross compiler against stub headers of each API
generation, then run on the host inside a harness that plays the kernel around
the machine record, so the calls themselves are checked against the board's numbers.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from cma_tool.board.load import read_board
from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.generate import generate_all
from cma_tool.generate.boardfile import board_code, board_file_c
from cma_tool.model.profiles import PROFILES

from .conftest import DATA, INCLUDE, arm_syntax_check, need, plan_for

MiB = 1 << 20


def write_c(board: Board, profile: str, tmp_path: Path) -> Path:
    plan = plan_for(board, profile)
    code = board_code(board, plan.profile, plan.areas)
    path = tmp_path / f"mach-{board.name}-cma.c"
    path.write_text(board_file_c(board, plan.profile, code))
    return path


def run_harness(source: Path, api: str, machine: str, tmp_path: Path, dynamic_base: int,
                devices: tuple[str, ...] = ()) -> list[str]:
    """Build the generated file into tests/generate/data/harness.c with the host gcc and run it.

    ``devices``: platform device names of a machine without plat/devs.h
    (the harness defines ``<name>_device`` for each).
    """
    gcc = need("gcc")
    exe = tmp_path / "harness"
    defines = [f"-DGENERATED=\"{source}\"", f"-DMACHINE={machine}", f"-DDYNAMIC_BASE={dynamic_base:#x}"]
    if devices:
        defines.append("-DEXTRA_DEVICES=" + " ".join(f'X({d}_device, "{d}")' for d in devices))
    if api == "2011":
        defines.append("-DAPI_2011")
    build = subprocess.run([gcc, "-std=gnu89", "-w", f"-I{DATA / ('api-' + api)}", f"-I{INCLUDE}", *defines,
                            "-o", str(exe), str(DATA / "harness.c")], capture_output=True, text=True, timeout=60)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=True)
    return run.stdout.splitlines()


@pytest.mark.parametrize(("profile", "api"), [("cma-2011", "2011"), ("linux-3.5", "3.5")])
def test_compiles_for_arm_with_its_api(aquila: Board, tmp_path: Path, profile: str, api: str) -> None:
    done = arm_syntax_check(write_c(aquila, profile, tmp_path), api)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("profile", "wrong_api"), [("cma-2011", "3.5"), ("linux-3.5", "2011")])
def test_each_generation_fails_against_the_other_api(aquila: Board, tmp_path: Path, profile: str,
                                                     wrong_api: str) -> None:
    """The stubs tell the generations apart, so the test above can fail."""
    done = arm_syntax_check(write_c(aquila, profile, tmp_path), wrong_api)
    assert done.returncode != 0


@pytest.mark.parametrize("profile", ["cma-2011", "linux-3.5"])
def test_kernel_coding_style(aquila: Board, tmp_path: Path, profile: str) -> None:
    lines = write_c(aquila, profile, tmp_path).read_text().splitlines()
    assert lines[0] == "// SPDX-License-Identifier: GPL-2.0-only"
    for n, line in enumerate(lines, 1):
        assert len(line.expandtabs(8)) <= 80, f"line {n} longer than 80 columns: {line!r}"
        assert line == line.rstrip(), f"line {n} has trailing white space"
        indent = line[: len(line) - len(line.lstrip())]
        # tabs indent; spaces only to align a comment's " *" or a continued argument list
        assert indent.strip("\t") in ("", " ") or line.lstrip().startswith(("*", "0x", "area->", "(")), \
            f"line {n} indented with spaces: {line!r}"


def test_2011_reserves_creates_and_assigns_like_the_seed(aquila: Board, tmp_path: Path) -> None:
    plan = plan_for(aquila, "cma-2011")
    dynamic = next(a for a in plan.areas if a.is_default)
    out = run_harness(write_c(aquila, "cma-2011", tmp_path), "2011", "AQUILA", tmp_path, dynamic.base)
    # .reserve: one cma_reserve per area; a dynamic one asks with start 0 (memblock chooses)
    assert [line for line in out if line.startswith("cma_reserve")] == [
        f"cma_reserve start=0 size={32 * MiB:#x}",
        f"cma_reserve start=0x33000000 size={16 * MiB:#x}",
        f"cma_reserve start=0x44000000 size={16 * MiB:#x}",
    ]
    # machine init: contexts on the reserved bases, given to FIMC (default) and MFC's ports
    assert sorted(line for line in out if line.startswith("device")) == sorted([
        f"device fimc0 area start={dynamic.base:#x} size={32 * MiB:#x}",
        f"device fimc1 area start={dynamic.base:#x} size={32 * MiB:#x}",
        f"device fimc2 area start={dynamic.base:#x} size={32 * MiB:#x}",
        f"device mfc_l area start=0x33000000 size={16 * MiB:#x}",
        f"device mfc_r area start=0x44000000 size={16 * MiB:#x}",
    ])
    assert not any(line.startswith("printk") for line in out)


def test_35_declares_mfc_ports_right_first(aquila: Board, tmp_path: Path) -> None:
    out = run_harness(write_c(aquila, "linux-3.5", tmp_path), "3.5", "AQUILA", tmp_path, 0)
    calls = [line for line in out if not line.startswith(("machine", "platform"))]
    # s5p_mfc_reserve_mem(rbase, rsize, lbase, lsize): right (bank 1) then left (bank 0);
    # the default area is the arch's dma_contiguous_reserve(), not the board's.
    assert calls == [f"s5p_mfc_reserve_mem rbase=0x44000000 rsize={16 * MiB:#x} "
                     f"lbase=0x33000000 lsize={16 * MiB:#x}"]


def test_35_other_device_regions_use_dma_declare_contiguous(aquila: Board, tmp_path: Path) -> None:
    from cma_tool.board.types import Region

    extra = Region(node="jpeg-pool", label="jpeg_pool", reusable=True, size=8 * MiB,
                   alloc_ranges=((0x40000000, 128 * MiB),))
    devices = tuple(dataclasses.replace(d, memory_region=("jpeg_pool",)) if d.name == "jpeg" else d
                    for d in aquila.devices)
    board = dataclasses.replace(aquila, regions=(*aquila.regions, extra), devices=devices)
    path = tmp_path / "jpeg.c"
    path.write_text(board_file_c(board, PROFILES["linux-3.5"], board_code(board, PROFILES["linux-3.5"])))
    assert arm_syntax_check(path, "3.5").returncode == 0
    out = run_harness(path, "3.5", "AQUILA", tmp_path, 0)
    assert f"dma_declare_contiguous dev=jpeg size={8 * MiB:#x} base=0 limit=0x48000000" in out


def test_dt_profiles_are_refused(aquila: Board) -> None:
    with pytest.raises(ConfigError, match="reads the device tree"):
        board_code(aquila, PROFILES["linux-6.1"])


IMX53 = DATA / "boards" / "mx53-loco.yaml"


@pytest.fixture(scope="module")
def imx53() -> Board:
    board, sink = read_board(IMX53)
    assert board is not None and not sink.errors, [str(d) for d in sink.items]
    return board


@pytest.mark.parametrize(("profile", "api"), [("cma-2011", "2011"), ("linux-3.5", "3.5")])
def test_non_s5pv210_machine_compiles_for_arm(imx53: Board, tmp_path: Path, profile: str, api: str) -> None:
    source = write_c(imx53, profile, tmp_path)
    text = source.read_text()
    assert "plat/devs.h" not in text and "s5p_" not in text  # no Samsung helper on an i.MX53
    done = arm_syntax_check(source, api)
    assert done.returncode == 0, done.stderr
    assert board_code(imx53, PROFILES[profile]).board_file == "arch/arm/mach-imx/mach-mx53_loco.c"


def test_non_s5pv210_35_declares_the_codec_pool_for_its_device(imx53: Board, tmp_path: Path) -> None:
    out = run_harness(write_c(imx53, "linux-3.5", tmp_path), "3.5", "MX53_LOCO", tmp_path, 0, ("vpu", "ipu"))
    calls = [line for line in out if not line.startswith(("machine", "platform"))]
    # imx53-qsb.yaml: vpu_pool 32 MiB anywhere below the end of bank 0 (0x70000000 + 512 MiB);
    # the default area is the arch's dma_contiguous_reserve(), not the hook's
    assert calls == [f"dma_declare_contiguous dev=vpu size={32 * MiB:#x} base=0 limit=0x90000000"]


def test_non_s5pv210_2011_reserves_and_assigns_every_pool(imx53: Board, tmp_path: Path) -> None:
    out = run_harness(write_c(imx53, "cma-2011", tmp_path), "2011", "MX53_LOCO", tmp_path, 0x8c000000,
                      ("vpu", "ipu"))
    assert [line for line in out if line.startswith("cma_reserve")] == [
        f"cma_reserve start=0 size={64 * MiB:#x}", f"cma_reserve start=0 size={32 * MiB:#x}"]
    assert sorted(line for line in out if line.startswith("device")) == [
        f"device ipu area start=0x8c000000 size={64 * MiB:#x}",
        f"device vpu area start=0x8c000000 size={32 * MiB:#x}",
    ]


@pytest.mark.parametrize("profile", ["cma-2011", "linux-3.5"])
def test_only_without_c_is_refused_where_a_pool_needs_it(imx53: Board, tmp_path: Path, profile: str) -> None:
    """With --only bootargs,kconfig the VPU's pool would be in no file: refused at its line."""
    with pytest.raises(ConfigError) as err:
        generate_all(plan_for(imx53, profile), tmp_path, only=["bootargs", "kconfig"])
    lines = IMX53.read_text().splitlines()
    where = {(d.line, d.message.split(" out:")[0].rsplit(" ", 1)[-1]) for d in err.value.diagnostics}
    expected = {(lines.index("  vpu-pool:") + 1, "vpu_pool")}
    if profile == "cma-2011":  # no default area in the 2011 series: that one is C too
        expected.add((lines.index("  linux,cma:") + 1, "cma_default"))
    assert where == expected
    assert not list(tmp_path.iterdir())


def test_35_pool_without_a_device_is_refused(imx53: Board) -> None:
    devices = tuple(dataclasses.replace(d, memory_region=()) if d.name == "vpu" else d for d in imx53.devices)
    with pytest.raises(ConfigError, match="no device takes it") as err:
        board_code(dataclasses.replace(imx53, devices=devices), PROFILES["linux-3.5"])
    assert err.value.diagnostics[0].line == IMX53.read_text().splitlines().index("  vpu-pool:") + 1


def test_2011_kconfig_select(aquila: Board) -> None:
    code = board_code(aquila, PROFILES["cma-2011"])
    assert code.kconfig_select == ("CMA",)
    assert code.board_file == "arch/arm/mach-s5pv210/mach-aquila.c"
