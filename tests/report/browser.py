"""Headless Chromium for the report tests: a screenshot and the DOM after the page's own script ran.

One chromium call does both (``--screenshot`` and ``--dump-dom``); the DOM
comes back as HTML text, read here into a small tree (the standard
library's HTMLParser) so tests can ask for elements by tag, class and
attribute, and for their text.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tests.tools import need

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        """Elements by tag, a class they have, and attribute values (data_pfn= stands for data-pfn=)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
                and all(n.attrs.get(k) == v for k, v in want.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag or '*'}> with class {cls!r} and {attrs}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def chromium() -> str:
    return need("chromium")


def browse(page: Path, shot: Path, *, width: int = 1400, height: int = 2000) -> Node:
    """Open PAGE in headless Chromium: save a screenshot to SHOT and return the DOM after its scripts ran."""
    profile = shot.with_name(shot.stem + "-profile")
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={shot}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot: {done.stderr[-2000:]}"
    print(f"screenshot: {shot}")
    shutil.rmtree(profile, ignore_errors=True)
    return parse_html(done.stdout)


def browse_with(page: Path, script: str, shot: Path, *, css: str = "", height: int = 2000) -> Node:
    """PAGE with a test's own script run after the page's (and CSS after its own), in a copy beside SHOT."""
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1 and text.count("</head>") == 1
    text = text.replace("</head>", f"<style>{css}</style></head>").replace("</body>", f"<script>{script}</script></body>")
    copy = shot.with_suffix(".html")
    copy.write_text(text, encoding="utf-8")
    return browse(copy, shot, height=height)
