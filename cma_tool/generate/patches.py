"""Patches against a kernel tree: the dts fragment or the board-file code, at their real paths.

The patch is made by git itself: the files we change are copied from the
user's tree into a throw-away repository, committed, edited, committed
again, and ``git format-patch`` writes the mail. So the blob ids in the
``index`` lines are those of the user's files (``git am -3`` works) and the
format is git's, not an imitation. ``git apply --check`` in the user's tree
then proves the patch applies, and a dts patch is built and validated with
the tree's own Makefile and bindings (:func:`check_dts_patch`).

What the tree already has is read from the tree itself, compiled with its
cpp and dtc (kerneltree.py): labels, phandles, the .dtsi's reserved-memory
nodes, so a patch adds to them and never replaces them (:func:`merge_dts_text`).
The edits themselves are small text insertions into the board's .dts, placed
with a brace-level scan that skips comments and strings (no DTS or C parser
in Python reads a .dts with cpp includes and writes it back unchanged).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from cma_tool.binfmt import fdt
from cma_tool.board.types import Board, Device, Region
from cma_tool.errors import ConfigError, InfraError
from cma_tool.generate import dts as gdts
from cma_tool.generate import kerneltree as kt
from cma_tool.generate.boardfile import BoardCode
from cma_tool.generate.kerneltree import TreeView
from cma_tool.model.profiles import KernelProfile
from cma_tool.plan import PlacedArea
from cma_tool.sizes import format_size


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to the tree's top
    old: str
    new: str


@dataclass(frozen=True)
class Patch:
    name: str  # "0001-ARM-dts-...patch"
    subject: str
    text: str


# ------------------------------------------------------------------ the tree

def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None:
        raise InfraError("git is not installed", hint="apt-get install git")
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def check_kernel_tree(tree: Path) -> Path:
    """The tree's top directory; ConfigError unless ``tree`` is a git work tree."""
    if not tree.is_dir():
        raise ConfigError(f"kernel tree {tree} does not exist or is not a directory",
                          hint="pass --kernel-tree the top of a Linux git checkout")
    top = _git(["rev-parse", "--show-toplevel"], tree)
    if top.returncode != 0:
        raise ConfigError(f"kernel tree {tree} is not a git work tree",
                          hint="patches are checked with git apply --check; clone or git init the tree")
    return Path(top.stdout.strip())


def find_board_dts(tree: Path, board: Board) -> str:
    """The board's .dts in the tree (relative path), found by its most specific compatible."""
    if not board.compatible:
        raise ConfigError(f"board '{board.name}' has no compatible: cannot find its .dts",
                          hint="add the compatible strings of the board's root node")
    wanted = f'"{board.compatible[0]}"'
    root = tree / "arch/arm/boot/dts"
    hits = sorted(p for p in root.rglob("*.dts") if wanted in p.read_text(errors="replace")) if root.is_dir() else []
    if not hits:
        raise ConfigError(f"no .dts under {root} has compatible {wanted} (board '{board.name}')",
                          hint="this board has no device-tree source in that tree (QEMU boards have none)")
    named = [p for p in hits if board.name in p.stem]
    return str((named or hits)[0].relative_to(tree))


# ------------------------------------------------------------------ scanning

@dataclass(frozen=True)
class _Block:
    header: str  # text before the brace, stripped: "mfc_left: region@33000000", "&mfc"
    start: int  # where the statement begins (start of its line)
    body: int  # index just after "{"
    close: int  # index of the matching "}"
    end: int  # just after "};" and the newline


def _blocks(text: str, lo: int, hi: int) -> list[_Block]:
    """The ``{ ... };`` statements directly inside text[lo:hi], skipping comments and strings."""
    out: list[_Block] = []
    depth = 0
    stmt = lo
    opened = -1
    i = lo
    while i < hi:
        c = text[i]
        if text.startswith("//", i) or (c == "#" and depth == 0 and (i == 0 or text[i - 1] == "\n")):
            nl = text.find("\n", i)
            i = hi if nl < 0 else nl + 1
            if depth == 0:
                stmt = i
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = hi if j < 0 else j + 2
            continue
        if c == '"':
            j = i + 1
            while j < hi and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "{":
            if depth == 0:
                opened = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                end = text.find(";", i)
                end = hi if end < 0 else end + 1
                if end < len(text) and text[end] == "\n":
                    end += 1
                head_start = text.rfind("\n", 0, _skip_space(text, stmt, opened)) + 1
                header = _strip_comments(text[stmt:opened]).strip()
                out.append(_Block(header, head_start, opened + 1, i, end))
                stmt = end
                i = end
                continue
        elif c == ";" and depth == 0:
            stmt = i + 1
        i += 1
    return out


