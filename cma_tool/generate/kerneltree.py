"""A real kernel tree as the judge of a device tree: its cpp and dtc rules, its Makefile, its bindings.

Three things the DTS patch and ``cma-tool import`` need from the tree:

- :func:`compile_source`: a .dts preprocessed and compiled the way the
  kernel's scripts/Makefile.lib does (``cpp -nostdinc -I
  scripts/dtc/include-prefixes -undef -D__DTS__ -x assembler-with-cpp``,
  then dtc), with ``-@`` so the labels come back in ``/__symbols__``;
  read into a :class:`TreeView` (labels, phandles, compatibles).
- :func:`build_dtb`: ``make <defconfig>`` then ``make <board>.dtb`` with
  the tree's own Makefile, out of tree (``O=``, a cached build folder) so
  the user's tree is never written. A patched file is laid over the tree
  inside the build folder: Kbuild's VPATH finds a source in the build
  folder before the tree, and cpp finds the board's own .dtsi files next
  to it because they are copied there too (``cpp -M`` says which).
- :func:`validate`: ``dt-validate`` against ``dt-mk-schema`` of the tree's
  own Documentation/devicetree/bindings (about 30 s, so cached by the
  bindings' git tree id and the dtschema version), under a fixed
  PYTHONHASHSEED: old bindings give a property two types and dt-validate
  then picks one by hash order, so a warning comes and goes with the seed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cma_tool.binfmt import fdt
from cma_tool.errors import ConfigError, Diagnostic, InfraError

CROSS_COMPILE = "arm-linux-gnueabihf-"
#: What the kernel passes dtc for ARM dtbs (scripts/Makefile.lib, 6.1): the checks it silences.
_KERNEL_DTC_FLAGS = ["-Wno-interrupt_provider", "-Wno-unit_address_vs_reg", "-Wno-avoid_unnecessary_addr_size",
                     "-Wno-alias_paths", "-Wno-graph_child_address", "-Wno-simple_bus_reg",
                     "-Wno-unique_unit_address"]
_PACKAGES = {"cpp": "cpp", "dtc": "device-tree-compiler", "make": "make", "dt-validate": "dtschema (pip)",
             "dt-mk-schema": "dtschema (pip)", f"{CROSS_COMPILE}gcc": "gcc-arm-linux-gnueabihf"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"{name} is not installed", hint=f"install.sh installs it ({_PACKAGES.get(name, name)})")
    return path


def cache_root() -> Path:
    """The image cache's folder (``$CMA_TOOL_CACHE``, else ``~/.cache/cma-tool``): builds and schemas go there too."""
    from cma_tool.deploy.image.cache import default_cache_dir

    return default_cache_dir()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path``, waited for: two processes filling one cache entry take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              check=False, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as err:
        raise InfraError(f"{what} took longer than {timeout:.0f} s", hint="is the machine overloaded?") from err


# ------------------------------------------------------------------ the tree's own cpp + dtc

def tree_top(start: Path) -> Path | None:
    """The kernel tree ``start`` lies in (the folder with scripts/dtc/include-prefixes), or None."""
    for folder in [start, *start.parents]:
        if (folder / "scripts/dtc/include-prefixes").is_dir() and (folder / "Makefile").is_file():
            return folder
    return None


def _include_dirs(tree: Path | None) -> list[Path]:
    return [tree / "scripts/dtc/include-prefixes"] if tree is not None else []


def _cpp(source: Path, tree: Path | None, extra: tuple[Path, ...], *options: str) -> list[str]:
    """cpp's command line for a .dts as Kbuild's cmd_dtc_cpp runs it."""
    return [tool("cpp"), "-nostdinc", *(f"-I{d}" for d in [*_include_dirs(tree), *extra]), "-undef", "-D__DTS__",
            "-x", "assembler-with-cpp", *options, str(source)]


