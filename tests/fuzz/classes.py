"""The inputs a user or a board can give cma-tool, one class each: how to make them and how to feed them.

Each class has a hypothesis strategy that makes inputs shaped like real ones
(structure-aware: a real board, scenario or console with its parts replaced,
deleted, nested, stretched) and a ``feed`` that gives one input to the real
code path the CLI takes, in process. Feeding returns normally or raises; the
harness (tests/fuzz/harness.py) judges what was raised.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).parents[2]
QEMU_AQUILA = ROOT / "boards" / "qemu-aquila.yaml"
SERIAL_REPLAY = ROOT / "tests" / "data" / "serial-replay" / "console.log"

# ---- values that have broken parsers before: the edges of every type ------------------------

_WEIRD_TEXT = st.sampled_from(["", " ", "\0", "a\0b", "é", "😀", "\x1b[2J", "0x", "-1", "1e309", "nan", "inf",
                               "9" * 5000, "0x" + "f" * 300, "64M" * 50, "~", "null", "yes", "{", "[", "&a", "*a",
                               "!!python/object:os.system", "a,b", "/dev/zero", "../" * 40, "x" * 300])
_SCALARS = st.one_of(
    st.integers(), st.integers(min_value=-(1 << 70), max_value=1 << 70), st.just(1 << 4000), st.floats(),
    st.booleans(), st.none(), st.text(max_size=40), _WEIRD_TEXT,
    st.sampled_from(["1K", "4M", "64M", "1G", "16E", "0", "0x40000000", "1T", "-4M", "0x0"]),
)
_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a parsed YAML document: mapping keys and list indexes down to the leaves."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        del doc[path[0]]
    elif path:
        _delete(doc[path[0]], path[1:])
    return doc


@st.composite
def mutated_yaml(draw: st.DrawFn, base_text: str) -> str:
    """A real document with 1-4 of its parts replaced, deleted or nested, sometimes damaged as text."""
    doc = yaml.safe_load(base_text)
    for _ in range(draw(st.integers(1, 4))):
        places = _paths(doc)
        path = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "delete", "nest", "add"]))
        try:
            if action == "replace":
                doc = _set(doc, path, draw(_VALUES))
            elif action == "delete" and path:
                doc = _delete(doc, path)
            elif action == "nest":
                # Written as flow text after dumping: PyYAML's own dumper would recurse as deep.
                doc = _set(doc, path, f"NEST{draw(st.sampled_from([2, 50, 2000, 20000]))}NEST")
            elif action == "add":
                target = doc
                for p in path:
                    target = target[p]
                if isinstance(target, dict):
                    target[draw(st.one_of(st.text(max_size=12), _WEIRD_TEXT))] = draw(_VALUES)
        except (KeyError, IndexError, TypeError):
            continue
    text = yaml.safe_dump(doc, allow_unicode=True, width=1 << 20) if doc is not None else ""
    text = re.sub(r"NEST(\d+)NEST", lambda m: "[" * int(m.group(1)) + "x" + "]" * int(m.group(1)), text)
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "byte", "anchors"]))
    if damage == "truncate" and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "byte" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(["\0", ":", "-", "\t", "{", "]", "\n", "'", "\\", "é"])) + text[at + 1:]
    elif damage == "anchors":  # a billion-laughs document in a corner of the board
        text += "\nlol: &a [x, x, x, x, x, x, x, x, x]\nlol2: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" \
                "lol3: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nlol4: [*c, *c, *c, *c, *c, *c, *c, *c]\n"
    return text


# ---- feeding: the CLI's own path, in process ----------------------------------------------------


def cli(*argv: str) -> int:
    """`cma-tool ARGV` in process, its output swallowed; its exit code (70: it caught a bug of ours)."""
    from cma_tool.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(argv))


def _in_tmp(files: dict[str, str | bytes], run: Callable[[Path], int]) -> int:
    with tempfile.TemporaryDirectory(prefix="cma-fuzz-") as tmp:
        folder = Path(tmp)
        for name, content in files.items():
            path = folder / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_bytes(content.encode("utf-8", "surrogatepass"))
        return run(folder)


def feed_board(text: str) -> int:
    # The board includes a mutated SoC file too: includes are part of the board input.
    soc = (ROOT / "boards" / "s5pv210.yaml").read_text()
    def run(d: Path) -> int:
        # plan (with its picture) and size read the same board; a bug in either is the input's finding.
        board = str(d / "board.yaml")
        codes = (cli("plan", board, "--json", "--svg", str(d / "map.svg")), cli("size", board))
        return 70 if 70 in codes else codes[0]

    return _in_tmp({"board.yaml": text, "soc.yaml": soc}, run)


def feed_scenario(text: str) -> int:
    return _in_tmp({"s.yaml": text}, lambda d: cli("model", str(QEMU_AQUILA), "--requests", str(d / "s.yaml")))


def feed_bootargs(text: str) -> int:
    return cli("model", str(QEMU_AQUILA), "--bootargs", text)


def feed_dtb(blob: bytes) -> int:
    return _in_tmp({"x.dtb": blob}, lambda d: cli("dtb", "show", str(d / "x.dtb")))


def feed_console(text: str) -> int:
    """What a board printed, through the run's observe and cross-check stages, as `run` calls them."""
    from cma_tool.captures import from_board
    from cma_tool.check import cross_check
    from cma_tool.errors import CmaToolError
    from cma_tool.observe import observe
    from cma_tool.plan import make_plan

    plan = make_plan(ROOT / "tests" / "sim" / "emulated-twin.yaml", allow_misfit=True)
    try:
        obs = observe(text)
        if obs.damaged:
            return 3
        cross_check(plan, obs.cmdline or "", obs, from_board(plan.board).model_devices(plan.board))
    except CmaToolError as err:
        return int(err.exit_code)
    return 0