def _skip_space(text: str, i: int, hi: int) -> int:
    while i < hi and text[i].isspace():
        i += 1
    return i


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def _node_name(header: str) -> str:
    return header.rsplit(":", 1)[-1].strip() if not header.startswith("&") else header


def _label_of(header: str) -> str | None:
    if ":" in header and not header.startswith("&"):
        return header.split(":", 1)[0].strip()
    return None


# ------------------------------------------------------------------ the dts edit

#: The properties of a reserved-memory node that the plan decides; any other stays as the tree has it.
_OWNED = ("compatible", "reg", "size", "alignment", "alloc-ranges", "reusable", "no-map", "linux,cma-default")


def _region_props(region: Region, acells: int, scells: int) -> dict[str, bytes]:
    """The owned properties of ``region`` as dtc would encode them."""
    props = {"compatible": fdt.encode_string(region.compatible)}
    if region.reg is not None:
        props["reg"] = fdt.encode_ranges([region.reg], acells, scells)
    elif region.size is not None:
        props["size"] = fdt.encode_number(region.size, scells)
    if region.alignment is not None:
        props["alignment"] = fdt.encode_number(region.alignment, scells)
    if region.alloc_ranges and region.reg is None:
        props["alloc-ranges"] = fdt.encode_ranges(region.alloc_ranges, acells, scells)
    for flag, on in (("reusable", region.reusable), ("no-map", region.no_map),
                     ("linux,cma-default", region.cma_default)):
        if on:
            props[flag] = b""
    return props


def _reference(view: TreeView, path: str) -> str:
    """How the board's .dts names a node of the tree: its first label, else its path."""
    labels = view.labels_of(path)
    return f"&{labels[0]}" if labels else f"&{{{path}}}"


def device_node(dev: Device, view: TreeView) -> str:
    """The tree's node for a board device: by label, else by compatible (and reg); ConfigError if none."""
    if dev.name in view.labels:
        return view.labels[dev.name]
    found: set[str] = set()
    for compatible in dev.compatible:
        found |= set(view.with_compatible(compatible))
    if len(found) > 1 and dev.reg is not None:
        found = {p for p in found if p.rsplit("@", 1)[-1] == f"{dev.reg[0]:x}"}
    if len(found) == 1:
        return found.pop()
    close = difflib.get_close_matches(dev.name, sorted(view.labels), n=3, cutoff=0.5)
    if found:
        hint = (f"compatible {', '.join(dev.compatible)} matches {len(found)} nodes ({', '.join(sorted(found))}): "
                "name the device by the label of one of them")
    else:
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}? (labels of the tree)" if close
                else "name the device by its label in the tree, or give it the compatible of its node")
    raise gdts.error_at(
        f"device '{dev.name}' matches no node of the kernel tree (no label '{dev.name}'"
        + (f", no single node with compatible {', '.join(dev.compatible)}" if dev.compatible else "") + ")",
        dev.where, hint)


@dataclass(frozen=True)
class _Edits:
    """Text edits on the board .dts: (start, end, replacement), applied from the back, then blocks appended."""

    replace: list[tuple[int, int, str]]
    append: list[str]

    def apply(self, text: str) -> str:
        out = text
        for start, end, repl in sorted(self.replace, key=lambda e: (e[0], e[1]), reverse=True):
            out = out[:start] + repl + out[end:]
        if self.append:
            out = out.rstrip("\n") + "\n\n" + "\n".join(self.append)
        return out


def _override(ref: str, lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in [f"{ref} {{", *("\t" + line for line in lines), "};"])