def preprocess(source: Path, tree: Path | None, *, extra: tuple[Path, ...] = ()) -> str:
    """``source`` through cpp as Kbuild runs it (line markers kept: dtc's errors name the real file)."""
    done = _run(_cpp(source, tree, extra), "cpp")
    if done.returncode != 0:
        raise _positioned(done.stderr, f"cpp refused {source}",
                          "a missing include: pass the kernel tree it belongs to (or --include DIR)")
    return done.stdout


def included_files(source: Path, tree: Path | None, *, extra: tuple[Path, ...] = ()) -> list[Path]:
    """Every file ``source`` includes, by cpp's own dependency list (``-M``)."""
    done = _run(_cpp(source, tree, extra, "-M"), "cpp -M")
    if done.returncode != 0:
        raise ConfigError(f"cpp refused {source}:\n{done.stderr.strip()}", hint="a missing include?")
    words = done.stdout.replace("\\\n", " ").split(":", 1)[1].split()
    return [Path(w) for w in words]


def compile_source(source: Path, tree: Path | None, *, text: str | None = None,
                   extra: tuple[Path, ...] = ()) -> bytes:
    """The DTB of ``source`` (or of ``text`` as if it were ``source``), labels kept in /__symbols__."""
    with tempfile.TemporaryDirectory(prefix="cma-tool-dts-") as scratch:
        src = source
        if text is not None:
            # Next to nothing but where cpp looks: the original folder stays first for quoted includes.
            src = Path(scratch) / source.name
            src.write_text(text)
            extra = (source.parent, *extra)
        pre = Path(scratch) / "pre.dts"
        pre.write_text(preprocess(src, tree, extra=extra))
        out = Path(scratch) / "out.dtb"
        cmd = [tool("dtc"), "-q", "-@", "-I", "dts", "-O", "dtb", "-b", "0", "-o", str(out),
               f"-i{source.parent}", *(f"-i{d}" for d in _include_dirs(tree)), *_KERNEL_DTC_FLAGS, str(pre)]
        done = _run(cmd, "dtc")
        if done.returncode != 0:
            raise _positioned(done.stderr, f"dtc refused {source}", "is this a device-tree source?")
        return out.read_bytes()


#: cpp's "file:line:col: error: what" and dtc's "Error: file:line.col-line.col what".
_CPP_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?:fatal )?error: (?P<what>.*)$")
_DTC_LINE = re.compile(r"^(?:ERROR|Error)(?: \([\w_]+\))?: (?P<file>[^:\s]+):(?P<line>\d+)\.(?P<col>\d+)"
                       r"(?:-[\d.]+)?:? (?P<what>.*)$")


def _positioned(stderr: str, what: str, hint: str) -> ConfigError:
    """cpp's or dtc's complaints as our diagnostics (the file and line in the user's source), else as said."""
    diags = []
    for line in stderr.splitlines():
        m = _CPP_LINE.match(line) or _DTC_LINE.match(line)
        if m:
            diags.append(Diagnostic(m["what"], m["file"], int(m["line"]), int(m["col"]), "error", hint))
    if diags:
        return ConfigError(diagnostics=diags)
    return ConfigError(f"{what}:\n{stderr.strip()}", hint=hint)


