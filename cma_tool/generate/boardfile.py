"""Board-file C for kernels without device tree: the 2011 series and Linux 3.5-5.9.

Two API generations (linux-cma.md §8):

- 2011 (the seed, PATCHv10 10/10): ``cma_reserve(start, size)`` in the
  machine's ``.reserve`` hook returns the reserved base (or an
  IS_ERR_VALUE); after slab is up, machine init calls ``cma_create()`` and
  ``set_dev_cma_area()`` for every device. There is no default area: a
  device without one gets normal pages, so every user is wired explicitly.
  Kconfig: ``select CMA`` for the machine.
- 3.5 to 5.9: ``dma_declare_contiguous(dev, size, base, limit)`` in
  ``.reserve``; Samsung's ``s5p_mfc_reserve_mem(rbase, rsize, lbase, lsize)``
  for MFC's two ports. The default area is *not* the board's business:
  arm_memblock_init() calls ``dma_contiguous_reserve(min(arm_dma_limit,
  arm_lowmem_limit))`` itself right after ``.reserve``, sized by ``cma=`` or
  CONFIG_CMA_SIZE_MBYTES (bootargs.py and kconfig.py say both). Calling it
  again from the board would reserve a second area.

The code is built as parts (:class:`BoardCode`) so that patches.py can
merge them into a real mach-<board>.c and :func:`board_file_c` can wrap them
into a whole translation unit that compiles on its own.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import assert_never

from cma_tool.board.types import Board, Device, Region
from cma_tool.errors import ConfigError
from cma_tool.generate.dts import error_at
from cma_tool.model.profiles import BoardFileApi, DeviceTreeReservation, KernelProfile
from cma_tool.plan import PlacedArea
from cma_tool.sizes import format_size

_IDENT = re.compile(r"[a-z][a-z0-9_]*")

#: S5PV210 platform devices as plat/devs.h names them.
_S5PV210_DEVICES = {
    "fimc0": "s5p_device_fimc0",
    "fimc1": "s5p_device_fimc1",
    "fimc2": "s5p_device_fimc2",
    "jpeg": "s5p_device_jpeg",
    "mfc": "s5p_device_mfc",
}
#: MFC's two AXI ports are separate struct devices in board-file kernels.
_MFC_PORTS = {"left": "s5p_device_mfc_l", "right": "s5p_device_mfc_r"}


@dataclass(frozen=True)
class BoardCode:
    """The pieces a board file needs, each already in kernel style."""

    api: str  # BoardFileApi's value: "2011" | "3.5"
    prefix: str  # "aquila": prefix of every symbol we add
    machine: str  # "AQUILA": the MACHINE_START id
    mach_dir: str  # "arch/arm/mach-s5pv210"
    includes: tuple[str, ...]  # "linux/cma.h", ...
    definitions: str  # file-scope code: variables, the reserve hook, the init helper
    reserve_hook: str  # name of the .reserve function
    init_call: str | None  # statement for the end of <board>_machine_init(), or None
    kconfig_select: tuple[str, ...] = ()  # symbols MACH_<BOARD> must select
    notes: tuple[str, ...] = field(default=())
    #: extern lines for the platform devices no header declares (a machine without plat/devs.h):
    #: for the stand-alone file only, the real board file defines them itself.
    declarations: str = ""

    @property
    def board_file(self) -> str:
        return f"{self.mach_dir}/mach-{self.prefix}.c"


#: mach-* folders of the 3.5-5.9 era by the SoC's compatible prefix; others: mach-<vendor part of the SoC>.
_MACH_DIRS = (("samsung,s5pv210", "s5pv210"), ("samsung,s5pc110", "s5pv210"), ("samsung,exynos", "exynos"),
              ("fsl,imx", "imx"), ("ti,omap", "omap2"), ("ti,am33", "omap2"), ("nvidia,tegra", "tegra"),
              ("st-ericsson,", "ux500"), ("marvell,kirkwood", "kirkwood"), ("marvell,dove", "dove"),
              ("arm,vexpress", "vexpress"), ("arm,versatile", "versatile"), ("arm,realview", "realview"),
              ("ste,", "ux500"), ("renesas,", "shmobile"), ("qcom,", "msm"), ("atmel,", "at91"))
#: SoCs whose board files reserve MFC's two ports with plat-samsung's s5p_mfc_reserve_mem().
_MFC_HELPER_DIRS = ("arch/arm/mach-s5pv210", "arch/arm/mach-exynos")


def _mach_dir(board: Board) -> str:
    """The board file's folder, from the SoC compatible (the board's last), for any ARM machine."""
    for compat in reversed(board.compatible):
        for prefix, folder in _MACH_DIRS:
            if compat.startswith(prefix):
                return f"arch/arm/mach-{folder}"
    if not board.compatible:
        raise ConfigError(f"board '{board.name}' has no compatible: its mach-* folder is unknown",
                          hint="add the board's and its SoC's compatible strings (the SoC last)")
    soc = board.compatible[-1].split(",", 1)[-1]
    stem = re.match(r"[a-z]+", soc)
    return f"arch/arm/mach-{stem.group(0) if stem else _ident(soc)}"


def _prefix(board: Board) -> str:
    prefix = board.name.lower().replace("-", "_")
    if not _IDENT.fullmatch(prefix):
        raise ConfigError(f"board name {board.name!r} cannot prefix C identifiers",
                          hint="name the board with lower-case letters, digits, '-' and '_'")
    return prefix


def _ident(text: str) -> str:
    out = re.sub(r"[^a-z0-9_]", "_", text.lower())
    return out if out and not out[0].isdigit() else "r_" + out


def _c_size(size: int) -> str:
    if size % (1 << 20) == 0:
        return f"({size >> 20} << 20)"
    if size % (1 << 10) == 0:
        return f"({size >> 10} << 10)"
    return f"{size:#x}"


def _placed_text(region: Region, placed: dict[str, PlacedArea]) -> str:
    area = placed.get(region.node)
    return f", planned at {area.base:#010x}" if area else ""


def _device_symbol(dev: Device, mach_dir: str) -> str:
    """The struct platform_device of a board device: plat/devs.h's on S5PV210, else ``<name>_device``."""
    if mach_dir == "arch/arm/mach-s5pv210":
        symbol = _S5PV210_DEVICES.get(dev.name)
        if symbol is None:
            raise ConfigError(
                f"device '{dev.name}' has no known S5PV210 platform device for board-file code",
                hint=f"board-file C knows {', '.join(sorted(_S5PV210_DEVICES))}; use a device-tree profile for others")
        return symbol
    return f"{_ident(dev.name)}_device"