@st.composite
def mutated_console(draw: st.DrawFn) -> str:
    """A real run's console with bytes lost, changed, repeated or garbled, or lines cut, as a board or a line does."""
    text = SERIAL_REPLAY.read_text(errors="replace")
    for _ in range(draw(st.integers(1, 6))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        kind = draw(st.sampled_from(["drop", "change", "garble", "cut", "repeat", "json"]))
        if kind == "drop":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif kind == "change":
            text = text[:at] + draw(st.characters()) + text[at + 1:]
        elif kind == "garble":
            text = text[:at] + draw(st.text(max_size=30)) + text[at:]
        elif kind == "cut":
            text = text[:at]
        elif kind == "repeat":
            text = text[:at] + text[at: at + 200] * draw(st.integers(2, 5)) + text[at:]
        else:  # a capture line whose fields are of another type, as a foreign program would print
            text = text.replace('"width":1920', '"width":' + draw(st.sampled_from(['"x"', "null", "-1", "1e999", "[]"])), 1)
    return text


@st.composite
def damaged_dtb(draw: st.DrawFn) -> bytes:
    """QEMU virt's real DTB with bytes changed anywhere (header, structure, strings), or cut short."""
    blob = bytearray(gzip.decompress((ROOT / "tests" / "data" / "binfmt" / "qemu-virt-768M.dtb.gz").read_bytes()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(blob) - 1))
        blob[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del blob[draw(st.integers(0, len(blob))):]
    return bytes(blob)


def feed_atags(blob: bytes) -> int:
    from cma_tool.binfmt.atags import AtagError, parse

    try:
        parse(blob)
    except AtagError:
        return 1
    return 0


def feed_ubootenv(blob: bytes) -> int:
    from cma_tool.binfmt.ubootenv import EnvError, parse

    try:
        parse(blob, size=len(blob) or None)
        parse(blob, size=len(blob) or None, redundant=True)
    except EnvError:
        return 1
    return 0


@st.composite
def agent_output(draw: st.DrawFn) -> str:
    """A real run's console whose sections' contents are changed and re-declared (right size and sha256).

    So what is exercised is reading what a board really printed, however odd (a
    foreign capture program, a kernel that prints other numbers), not the
    damage check, which the console class covers.
    """
    import hashlib

    from cma_tool.deploy.sections import split_sections

    text = SERIAL_REPLAY.read_text(errors="replace").replace("\r\n", "\n")
    sections = split_sections(text).sections
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(sorted(sections)))
        body = sections[name].raw
        lines = body.splitlines(keepends=True) or ["\n"]
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["replace-line", "drop-line", "json-field", "number", "dup-line"]))
        if kind == "replace-line":
            lines[at] = draw(st.one_of(st.text(max_size=60), _WEIRD_TEXT)).replace("\n", " ") + "\n"
        elif kind == "drop-line":
            del lines[at]
        elif kind == "dup-line":
            lines.insert(at, lines[at])
        elif kind == "json-field":
            lines[at] = re.sub(r'":(-?\d+|"[^"]*")', lambda m: '":' + draw(st.sampled_from(
                ['"x"', "null", "-1", "1e999", "[]", "{}", "99999999999999999999999", '"RGB3"', "true"])),
                lines[at], count=1)
        else:
            lines[at] = re.sub(r"\d+", lambda m: str(draw(st.integers(-1, 1 << 70))), lines[at], count=1)
        new = "".join(lines)
        data = new.encode("utf-8", "surrogateescape")
        end = re.compile(rf"==== CMA-TOOL END {re.escape(name)} rc=(-?\d+) bytes=\d+ sha256=[0-9a-f]{{64}} ====")
        begin = f"==== CMA-TOOL BEGIN {name} ====\n"
        start = text.find(begin)
        stop = end.search(text, start)
        if start < 0 or stop is None:
            continue
        text = (text[: start + len(begin)] + new + f"==== CMA-TOOL END {name} rc={stop.group(1)} bytes={len(data)} "
                f"sha256={hashlib.sha256(data).hexdigest()} ====" + text[stop.end():])
        sections = split_sections(text).sections
    return text