@dataclass
class TreeView:
    """A compiled tree, with what the patch and the import look up in it."""

    tree: fdt.DeviceTree
    labels: dict[str, str] = field(default_factory=dict)  # label -> path
    phandles: dict[int, str] = field(default_factory=dict)  # phandle -> path

    @classmethod
    def of(cls, blob: bytes, *, source: str = "") -> TreeView:
        tree = fdt.decode(blob, source=source)
        view = cls(tree)
        symbols = tree.root.child("__symbols__")
        for label, value in (symbols.properties.items() if symbols else []):
            try:
                view.labels[label] = fdt.decode_string(value)
            except fdt.FdtError:
                continue
        for path, node in tree.walk():
            raw = node.properties.get("phandle")
            if raw is not None and len(raw) == 4:
                view.phandles[int.from_bytes(raw, "big")] = path
        return view

    def node(self, path: str) -> fdt.Node | None:
        return self.tree.find(path)

    def labels_of(self, path: str) -> list[str]:
        return sorted(label for label, p in self.labels.items() if p == path)

    def with_compatible(self, compatible: str) -> list[str]:
        out = []
        for path, node in self.tree.walk():
            raw = node.properties.get("compatible")
            if raw is not None and compatible.encode() in raw.split(b"\0"):
                out.append(path)
        return out

    def cells(self, path: str) -> tuple[int, int]:
        """#address-cells/#size-cells a node gives its children (DTSpec defaults 2/1)."""
        node = self.node(path)
        a = node.u32("#address-cells") if node is not None else None
        s = node.u32("#size-cells") if node is not None else None
        return (2 if a is None else a, 1 if s is None else s)

    def reg_pairs(self, path: str, prop: str = "reg") -> list[tuple[int, int]]:
        node = self.node(path)
        if node is None or prop not in node.properties:
            return []
        parent = path.rsplit("/", 1)[0] or "/"
        a, s = self.cells(parent)
        return fdt.decode_ranges(node.properties[prop], a, s, what=prop)

    def memory_banks(self) -> list[tuple[int, int]]:
        banks: list[tuple[int, int]] = []
        for child in self.tree.root.children:
            if child.properties.get("device_type") == b"memory\0":
                banks += self.reg_pairs("/" + child.name)
        return sorted(banks)


# ------------------------------------------------------------------ the tree's Makefile

def defconfig_for(tree: Path, dts: str) -> str:
    """The SoC's defconfig when the tree has one (s5pv210-aquila.dts: s5pv210_defconfig), else multi_v7."""
    soc = Path(dts).stem.split("-", 1)[0]
    return f"{soc}_defconfig" if (tree / "arch/arm/configs" / f"{soc}_defconfig").is_file() else "multi_v7_defconfig"