def _port_symbol(dev: Device, index: int, mach_dir: str) -> str:
    """The struct device that takes a device's index-th region (MFC: one per port)."""
    if dev.name == "mfc" and len(dev.memory_region) == 2 and mach_dir in _MFC_HELPER_DIRS:
        names = dev.memory_region_names or ("left", "right")
        port = _MFC_PORTS.get(names[index])
        if port is None:
            raise ConfigError(f"device 'mfc': memory-region-names must be left/right, not {names[index]!r}",
                              hint="MFC v5's ports are called left and right")
        return port
    if index > 0:
        raise error_at(
            f"device '{dev.name}' takes {len(dev.memory_region)} CMA regions; a board file gives a device one "
            "area (dma_declare_contiguous, set_dev_cma_area)", dev.where,
            "give the device one region, or use a device-tree profile (memory-region with several entries)")
    return _device_symbol(dev, mach_dir)


def _plat(mach_dir: str, users: dict[str, list[str]]) -> tuple[list[str], str, list[str]]:
    """(headers that declare the devices, extern lines for the others, notes) for a machine."""
    if mach_dir in _MFC_HELPER_DIRS:
        return ["plat/devs.h"], "", []
    symbols = sorted({u[1:].removesuffix(".dev") for devs in users.values() for u in devs})
    externs = "".join(f"extern struct platform_device {s};\n" for s in symbols)
    notes = [f"{mach_dir} has no plat/devs.h: the code names each device's platform device <device>_device "
             f"({', '.join(symbols)}); rename them to the board file's own"] if symbols else []
    return [], externs, notes


