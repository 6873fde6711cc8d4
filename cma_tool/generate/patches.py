"""Patches against a kernel tree: the dts fragment or the board-file code, at their real paths.

The patch is made by git itself: the files we change are copied from the
user's tree into a throw-away repository, committed, edited, committed
again, and ``git format-patch`` writes the mail. So the blob ids in the
``index`` lines are those of the user's files (``git am -3`` works) and the
format is git's, not an imitation. ``git apply --check`` in the user's tree
then proves the patch applies.

The edits themselves are small text surgery on C and DTS, done on a
brace-level scan that skips comments and strings (no DTS or C parser in
Python reads a .dts with cpp includes and writes it back unchanged).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from cma_tool.board.types import Board
from cma_tool.errors import ConfigError, InfraError
from cma_tool.generate import dts as gdts
from cma_tool.generate.boardfile import BoardCode
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

def _indent_block(block_text: str, label: str | None) -> str:
    if label is None:
        return block_text
    first, rest = block_text.split("\n", 1)
    stripped = first.lstrip("\t")
    return "\t" * (len(first) - len(stripped)) + f"{label}: {stripped.split(': ', 1)[-1]}\n" + rest


def patch_dts_text(text: str, board: Board, profile: KernelProfile, *, where: str) -> str:
    """``text`` (a board .dts) with our /memory, /reserved-memory and memory-region properties."""
    top = _blocks(text, 0, len(text))
    roots = [b for b in top if b.header == "/"]
    if not roots:
        raise ConfigError(f"{where} has no root node '/ {{ ... }};'", hint="is this the board's .dts?")
    root = roots[0]
    acells, scells = gdts.cells_for(profile)
    memory = gdts.memory_dts(board.banks, address_cells=acells, size_cells=scells)
    reserved = gdts.reserved_memory_dts(board, profile)
    children = _blocks(text, root.body, root.close)
    mem = next((b for b in children if _node_name(b.header).split("@")[0] == "memory"), None)
    rsv = next((b for b in children if _node_name(b.header) == "reserved-memory"), None)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied from the back
    if mem is not None:
        edits.append((mem.start, mem.end, _indent_block(memory, _label_of(mem.header))))
    if rsv is not None:
        # A board without regions has no /reserved-memory node (generate/dts.py): drop the tree's.
        edits.append((rsv.start, rsv.end, _indent_block(reserved, _label_of(rsv.header)) if reserved else ""))
    if mem is None and rsv is None:
        at = children[0].start if children else root.close
        edits.append((at, at, memory + "\n" + (reserved + "\n" if reserved else "")))
    elif rsv is None:
        assert mem is not None
        if reserved:
            edits.append((mem.end, mem.end, "\n" + reserved))
    elif mem is None:
        edits.append((rsv.start, rsv.start, memory + "\n"))
    appended: list[str] = []
    overrides = {b.header[1:].strip(): b for b in top if b.header.startswith("&")}
    for block in gdts.consumer_dts(board).split("\n\n"):
        if not block.strip():
            continue
        label = block.split("{", 1)[0].strip()[1:].strip()
        props = [line for line in block.splitlines()[1:-1]]
        existing = overrides.get(label)
        if existing is None:
            appended.append(block if block.endswith("\n") else block + "\n")
            continue
        body = text[existing.body:existing.close]
        kept = [line for line in body.split("\n")
                if not re.match(r"\s*memory-region(-names)?\s*=", line)]
        new_body = "\n" + "\n".join(props) + "\n" + "\n".join(kept).lstrip("\n")
        if not new_body.endswith("\n"):
            new_body += "\n"
        edits.append((existing.body, existing.close, new_body))
    edits.sort(key=lambda e: e[0], reverse=True)
    out = text
    for start, end, repl in edits:
        out = out[:start] + repl + out[end:]
    if appended:
        out = out.rstrip("\n") + "\n\n" + "\n".join(appended)
    return out


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


def dts_patch(tree: Path, board: Board, profile: KernelProfile, areas: list[PlacedArea]) -> tuple[Patch, FileChange]:
    path = find_board_dts(tree, board)
    old = (tree / path).read_text()
    new = patch_dts_text(old, board, profile, where=path)
    if new == old:
        raise ConfigError(f"{path} already holds exactly these reservations", hint="nothing to patch")
    soc = Path(path).stem.split("-", 1)[0]
    subject = f"ARM: dts: {soc}: {board.name}: reserve CMA areas for the multimedia devices"
    body = "\n".join([
        _para(f"The {board.model} has {len(board.banks)} memory bank(s); describe them all in "
              "the memory node and reserve the contiguous memory its camera and codec "
              "drivers allocate with dma_alloc_coherent() as shared-dma-pool, reusable "
              "nodes, so the pages serve movable allocations while no device holds them."),
        "",
        f"Planned with kernel profile {profile.name} (pageblock, and so the CMA unit,",
        f"{format_size(profile.cma_min_bytes)}):",
        *_area_lines(board, areas),
        "",
        "Devices that call of_reserved_mem_device_init() take their own regions",
        "through memory-region; the others use the linux,cma-default area.",
    ])
    return Patch("", subject, body), FileChange(path, old, new)


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
