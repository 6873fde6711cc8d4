"""`cma-tool generate`: everything a kernel needs to reserve the planned CMA areas.

Kinds, and which kernels they apply to:

=========  ==================================================  =====================
kind       files                                               profiles
=========  ==================================================  =====================
bootargs   bootargs.txt                                        all
uboot      boot.cmd, boot.scr (mkimage), uboot-env.txt         boards booted by U-Boot
dts        <board>-cma.dtsi, <board>-cma-check.dts/.dtb        linux-6.1, linux-6.12
c          mach-<board>-cma.c (+ Kconfig.mach for 2011)        linux-3.5, cma-2011
kconfig    cma.config (for merge_config.sh)                    all
=========  ==================================================  =====================

With ``patch``, git format-patch files under ``patches/`` change the board's
real files in ``kernel_tree`` and are checked there with ``git apply --check``;
a dts patch in a kernel tree also with its Makefile and dt-validate (patches.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cma_tool.errors import ConfigError, Diagnostic, ExitCode
from cma_tool.generate import bootargs as gboot
from cma_tool.generate import dts as gdts
from cma_tool.generate.boardfile import BoardCode, board_code, board_file_c
from cma_tool.generate.kconfig import kconfig_fragment
from cma_tool.plan import Plan

if TYPE_CHECKING:
    from cma_tool.generate.kerneltree import TreeView

KINDS = ("bootargs", "uboot", "dts", "c", "kconfig")


@dataclass(frozen=True)
class Generated:
    files: list[Path]
    notes: list[str]


def applicable_kinds(plan: Plan) -> list[str]:
    """The kinds that make sense for this board and kernel profile, in KINDS order."""
    dt = gboot.dt_kernel(plan.profile)
    kinds = ["bootargs"]
    if plan.board.boot.bootloader == "u-boot":
        kinds.append("uboot")
    kinds.append("dts" if dt else "c")
    kinds.append("kconfig")
    return kinds


def _select(plan: Plan, only: Sequence[str]) -> list[str]:
    wanted = [k.strip() for k in only if k.strip()]
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown kind(s) for --only: {', '.join(unknown)}", hint=f"kinds: {', '.join(KINDS)}")
    possible = applicable_kinds(plan)
    if not wanted:
        return possible
    refused = [k for k in wanted if k not in possible]
    if refused:
        why = {
            "dts": f"{plan.profile.name} has no device-tree reserved-memory support (board-file kernel)",
            "c": f"{plan.profile.name} reads the device tree; board-file C is for linux-3.5 and cma-2011",
            "uboot": f"board '{plan.board.name}' is not booted by U-Boot (boot.bootloader: "
                     f"{plan.board.boot.bootloader})",
        }
        raise ConfigError("; ".join(why.get(k, k) for k in refused),
                          hint=f"for this board and profile: {', '.join(possible)} (or --kernel another profile)")
    return [k for k in KINDS if k in wanted]


def _check_expressed(plan: Plan, kinds: Sequence[str]) -> list[str]:
    """Refuse a selection that leaves a planned CMA pool out of every file it writes.

    On a board-file kernel a named pool exists only in the board-file C
    (kind ``c``); the 3.5-5.9 default area only as ``cma=`` or
    CONFIG_CMA_SIZE_MBYTES (kinds ``bootargs``, ``kconfig``); the 2011
    series has no default area, so every pool is C. A device-tree kernel's
    pools are in the dts, and its default area can also be ``cma=``.
    A 3.5-5.9 default area is reserved by the arch whatever is written, so
    leaving its size out is a note (the kernel's Kconfig size applies).
    """
    from cma_tool.model.profiles import BoardFileApi

    board, profile = plan.board, plan.profile
    if gboot.dt_kernel(profile):
        return []  # --only bootargs for a DT board is a choice: the dts can come from elsewhere
    c_only = profile.facts.reservation is BoardFileApi.CMA_2011
    lost = []
    notes = []
    for region in board.cma_regions:
        if region.cma_default and not c_only:
            if not {"bootargs", "kconfig"} & set(kinds):
                notes.append(f"the default area {region.display} ({region.requested_size >> 20} MiB) is in no file "
                             f"written here: {profile.name} sizes it by cma= or CONFIG_CMA_SIZE_MBYTES "
                             "(kinds bootargs, kconfig)")
        elif "c" not in kinds:
            lost.append((region, "c (the board file's .reserve hook)"))
    if lost:
        raise ConfigError(diagnostics=[
            Diagnostic(f"--only {','.join(kinds)} leaves CMA region {r.display} out: on {profile.name} only "
                       f"kind {how} reserves it", r.where.file, r.where.line, r.where.col, "error",
                       "add that kind to --only (or leave --only out)") for r, how in lost])
    return notes


def generate_all(plan: Plan, out: Path, *, only: Sequence[str] = (), patch: bool = False,
                 kernel_tree: Path | None = None, files: gboot.BootFiles | None = None,
                 prefer_cmdline: bool = False) -> Generated:
    """Write the selected kinds into ``out`` (created) and, with ``patch``, patches checked in ``kernel_tree``.

    ``prefer_cmdline`` makes a DT kernel's default area come from ``cma=``
    instead of the linux,cma-default node (which is then left out).
    """
    board, profile = plan.board, plan.profile
    kinds = _select(plan, only)
    expressed_notes = _check_expressed(plan, kinds)
    if patch and kernel_tree is None:
        raise ConfigError("--patch needs --kernel-tree PATH",
                          hint="the patch is made against the board's files in your kernel tree and checked there")
    tree = None
    if kernel_tree is not None:
        from cma_tool.generate.patches import check_kernel_tree

        tree = check_kernel_tree(kernel_tree)
    # Every text first: a value that cannot be written is a ConfigError before any file exists.
    texts: list[tuple[str, str]] = []
    notes: list[str] = list(expressed_notes)
    dt = gboot.dt_kernel(profile)
    omit_default = dt and gboot.cma_on_cmdline(board, profile, prefer_cmdline=prefer_cmdline)
    cmdline = gboot.kernel_cmdline(board, profile, prefer_cmdline=prefer_cmdline)
    notes += cmdline.notes
    if "bootargs" in kinds:
        texts.append(("bootargs.txt", cmdline.text + "\n"))
    if "uboot" in kinds:
        boot_files = files or gboot.BootFiles(dtb=f"{board.name}.dtb" if dt else None)
        texts.append(("boot.cmd", gboot.boot_script(board, profile, cmdline.text, boot_files)))
        texts.append(("uboot-env.txt", gboot.uboot_env(board, cmdline.text, boot_files)))
    # The board's .dts in the kernel tree, compiled with the tree's own cpp and dtc: once, for the
    # fragment's device references and the dts patch alike.
    view = None
    if tree is not None and ("dts" in kinds or (patch and dt)):
        from cma_tool.generate import patches as gp

        view = gp.board_view(tree, board)
    if "dts" in kinds:
        refs = None
        if view is not None:
            refs = gp.device_refs(board, view[1])
        elif any(d.memory_region for d in board.devices):
            notes.append("the .dtsi fragment names each device by its board key as a DT label "
                         f"({', '.join('&' + d.name for d in board.devices if d.memory_region)}); "
                         "--kernel-tree maps them to the tree's own labels")
        texts.append((f"{board.name}-cma.dtsi",
                      gdts.board_fragment(board, profile, omit_default=omit_default, refs=refs)))
        texts.append((f"{board.name}-cma-check.dts",
                      gdts.standalone_dts(board, profile, omit_default=omit_default)))
    code = None
    if "c" in kinds or (patch and not dt):
        code = board_code(board, profile, plan.areas)
        notes += code.notes
    if "c" in kinds and code is not None:
        texts.append((f"mach-{code.prefix}-cma.c", board_file_c(board, profile, code)))
        if code.kconfig_select:
            texts.append(("Kconfig.mach", f"config MACH_{code.machine}\n"
                          + "".join(f"\tselect {s}\n" for s in code.kconfig_select)))
    if "kconfig" in kinds:
        texts.append(("cma.config", kconfig_fragment(board, profile)))

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in texts:
        path = out / name
        path.write_text(text)
        written.append(path)
        if name == "boot.cmd":
            gboot.make_boot_scr(path, out / "boot.scr")
            written.append(out / "boot.scr")
        elif name.endswith("-cma-check.dts"):
            gdts.compile_dts(path, path.with_suffix(".dtb"))
            written.append(path.with_suffix(".dtb"))
    if patch and tree is not None:
        patches, checked = _write_patches(plan, out, tree, code, view)
        written += patches
        notes += checked
    return Generated(written, notes)


def _write_patches(plan: Plan, out: Path, tree: Path, code: BoardCode | None,
                   view: tuple[str, TreeView] | None) -> tuple[list[Path], list[str]]:
    """The board-file patch when there is board-file code, else the dts patch; checked in ``tree``.

    Returns the files and what was checked: a dts patch in a kernel tree is
    built with the tree's Makefile and validated with its bindings; anything
    else is only known to apply.
    """
    from cma_tool.generate import kerneltree as kt
    from cma_tool.generate import patches as gp

    board, profile = plan.board, plan.profile
    checked: list[str] = []
    if code is not None:
        meta, changes = gp.board_file_patch(tree, board, profile, code, plan.areas)
    else:
        meta, change = gp.dts_patch(tree, board, profile, plan.areas, view=view)
        changes = [change]
    mail = gp.format_patch(changes, meta.subject, meta.text, tree=tree)
    slug = "".join(c if c.isalnum() else "-" for c in meta.subject).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    path = out / "patches" / f"0001-{slug[:52].rstrip('-')}.patch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mail)
    # A dts patch is built and validated only inside a whole kernel tree (its Makefile and scripts/dtc).
    buildable = code is None and kt.tree_top(tree / changes[0].path) == tree
    try:
        gp.check_applies(tree, path)
        checked.append(f"checked: {path.name} applies to {tree} (git apply --check)")
        if buildable:
            checked += gp.check_dts_patch(tree, changes[0], board, plan.areas)
    except BaseException:
        path.unlink()  # a patch that failed its check is not left where a checked one would be
        raise
    if code is not None:
        checked.append("NOT checked: board-file C is not compiled against this tree (only that it applies)")
    elif not buildable:
        checked.append(f"NOT checked: {tree} has no kernel Makefile and scripts/dtc, so the DTB was not built "
                       "and dt-validate did not run")
    return [path], checked


def generate_cli(board_path: Path, out: Path, *, kernel: str | None, only: list[str], patch: bool,
                 kernel_tree: Path | None) -> int:
    """`cma-tool generate`: plan the board (every problem reported at once), then write the files."""
    from cma_tool.plan import make_plan

    plan = make_plan(board_path, kernel=kernel)
    for d in plan.diagnostics:
        print(str(d), file=sys.stderr)
    result = generate_all(plan, out, only=only, patch=patch, kernel_tree=kernel_tree)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for path in result.files:
        print(path)
    return ExitCode.OK