def _users(board: Board, mach_dir: str) -> dict[str, list[str]]:
    """Region node -> the C expressions of the struct devices that take it."""
    users: dict[str, list[str]] = {r.node: [] for r in board.cma_regions}
    default = board.default_region
    for dev in board.devices:
        own = [board.region(label) for label in dev.memory_region] if dev.honours_memory_region else []
        own_cma = [(i, r) for i, r in enumerate(own) if r is not None and r.is_cma]
        if own_cma:
            for index, region in own_cma:
                users[region.node].append(f"&{_port_symbol(dev, index, mach_dir)}.dev")
        elif default is not None and (dev.captures or dev.buffers):
            users[default.node].append(f"&{_device_symbol(dev, mach_dir)}.dev")
    return users


def board_code(board: Board, profile: KernelProfile, areas: list[PlacedArea] | None = None) -> BoardCode:
    """The board-file parts for ``profile`` (cma-2011 or linux-3.5); ``areas`` only adds comments."""
    api = profile.facts.reservation
    if isinstance(api, DeviceTreeReservation):
        raise ConfigError(f"profile {profile.name} reads the device tree; board-file C is for cma-2011 and linux-3.5",
                          hint="generate kind 'dts' for this profile")
    mach_dir = _mach_dir(board)
    prefix = _prefix(board)
    placed = {a.name: a for a in areas or []}
    match api:
        case BoardFileApi.CMA_2011:
            return _code_2011(board, prefix, mach_dir, placed)
        case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
            return _code_35(board, profile, prefix, mach_dir, placed)
        case _ as unhandled:
            assert_never(unhandled)


def _code_2011(board: Board, prefix: str, mach_dir: str, placed: dict[str, PlacedArea]) -> BoardCode:
    users = _users(board, mach_dir)
    regions = board.cma_regions
    if not regions:
        raise ConfigError(f"board '{board.name}' declares no CMA region",
                          hint="add a reusable shared-dma-pool region under reserved-memory")
    # A table, not one variable per area: names of any length stay inside 80 columns.
    index = {r.node: f"{prefix.upper()}_CMA_{_ident(r.label or r.node).upper()}" for r in regions}
    table = f"{prefix}_cma_areas"
    kind = f"{prefix}_cma_area"
    defs = ["enum {", *(f"\t{index[r.node]}," for r in regions), "};", "",
            f"struct {kind} {{", "\tconst char *name;",
            "\tunsigned long start;\t/* 0: anywhere; once reserved: the base */", "\tunsigned long size;", "};", ""]
    defs.append(f"static struct {kind} {table}[] __initdata = {{")
    for r in regions:
        where = "fixed" if r.reg else "anywhere (memblock, top-down)"
        defs += _comment(f"{r.display}: {format_size(r.requested_size)}, {where}{_placed_text(r, placed)}", 1)
        start = f"{r.reg[0]:#x}" if r.reg else "0"
        defs.append(f"\t[{index[r.node]}] = {{ \"{_c_string(r.display)}\", {start}, {_c_size(r.requested_size)} }},")
    defs += ["};", ""]
    hook = f"{prefix}_reserve"
    defs += [
        f"static void __init {hook}(void)", "{", "\tunsigned int i;", "",
        f"\tfor (i = 0; i < ARRAY_SIZE({table}); i++) {{",
        f"\t\tstruct {kind} *area = &{table}[i];",
        "\t\tunsigned long ret = cma_reserve(area->start, area->size);", "",
        "\t\tif (IS_ERR_VALUE(ret)) {",
        f'\t\t\tpr_err("{prefix}: cannot reserve CMA area %s: %ld\\n",',
        "\t\t\t       area->name, (long)ret);",
        "\t\t\tarea->start = 0;",
        "\t\t} else {",
        "\t\t\tarea->start = ret;",
        "\t\t}", "\t}", "}", "",
        f"static struct cma * __init {prefix}_cma_create(unsigned int i)", "{",
        f"\tstruct {kind} *area = &{table}[i];", "\tstruct cma *cma;", "",
        "\tif (!area->start)", "\t\treturn NULL;",
        "\tcma = cma_create(area->start, area->size);",
        "\tif (IS_ERR_OR_NULL(cma)) {",
        f'\t\tpr_err("{prefix}: cannot create CMA context %s\\n", area->name);',
        "\t\treturn NULL;", "\t}", "\treturn cma;", "}", "",
    ]
    init = f"{prefix}_cma_init"
    defs += ["/* After slab is up: cma_create() allocates its context with kmalloc(). */",
             f"static void __init {init}(void)", "{", "\tstruct cma *cma;"]
    for r in regions:
        devs = users[r.node]
        defs += ["", f"\tcma = {prefix}_cma_create({index[r.node]});"]
        if not devs:
            defs.append(f"\t/* no device takes {_c_string(r.display)} */")
        elif len(devs) == 1:
            defs += ["\tif (cma)", f"\t\tset_dev_cma_area({devs[0]}, cma);"]
        else:
            defs += ["\tif (cma) {", *(f"\t\tset_dev_cma_area({d}, cma);" for d in devs), "\t}"]
    defs.append("}")
    headers, externs, notes = _plat(mach_dir, users)
    return BoardCode(
        api=BoardFileApi.CMA_2011.value, prefix=prefix, machine=prefix.upper(), mach_dir=mach_dir,
        includes=("linux/init.h", "linux/kernel.h", "linux/err.h", "linux/cma.h", "linux/dma-mapping.h",
                  "linux/platform_device.h", *headers),
        definitions="\n".join(defs) + "\n", reserve_hook=hook, init_call=f"{init}();", kconfig_select=("CMA",),
        notes=tuple(notes), declarations=externs,
    )