def _tree_key(tree: Path, *parts: str) -> str:
    """By content, not place: two checkouts of one commit share a build folder (make redoes what differs)."""
    head = _run(["git", "rev-parse", "HEAD"], "git rev-parse", cwd=tree).stdout.strip()
    return hashlib.sha256("\0".join([head, *parts]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Build:
    dtb: bytes
    command: str  # what was run, for the report


def build_dtb(tree: Path, dts: str, *, overlay: Mapping[str, str] | None = None) -> Build:
    """``make <defconfig>`` and ``make <board>.dtb`` with the tree's Makefile; ``overlay``: rel path -> text.

    The build folder is cached per tree and defconfig (scripts/dtc is built
    once) and locked while in use.
    """
    make = tool("make")
    tool(f"{CROSS_COMPILE}gcc")
    defconfig = defconfig_for(tree, dts)
    build = cache_root() / "kbuild" / _tree_key(tree, defconfig)
    rel = Path(dts)
    target = rel.relative_to("arch/arm/boot/dts").with_suffix(".dtb")
    base = [make, "-s", "-C", str(tree), f"O={build}", "ARCH=arm", f"CROSS_COMPILE={CROSS_COMPILE}"]
    if (tree / ".config").is_file():
        raise ConfigError(f"{tree} is configured in place (it has a .config): Kbuild builds out of tree "
                          "(O=) only from a clean source tree", hint=f"make -C {tree} mrproper, or pass a clean "
                          "checkout (git worktree add) as --kernel-tree")
    with file_lock(build.with_suffix(".lock")):
        build.mkdir(parents=True, exist_ok=True)
        if not (build / ".config").is_file():
            done = _run([*base, defconfig], f"make {defconfig}", timeout=600)
            if done.returncode != 0:
                raise ConfigError(f"make {defconfig} failed in {tree}:\n{done.stderr.strip()[-2000:]}",
                                  hint="is this an ARM kernel tree with flex, bison and bc installed?")
        dts_dir = build / rel.parent
        placed: list[Path] = []
        try:
            for path, text in (overlay or {}).items():
                where = build / path
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_text(text)
                placed.append(where)
            if overlay:
                # The board's own .dtsi files next to the overlaid .dts, so its quoted includes resolve.
                for dep in included_files(tree / rel, tree):
                    if dep.parent.resolve() == (tree / rel.parent).resolve() and not (dts_dir / dep.name).exists():
                        shutil.copyfile(dep, dts_dir / dep.name)
                        placed.append(dts_dir / dep.name)
            out = build / rel.parent / target.name
            out.unlink(missing_ok=True)
            done = _run([*base, str(target)], f"make {target}", timeout=600)
            if done.returncode != 0:
                raise ConfigError(f"make {target} failed in {tree}:\n{done.stderr.strip()[-3000:]}",
                                  hint="the patched tree does not build this DTB")
            blob = out.read_bytes()
        finally:
            for copy in placed:
                copy.unlink(missing_ok=True)
    return Build(blob, f"make ARCH=arm CROSS_COMPILE={CROSS_COMPILE} {defconfig} && make ... {target}")


# ------------------------------------------------------------------ the tree's bindings

def _dtschema_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dtschema")
    except PackageNotFoundError:
        return "unknown"


def processed_schema(tree: Path) -> Path:
    """dt-mk-schema of the tree's bindings, made once per bindings tree id and dtschema version."""
    tool("dt-mk-schema")
    bindings = tree / "Documentation/devicetree/bindings"
    if not bindings.is_dir():
        raise ConfigError(f"{tree} has no Documentation/devicetree/bindings",
                          hint="dt-validate checks the patch against the tree's own bindings")
    ident = _run(["git", "rev-parse", "HEAD:Documentation/devicetree/bindings"], "git rev-parse", cwd=tree)
    dirty = _run(["git", "status", "--porcelain", "--", "Documentation/devicetree/bindings"], "git status",
                 cwd=tree).stdout
    key = hashlib.sha256(f"{ident.stdout.strip()}\0{dirty}\0{_dtschema_version()}".encode()).hexdigest()[:16]
    if ident.returncode != 0 or dirty:
        key = _tree_key(tree, str(tree.resolve()), dirty, _dtschema_version())  # uncommitted: this tree only
    out = cache_root() / "dt-schema" / f"{key}.json"
    with file_lock(out.with_suffix(".lock")):
        if out.is_file() and out.stat().st_size > 0:
            return out
        done = _run(["dt-mk-schema", "-j", "-u", str(bindings)], "dt-mk-schema", timeout=900)
        if done.returncode != 0 or not done.stdout.strip():
            raise InfraError(f"dt-mk-schema failed on {bindings}:\n{done.stderr.strip()[-2000:]}")
        partial = out.with_suffix(".part")
        partial.write_text(done.stdout)
        partial.replace(out)
    return out


@dataclass(frozen=True)
class Validation:
    findings: list[str]  # about the DTB: "<node>: <what>", sorted
    schema_notes: list[str]  # dt-validate about the schemas themselves (no DTB named), sorted


def validate(blob: bytes, schema: Path) -> Validation:
    """dt-validate on ``blob`` under PYTHONHASHSEED=0, its lines split into findings and schema notes.

    A finding names the DTB ("board.dtb: node: message"); a line that does
    not ("size: property has multiple types") is dtschema about the
    bindings it was given, printed whatever the DTB, once per property the
    DTB happens to use.
    """
    tool("dt-validate")
    with tempfile.TemporaryDirectory(prefix="cma-tool-validate-") as scratch:
        path = Path(scratch) / "board.dtb"
        path.write_bytes(blob)
        done = _run(["dt-validate", "-s", str(schema), str(path)], "dt-validate", env={"PYTHONHASHSEED": "0"})
    findings, notes = [], []
    prefix = f"{path}: "
    for line in (done.stdout + done.stderr).splitlines():
        if not line.strip() or line.startswith((" ", "\t")):
            continue  # "from schema $id: ..." continuation lines
        if line.startswith(prefix):
            findings.append(line[len(prefix):])
        else:
            notes.append(line)
    return Validation(sorted(findings), sorted(set(notes)))
