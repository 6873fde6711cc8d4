"""YAML with positions: every value remembers the file, line and column it came from.

PyYAML's composer already records marks on each node; we keep them instead of
throwing them away (which ``yaml.safe_load`` does), so that every later check
can name the exact place. Only the safe node types are built: no Python tags.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cma_tool.errors import Diagnostic

#: Aliases let a tiny file expand into a huge tree ("billion laughs"). A board
#: description has a few hundred values; anything past this is an attack or a mistake.
MAX_NODES = 50_000

Scalar = str | int | float | bool | None
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


@dataclass(frozen=True)
class Where:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Where("<built-in>", 0, 0)


@dataclass
class YNode:
    """A YAML value with its position. ``value`` is a scalar, list[YNode] or dict[str, YNode]."""

    value: Scalar | list[YNode] | dict[str, YNode]
    where: Where
    #: For mappings: where each key was written (for "unknown key" errors).
    key_where: dict[str, Where] = field(default_factory=dict)
    #: For scalars: the text as written, so that a reader can tell ``64`` (bytes) from ``0x40``.
    raw: str | None = None

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> object:
        """The value without positions (for JSON dumps and tests)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


class YamlLoadError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


def _where(file: str, mark: yaml.Mark | None) -> Where:
    if mark is None:
        return Where(file, 0, 0)
    return Where(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.problems: list[Diagnostic] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node) -> YNode:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlLoadError(
                [
                    Diagnostic(
                        f"the document expands to more than {MAX_NODES} values",
                        *self._pos(node),
                        hint="YAML anchors/aliases are expanding hugely; write the values out or use 'include:'",
                    )
                ]
            )
        where = _where(self.file, node.start_mark)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            self.problems.append(Diagnostic(f"unsupported YAML value: tag {node.tag!r}", *self._pos(node),
                                            hint="board files take plain mappings, lists and scalars only"))
            return YNode(None, where)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, YNode] = {}
            key_where: dict[str, Where] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problems.append(
                        Diagnostic("YAML merge keys ('<<') are not supported", *self._pos(key_node),
                                   hint="use 'include:' to share values between files")
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(Diagnostic("a key must be a plain name", *self._pos(key_node)))
                    continue
                key = str(key_node.value)
                if key in out:
                    first = key_where[key]
                    self.problems.append(
                        Diagnostic(
                            f"duplicate key '{key}' (first written at line {first.line})",
                            *self._pos(key_node),
                            hint="a key may appear once per mapping; merge the two entries",
                        )
                    )
                    continue
                key_where[key] = _where(self.file, key_node.start_mark)
                out[key] = self.build(value_node)
            return YNode(out, where, key_where)
        if isinstance(node, yaml.SequenceNode):
            return YNode([self.build(n) for n in node.value], where)
        assert isinstance(node, yaml.ScalarNode)
        return YNode(self._scalar(node), where, raw=str(node.value))

    def _scalar(self, node: yaml.ScalarNode) -> Scalar:
        # Resolve through SafeLoader's own resolver so 0x40000000 is an int and
        # "yes" stays what YAML 1.1 says; an unsafe tag is refused by safe_load.
        try:
            value = self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(Diagnostic(f"unsupported YAML value: {exc.problem}", *self._pos(node)))
            return None
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        # Dates, binary and the like: keep the text, the schema will complain.
        return str(node.value)

    def _pos(self, node: yaml.Node) -> tuple[str, int, int]:
        w = _where(self.file, node.start_mark)
        return (w.file, w.line, w.col)


#: Far beyond any board or scenario (a few KiB); PyYAML takes seconds per MiB, minutes for more.
MAX_YAML_BYTES = 1 << 20
#: Far beyond any real document's nesting (a board is ~6 deep); PyYAML's composer recurses per level.
MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting past MAX_YAML_DEPTH instead of exhausting Python's stack."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str) -> yaml.Node | None:
    """One YAML document as nodes, bounded in size and depth (yaml.YAMLError for what is refused)."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"the document is {len(text)} characters long; at most {MAX_YAML_BYTES} are read "
                             "(a board or scenario is a few KiB: is this the right file?)")
    return yaml.compose(text, Loader=_BoundedLoader)


def read_text(path: Path) -> str:
    """A user's YAML file as text: a regular file, UTF-8, of a sane size (OSError/UnicodeDecodeError otherwise).

    Checked before opening: a FIFO would block the open, a device (/dev/zero) never ends.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    if info.st_size > MAX_YAML_BYTES:
        raise OSError(f"{path} is {info.st_size} bytes; at most {MAX_YAML_BYTES} are read")
    return path.read_text(encoding="utf-8")


def load_text(text: str, file: str) -> YNode | None:
    """Parse one YAML document; YamlLoadError with every problem found."""
    try:
        root = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        w = _where(file, mark)
        what = exc.problem or "malformed YAML"
        if exc.context:
            what = f"{exc.context}: {what}"
        raise YamlLoadError(
            [Diagnostic(f"YAML syntax: {what}", w.file, w.line, w.col, hint="check indentation, colons and quotes here")]
        ) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError([Diagnostic(f"YAML: {exc}", file)]) from None
    if root is None:
        return None
    builder = _Builder(file)
    tree = builder.build(root)
    if builder.problems:
        raise YamlLoadError(builder.problems)
    return tree


def load_file(path: Path, shown_as: str | None = None) -> YNode | None:
    name = shown_as or str(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise YamlLoadError([Diagnostic(f"no such file: {path}", name)]) from None
    except (OSError, ValueError) as exc:  # ValueError: a path with NUL, UnicodeDecodeError
        raise YamlLoadError([Diagnostic(f"cannot read: {exc}", name)]) from None
    return load_text(text, name)