def _code_35(board: Board, profile: KernelProfile, prefix: str, mach_dir: str,
             placed: dict[str, PlacedArea]) -> BoardCode:
    users = _users(board, mach_dir)
    default = board.default_region
    hook = f"{prefix}_reserve"
    body = [f"static void __init {hook}(void)", "{"]
    headers, externs, notes = _plat(mach_dir, users)
    includes = ["linux/init.h", "linux/kernel.h", "linux/dma-contiguous.h", "linux/platform_device.h", *headers]
    done: set[str] = set()
    mfc = board.device("mfc")
    if (mfc is not None and mfc.honours_memory_region and len(mfc.memory_region) == 2
            and mach_dir in _MFC_HELPER_DIRS):
        by_port = {}
        for index, label in enumerate(mfc.memory_region):
            region = board.region(label)
            if region is not None and region.is_cma:
                by_port[_port_symbol(mfc, index, mach_dir)] = region
        if set(by_port) == set(_MFC_PORTS.values()):
            right, left = by_port["s5p_device_mfc_r"], by_port["s5p_device_mfc_l"]
            anywhere = " (base 0: anywhere)" if not (right.reg and left.reg) else ""
            body += _comment(f"MFC's ports: right {right.display}{_placed_text(right, placed)}, "
                             f"left {left.display}{_placed_text(left, placed)}{anywhere}", 1)
            body += [
                f"\ts5p_mfc_reserve_mem({_base(right)}, {_c_size(right.requested_size)},",
                f"\t\t\t    {_base(left)}, {_c_size(left.requested_size)});",
            ]
            includes.append("plat/mfc.h")
            done |= {right.node, left.node}
    for region in board.cma_regions:
        if region.node in done or region is default:
            continue
        devs = users[region.node]
        if not devs:
            # dma_declare_contiguous() reserves for a device; without one the pool cannot be said.
            raise error_at(
                f"CMA region {region.display}: no device takes it, and {profile.name}'s board-file API "
                "reserves a pool only for a device (dma_declare_contiguous)", region.where,
                "name it in a device's memory-region, make it the default area, or remove it")
        if len(devs) > 1:
            notes.append(f"{region.display}: dma_declare_contiguous() gives an area to one device; "
                         f"{len(devs) - 1} other user(s) fall back to the default area")
        limit = f"{_limit(region):#x}" if _limit(region) else "0"
        body += _comment(f"{region.display}{_placed_text(region, placed)}", 1)
        body += [
            f"\tif (dma_declare_contiguous({devs[0]}, {_c_size(region.requested_size)},",
            f"\t\t\t\t   {_base(region)}, {limit}))",
            f'\t\tpr_err("{prefix}: cannot reserve CMA area {region.display}\\n");',
        ]
    if default is not None and (default.reg or default.alloc_ranges):
        notes.append(f"linux-3.5 places the default area {default.display} top-down below the DMA/lowmem limit; "
                     "its reg/alloc-ranges cannot be said to dma_contiguous_reserve()")
    if default is not None:
        body += _comment(f"The default area ({default.display}, {format_size(default.requested_size)}"
                         f"{_placed_text(default, placed)}) is reserved by arm_memblock_init() right after "
                         "this hook, sized by cma= on the command line or CONFIG_CMA_SIZE_MBYTES.", 1)
    if len(body) == 2:
        body.append("\t/* nothing to reserve here: every user takes the default area */")
    body.append("}")
    return BoardCode(
        api=BoardFileApi.DMA_DECLARE_CONTIGUOUS.value, prefix=prefix, machine=prefix.upper(), mach_dir=mach_dir,
        includes=tuple(includes),
        definitions="\n".join(body) + "\n", reserve_hook=hook, init_call=None, notes=tuple(notes),
        declarations=externs,
    )