def merge_dts_text(text: str, board: Board, view: TreeView, *, where: str) -> str:
    """``text`` (the board's .dts) with the plan added to what its tree already has; nothing removed.

    ``view`` is the board's whole tree as compiled from ``text`` and its
    includes. New reserved-memory nodes go into the board's own
    ``reserved-memory`` block, or into a new one in its root that dtc
    merges with the .dtsi's node at the same path; a node the tree already
    has is overridden by its label (or path) only where the plan differs;
    consumers get ``memory-region`` by the tree's label for them. Memory
    banks are rewritten only if they differ from the tree's.
    """
    top = _blocks(text, 0, len(text))
    roots = [b for b in top if b.header == "/"]
    if not roots:
        raise ConfigError(f"{where} has no root node '/ {{ ... }};'", hint="is this the board's .dts?")
    root = roots[0]
    children = _blocks(text, root.body, root.close)
    acells, scells = view.cells("/")
    edits = _Edits([], [])
    at_root = children[0].start if children else root.close  # where new root children go
    root_inserts: list[str] = []

    # /memory: only when the banks differ from the tree's.
    banks = sorted((b.base, b.size) for b in board.banks)
    if banks and view.memory_banks() != banks:
        value = gdts._pairs(banks, acells, scells, "memory bank", board.banks[0].where)
        mem_paths = [f"/{c.name}" for c in view.tree.root.children
                     if c.properties.get("device_type") == b"memory\0"]
        if mem_paths:
            edits.append.append(_override(_reference(view, mem_paths[0]), [f"reg = {value};"]))
        else:
            root_inserts.append(gdts.memory_dts(board.banks, address_cells=acells, size_cells=scells))
    mem_block = next((b for b in children if _node_name(b.header).split("@")[0] == "memory"), None)
    if mem_block is not None:
        at_root = mem_block.end

    # /reserved-memory: new nodes added, changed ones overridden, the rest left as it is.
    rsv_path = "/reserved-memory"
    rsv_cells = view.cells(rsv_path) if view.node(rsv_path) is not None else (acells, scells)
    new_nodes: list[str] = []
    paths: dict[str, str] = {}  # board region label/node -> its path in the patched tree
    for region in board.regions:
        w = region.where
        path = view.labels.get(region.label) if region.label else None
        if path is not None and path.rsplit("/", 1)[0] != rsv_path:
            raise gdts.error_at(
                f"region label '{region.label}' is the tree's label of {path}, not of a reserved-memory node",
                w, "give the region a label the tree does not use elsewhere")
        if path is None and view.node(f"{rsv_path}/{region.node}") is not None:
            path = f"{rsv_path}/{region.node}"
        wanted = _region_props(region, *rsv_cells)
        if path is None:
            new_nodes.append(_indent_lines(gdts._region_lines(region, *rsv_cells), 1))
            paths[region.label or region.node] = f"{rsv_path}/{region.node}"
            continue
        paths[region.label or region.node] = path
        node = view.node(path)
        assert node is not None
        lines = []
        for prop in _OWNED:
            if prop in wanted and node.properties.get(prop) != wanted[prop]:
                lines.append(_prop_line(prop, region, rsv_cells))
            elif prop not in wanted and prop in node.properties:
                lines.append(f"/delete-property/ {prop};")
        if lines:
            edits.append.append(_override(_reference(view, path), lines))
    if new_nodes:
        body = "\n\n".join(new_nodes)
        own = next((b for b in children if _node_name(b.header) == "reserved-memory"), None)
        if own is not None:
            line_start = text.rfind("\n", 0, own.close) + 1
            edits.replace.append((line_start, line_start, "\n" + _indent_lines(body.splitlines(), 1) + "\n"))
        elif view.node(rsv_path) is not None:
            # The .dtsi has the node: a block at the same path merges with it, its cells stay the .dtsi's.
            root_inserts.append(_indent_lines(["reserved-memory {", *body.splitlines(), "};"], 1) + "\n")
        else:
            root_inserts.append(_indent_lines(["reserved-memory {", f"\t#address-cells = <{acells}>;",
                                               f"\t#size-cells = <{scells}>;", "\tranges;", "",
                                               *body.splitlines(), "};"], 1) + "\n")
    if root_inserts:
        # After the memory node (a blank line first), else before the root's first child (one after).
        joined = "\n".join(root_inserts)
        edits.replace.append((at_root, at_root, "\n" + joined if mem_block is not None else joined + "\n"))

    # Consumers: memory-region on the tree's node for each device, unless it already says exactly that.
    overrides = {b.header[1:].strip(): b for b in top if b.header.startswith("&")}
    for dev in board.devices:
        if not dev.memory_region:
            continue
        path = device_node(dev, view)
        refs, targets = [], []
        for label in dev.memory_region:
            used = board.region(label)
            if used is None:
                raise gdts.error_at(f"device '{dev.name}': memory-region '{label}' is not a region of the board",
                                    dev.where, "refer to a reserved-memory node by its label")
            target = paths[used.label or used.node]
            targets.append(target)
            if view.node(target) is not None:
                refs.append(f"<{_reference(view, target)}>")
            elif used.label:
                refs.append(f"<&{gdts.check_label(used.label, used.where)}>")
            else:
                refs.append(f"<&{{{target}}}>")
        node = view.node(path)
        assert node is not None
        have = fdt.decode_cells(node.properties.get("memory-region", b""), what="memory-region")
        names = fdt.encode_strings(dev.memory_region_names) if dev.memory_region_names else None
        same_names = names is None or node.properties.get("memory-region-names") == names
        if [view.phandles.get(h) for h in have] == targets and same_names:
            continue
        props = [f"memory-region = {', '.join(refs)};"]
        if dev.memory_region_names:
            props.append("memory-region-names = "
                         f"{', '.join(gdts.dt_string(n, dev.where) for n in dev.memory_region_names)};")
        ref = _reference(view, path)
        existing = overrides.get(ref[1:])
        if existing is None:
            edits.append.append(_override(ref, props))
            continue
        body = text[existing.body:existing.close]
        kept = [line for line in body.split("\n") if not re.match(r"\s*memory-region(-names)?\s*=", line)]
        new_body = "\n" + "".join(f"\t{p}\n" for p in props) + "\n".join(kept).lstrip("\n")
        edits.replace.append((existing.body, existing.close, new_body if new_body.endswith("\n") else new_body + "\n"))
    return edits.apply(text)