@dataclass(frozen=True)
class InputClass:
    name: str
    strategy: st.SearchStrategy[Any]
    feed: Callable[[Any], int]


CLASSES = {
    c.name: c for c in (
        InputClass("board", mutated_yaml(QEMU_AQUILA.read_text()), feed_board),
        InputClass("scenario", mutated_yaml((ROOT / "configs" / "requests" / "hole-reuse.yaml").read_text()),
                   feed_scenario),
        InputClass("bootargs", st.one_of(
            st.text(max_size=80), st.lists(st.sampled_from(
                ["cma=", "cma=64M", "cma=0", "cma=16E", "cma=99999999999999999999T", "cma=4M@0x40000000",
                 "cma=1M@0x0-0x1", "cma=64M@0x50000000-0x40000000", "coherent_pool=", "coherent_pool=1G",
                 "coherent_pool=16E", "mem=", "mem=1G@0", "é", "\0", "--", "cma=0x", "cma=-1", "cma=1k@-1"]),
                max_size=6).map(" ".join)), feed_bootargs),
        InputClass("dtb", st.binary(max_size=64) | damaged_dtb(), feed_dtb),
        InputClass("console", mutated_console(), feed_console),
        InputClass("agent", agent_output(), feed_console),
        InputClass("atags", st.binary(max_size=200) | st.builds(
            lambda words: b"".join(w.to_bytes(4, "little") for w in words),
            st.lists(st.sampled_from([0, 2, 3, 5, 0x54410001, 0x54410002, 0x54410005, 0x54410009, 0xFFFFFFFF,
                                      0x40000000, 1 << 31]) | st.integers(0, 0xFFFFFFFF), max_size=40)),
                   feed_atags),
        InputClass("ubootenv", st.binary(max_size=300) | st.builds(
            lambda crc, body, pad: crc + body + b"\0" * pad,
            st.binary(min_size=4, max_size=4), st.lists(st.sampled_from(
                [b"bootargs=console=ttyS0\0", b"a=b\0", b"=x\0", b"\xff\xfe\0", b"noequals\0", b"\0"]),
                max_size=10).map(b"".join), st.integers(0, 64)), feed_ubootenv),
    )
}