def _base(region: Region) -> str:
    return f"{region.reg[0]:#x}" if region.reg else "0"


def _limit(region: Region) -> int:
    """dma_declare_contiguous()'s limit: the end of the first alloc-range (it can say one upper bound)."""
    if region.reg or not region.alloc_ranges:
        return 0
    start, length = region.alloc_ranges[0]
    return start + length


def board_file_c(board: Board, profile: KernelProfile, code: BoardCode) -> str:
    """A whole translation unit: the parts plus a minimal machine that uses them.

    Meant to be read next to (and merged into) the real board file; ``--patch``
    does that merge. It compiles on its own so that the parts are checked.
    """
    match BoardFileApi(code.api):
        case BoardFileApi.CMA_2011:
            api = "2011 CMA series (cma_reserve/cma_create)"
        case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
            api = "Linux 3.5-5.9 (dma_declare_contiguous)"
        case _ as unhandled:
            assert_never(unhandled)
    lines = [
        "// SPDX-License-Identifier: GPL-2.0-only",
        "/*",
        f" * CMA reservations for {board.model}",
        f" * API: {api}",
        f" * Generated by cma-tool from {board.path.rsplit('/', 1)[-1]} (kernel profile {profile.name}).",
        " *",
        f" * Merge into {code.board_file}: the hook goes into",
        f" * MACHINE_START(.reserve){', the init call at the end of ' + code.prefix + '_machine_init()' if code.init_call else ''}.",
        " */",
        "",
    ]
    linux = [i for i in code.includes if i.startswith("linux/")]
    others = [i for i in code.includes if not i.startswith("linux/")]
    lines += [f"#include <{i}>" for i in linux]
    lines.append("")
    lines += [f"#include <{i}>" for i in ["asm/mach/arch.h", *others]]
    if code.declarations:
        lines += ["", "/* The board's platform devices (defined in its board file). */",
                  code.declarations.rstrip("\n")]
    lines += ["", code.definitions.rstrip("\n"), ""]
    lines += [f"static void __init {code.prefix}_machine_init(void)", "{"]
    lines.append(f"\t{code.init_call}" if code.init_call else "\t/* the board's devices are added here */")
    lines += ["}", "", f'MACHINE_START({code.machine}, "{_c_string(board.model)}")',
              f"\t.reserve\t= {code.reserve_hook},", f"\t.init_machine\t= {code.prefix}_machine_init,",
              "MACHINE_END", ""]
    return "\n".join(lines)


def _c_string(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "?" for ch in text)


def _comment(text: str, level: int) -> list[str]:
    """A C comment at ``level`` tabs, wrapped to 80 columns (tabs count 8), kernel style."""
    width = 80 - 8 * level - 3
    if len(text) <= width - 3:
        return ["\t" * level + f"/* {text} */"]
    body = textwrap.wrap(text, width=width, break_on_hyphens=False)
    return ["\t" * level + "/*", *("\t" * level + f" * {line}" for line in body), "\t" * level + " */"]