def _indent_lines(lines: list[str], level: int) -> str:
    return "".join(("\t" * level + line if line else "") + "\n" for line in lines).rstrip("\n")


def _prop_line(prop: str, region: Region, cells: tuple[int, int]) -> str:
    """One owned property of ``region`` in DTS, as generate/dts.py writes it in a whole node."""
    line = next(line.strip() for line in gdts._region_lines(region, *cells)
                if re.match(rf"\s*{re.escape(prop)}\s*[=;]", line))
    return line


# ------------------------------------------------------------------ the board-file edit

def _insert_after_last(lines: list[str], pattern: str, new: list[str]) -> bool:
    idx = [i for i, line in enumerate(lines) if re.match(pattern, line)]
    if not idx:
        return False
    lines[idx[-1] + 1:idx[-1] + 1] = new
    return True


def _function_span(text: str, name: str) -> tuple[int, int, int] | None:
    """(start of the definition line, index after '{', index of the closing '}') of a C function."""
    m = re.search(rf"^[^\n;]*\b{re.escape(name)}\s*\(void\)\s*\n?\{{", text, re.M)
    if m is None:
        return None
    depth = 0
    for i in range(m.end() - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return m.start(), m.end(), i
    return None


def patch_board_file_text(text: str, code: BoardCode, *, where: str) -> str:
    """``text`` (mach-<board>.c) with the includes, the reserve hook, the init call and ``.reserve``."""
    machine = re.search(rf"^MACHINE_START\(\s*{re.escape(code.machine)}\s*,.*?^MACHINE_END", text, re.M | re.S)
    if machine is None:
        raise ConfigError(f"{where} has no MACHINE_START({code.machine}, ...) ... MACHINE_END",
                          hint="is this the board file of this board?")
    existing_hook = re.search(r"^\s*\.reserve\s*=\s*&?\s*(\w+)\s*,", machine.group(0), re.M)
    definitions = code.definitions
    hook_call = None
    if existing_hook is not None:
        theirs = existing_hook.group(1)
        # Keep their hook; ours becomes <prefix>_cma_reserve, called first from theirs.
        ours = f"{code.prefix}_cma_reserve"
        definitions = definitions.replace(f" {code.reserve_hook}(void)", f" {ours}(void)")
        hook_call = (theirs, f"{ours}();")
    out = text
    # 1. The init call at the end of <prefix>_machine_init().
    if code.init_call:
        span = _function_span(out, f"{code.prefix}_machine_init")
        if span is None:
            raise ConfigError(f"{where} has no {code.prefix}_machine_init(void)",
                              hint="the 2011 API creates its areas from machine init")
        close = span[2]
        out = out[:close] + f"\n\t{code.init_call}\n" + out[close:]
    # 2. Their reserve hook calls ours (and loses the reservations ours now makes).
    anchor = f"{code.prefix}_machine_init"
    if hook_call is not None:
        theirs, call = hook_call
        span = _function_span(out, theirs)
        if span is None:
            raise ConfigError(f"{where}: .reserve = {theirs}, but {theirs}(void) is not defined in this file",
                              hint="add the reservation calls by hand")
        body = out[span[1]:span[2]]
        if "s5p_mfc_reserve_mem" in definitions:
            body = re.sub(r"\n[ \t]*s5p_mfc_reserve_mem\([^;]*\);", "", body)
        out = out[:span[1]] + f"\n\t{call}" + body + out[span[2]:]
        anchor = theirs
    # 3. The definitions, before the function that uses them first.
    span = _function_span(out, anchor)
    at = span[0] if span is not None else out.find("MACHINE_START(")
    out = out[:at] + definitions + "\n" + out[at:]
    # 4. .reserve in the machine description.
    if hook_call is None:
        m = re.search(rf"^MACHINE_START\(\s*{re.escape(code.machine)}\s*,.*?^(MACHINE_END)", out, re.M | re.S)
        assert m is not None
        out = out[:m.start(1)] + f"\t.reserve\t= {code.reserve_hook},\n" + out[m.start(1):]
    # 5. Includes, next to their kin.
    lines = out.split("\n")
    for inc in code.includes:
        if re.search(rf"^#include\s*<{re.escape(inc)}>", out, re.M):
            continue
        kin = inc.split("/", 1)[0]
        line = f"#include <{inc}>"
        if not (_insert_after_last(lines, rf"#include\s*<{kin}/", [line])
                or _insert_after_last(lines, r"#include\s*<", [line])):
            lines.insert(0, line)
        out = "\n".join(lines)
    return out


def patch_kconfig_text(text: str, code: BoardCode, *, where: str) -> str:
    """``select`` lines for MACH_<BOARD> (2011: ``select CMA``), kept in the block's select list."""
    m = re.search(rf"^config MACH_{re.escape(code.machine)}\n((?:[ \t]+.*\n|\n(?=[ \t]))*)", text, re.M)
    if m is None:
        raise ConfigError(f"{where} has no 'config MACH_{code.machine}'", hint="is this the machine's Kconfig?")
    block = m.group(1).split("\n")
    for sym in code.kconfig_select:
        if any(line.strip() == f"select {sym}" for line in block):
            continue
        selects = [i for i, line in enumerate(block) if line.strip().startswith("select ")]
        after = [i for i in selects if block[i].strip() > f"select {sym}"]
        pos = after[0] if after else (selects[-1] + 1 if selects else 1)
        block.insert(pos, f"\tselect {sym}")
    return text[:m.start(1)] + "\n".join(block) + text[m.end(1):]


# ------------------------------------------------------------------ mail

def _identity(tree: Path) -> tuple[str, str]:
    name = _git(["config", "user.name"], tree).stdout.strip() or "cma-tool"
    email = _git(["config", "user.email"], tree).stdout.strip() or "cma-tool@localhost"
    return name, email


def format_patch(changes: list[FileChange], subject: str, body: str, *, tree: Path) -> str:
    """One ``git format-patch`` mail for ``changes``, made by git in a scratch repository."""
    name, email = _identity(tree)
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    with tempfile.TemporaryDirectory(prefix="cma-tool-patch-") as scratch:
        work = Path(scratch)
        steps: list[list[str]] = [["init", "-q"], ["config", "core.autocrlf", "false"]]
        for args in steps:
            _checked(_git(args, work, env), "git " + " ".join(args))
        for change in changes:
            dest = work / change.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(change.old)
        _checked(_git(["add", "-A"], work, env), "git add")
        _checked(_git(["commit", "-q", "--allow-empty", "-m", "base"], work, env), "git commit")
        for change in changes:
            (work / change.path).write_text(change.new)
        _checked(_git(["add", "-A"], work, env), "git add")
        _checked(_git(["commit", "-q", "-s", "-m", f"{subject}\n\n{body}"], work, env), "git commit")
        mail = _checked(_git(["format-patch", "-1", "--stdout", "--no-signature", "HEAD"], work, env),
                        "git format-patch")
    return mail


def _checked(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise InfraError(f"{what} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def check_applies(tree: Path, patch_file: Path) -> None:
    """``git apply --check`` in the user's tree; ConfigError with git's words if it does not apply."""
    result = _git(["apply", "--check", str(patch_file.resolve())], tree)
    if result.returncode != 0:
        raise ConfigError(f"{patch_file.name} does not apply to {tree}:\n{result.stderr.strip()}",
                          hint="the tree changed under the patch; regenerate it against this tree")


# ------------------------------------------------------------------ messages

def _area_lines(board: Board, areas: list[PlacedArea]) -> list[str]:
    lines = []
    for a in areas:
        users = ", ".join(a.users) or "no user yet"
        lines.append(f"  {a.label or a.name}: {format_size(a.size)} at {a.base:#010x}"
                     f"{' (default area)' if a.is_default else ''}, used by {users}")
    return lines


def _para(text: str) -> str:
    return textwrap.fill(text, width=72, break_on_hyphens=False)


def dts_patch(tree: Path, board: Board, profile: KernelProfile, areas: list[PlacedArea], *,
              view: tuple[str, TreeView] | None = None) -> tuple[Patch, FileChange]:
    """The patch adding the planned regions to the board's .dts in ``tree`` (``view``: its :func:`board_view`)."""
    path, tree_view = view or board_view(tree, board)
    old = (tree / path).read_text()
    new = merge_dts_text(old, board, tree_view, where=path)
    if new == old:
        raise ConfigError(f"{path} already holds exactly these reservations", hint="nothing to patch")
    soc = Path(path).stem.split("-", 1)[0]
    subject = f"ARM: dts: {soc}: {board.name}: reserve CMA areas for the multimedia devices"
    body = "\n".join([
        _para(f"Reserve the contiguous memory the camera and codec drivers of the {board.model} "
              "allocate with dma_alloc_coherent() as shared-dma-pool nodes beside the "
              "reserved-memory nodes the board already has, which stay as they are; "
              "reusable nodes serve movable allocations while no device holds them."),
        "",
        f"Planned with kernel profile {profile.name} (the CMA unit is",
        f"{profile.cma_unit_text}):",
        *_area_lines(board, areas),
        "",
        "Devices that call of_reserved_mem_device_init() take their own regions",
        "through memory-region; the others use the linux,cma-default area.",
    ])
    return Patch("", subject, body), FileChange(path, old, new)


def board_view(tree: Path, board: Board) -> tuple[str, TreeView]:
    """The board's .dts in ``tree`` and its whole compiled tree (the tree's own cpp and dtc)."""
    path = find_board_dts(tree, board)
    return path, TreeView.of(kt.compile_source(tree / path, kt.tree_top(tree / path)), source=path)


def device_refs(board: Board, view: TreeView) -> dict[str, str]:
    """How the tree names each device that takes regions: ``&label`` or ``&{/path}``."""
    return {dev.name: _reference(view, device_node(dev, view)) for dev in board.devices if dev.memory_region}


def _children(view: TreeView, path: str) -> dict[str, dict[str, bytes]]:
    node = view.node(path)
    return {c.name: dict(c.properties) for c in (node.children if node else [])}


def check_dts_patch(tree: Path, change: FileChange, board: Board, areas: list[PlacedArea]) -> list[str]:
    """Build the board's DTB with and without the change using the tree's Makefile, and judge the pair.

    Refused (ConfigError) when the patched tree does not build, when a
    reserved-memory node of the tree is gone or a node the plan does not
    own changed, when a planned region is not where the plan put it, or
    when dt-validate with the tree's bindings warns about anything it did
    not already warn about. Returns what was checked, for the user.
    """
    before = kt.build_dtb(tree, change.path)
    after = kt.build_dtb(tree, change.path, overlay={change.path: change.new})
    old_view, new_view = TreeView.of(before.dtb), TreeView.of(after.dtb)
    old_rsv, new_rsv = _children(old_view, "/reserved-memory"), _children(new_view, "/reserved-memory")
    problems = [f"/reserved-memory/{name} is gone" for name in old_rsv if name not in new_rsv]
    owned = {r.node for r in board.regions} | {
        old_view.labels[r.label].rsplit("/", 1)[-1] for r in board.regions if r.label in old_view.labels}
    problems += [f"/reserved-memory/{name} changed although the plan does not own it"
                 for name, props in old_rsv.items() if name not in owned and new_rsv.get(name) != props]
    rcells = new_view.cells("/reserved-memory")
    for area in areas:
        region = next((r for r in board.regions if r.node == area.name), None)
        if region is None:
            continue
        path = new_view.labels.get(region.label or "", f"/reserved-memory/{region.node}")
        node = new_view.node(path)
        if node is None:
            problems.append(f"{area.label or area.name}: no node {path} in the built DTB")
        elif region.reg is not None and new_view.reg_pairs(path) != [(area.base, area.size)]:
            problems.append(f"{path}: reg is not <{area.base:#x} {area.size:#x}>")
        elif region.reg is None and node.properties.get("size") != fdt.encode_number(area.size, rcells[1]):
            problems.append(f"{path}: size is not {area.size:#x}")
    if problems:
        raise ConfigError(f"the patched {change.path} builds, but its DTB is wrong:\n  " + "\n  ".join(problems),
                          hint="this is a cma-tool bug if the board file is right: please report it")
    schema = kt.processed_schema(tree)
    old_check, new_check = kt.validate(before.dtb, schema), kt.validate(after.dtb, schema)
    remaining = list(old_check.findings)
    added = []
    for line in new_check.findings:
        if line in remaining:
            remaining.remove(line)
        else:
            added.append(line)
    if added:
        raise ConfigError(f"dt-validate with {tree.name}'s bindings warns about the patched "
                          f"{Path(change.path).with_suffix('.dtb').name}:\n  " + "\n  ".join(added),
                          hint="the unpatched tree does not give these warnings: fix the board's regions")
    said = [f"dt-validate said about the bindings themselves (not the DTB): {line}"
            for line in new_check.schema_notes if line not in old_check.schema_notes]
    return [f"checked: {after.command} builds with the patch (the tree's Makefile, out of tree)",
            f"checked: /reserved-memory keeps its {len(old_rsv)} node(s) and holds the plan's {len(areas)} "
            "area(s) at the planned addresses",
            f"checked: dt-validate with the tree's bindings (PYTHONHASHSEED=0): {len(old_check.findings)} "
            f"warning(s) before, {len(new_check.findings)} after, none new", *said]


def board_file_patch(tree: Path, board: Board, profile: KernelProfile, code: BoardCode,
                     areas: list[PlacedArea]) -> tuple[Patch, list[FileChange]]:
    path = code.board_file
    source = tree / path
    if not source.is_file():
        raise ConfigError(f"kernel tree {tree} has no {path}",
                          hint=f"the board file of '{board.name}' must exist there (a {profile.name}-era tree)")
    old = source.read_text()
    changes = [FileChange(path, old, patch_board_file_text(old, code, where=path))]
    if code.kconfig_select:
        kpath = f"{code.mach_dir}/Kconfig"
        kfile = tree / kpath
        if not kfile.is_file():
            raise ConfigError(f"kernel tree {tree} has no {kpath}", hint="MACH_ must select CMA there")
        kold = kfile.read_text()
        changes.append(FileChange(kpath, kold, patch_kconfig_text(kold, code, where=kpath)))
    soc = code.mach_dir.rsplit("mach-", 1)[-1].upper()
    api = ("cma_reserve() at .reserve time and cma_create()/set_dev_cma_area() from machine init"
           if code.api == "2011" else "dma_declare_contiguous() and s5p_mfc_reserve_mem() at .reserve time")
    subject = f"ARM: {soc}: {board.name}: reserve CMA areas for the multimedia devices"
    body = "\n".join([
        _para(f"Reserve the contiguous memory of {board.model} with {api}, before the "
              "page allocator takes the memory over; the pages stay usable for movable "
              "allocations until a driver asks for them."),
        "",
        f"Planned with kernel profile {profile.name} (CMA unit {format_size(profile.cma_min_bytes)}):",
        *_area_lines(board, areas),
        *([""] + [f"Note: {n}" for n in code.notes] if code.notes else []),
    ])
    return Patch("", subject, body), changes
