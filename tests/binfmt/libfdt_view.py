"""The tree as pylibfdt (the reference C library) sees it, for cross-checks."""

from __future__ import annotations

from typing import Any

import libfdt

from cma_tool.binfmt import fdt

# (name, [(property, value)...], [children...])
NodeView = tuple[str, list[tuple[str, bytes]], list[Any]]


def libfdt_view(blob: bytes) -> tuple[NodeView, list[tuple[int, int]]]:
    """Raises libfdt.FdtException when libfdt refuses the blob."""
    f = libfdt.Fdt(blob)
    quiet = (libfdt.NOTFOUND,)

    def node(offset: int, depth: int) -> NodeView:
        assert depth <= fdt.MAX_DEPTH + 1
        props = []
        poff = f.first_property_offset(offset, quiet)
        while poff >= 0:
            prop = f.get_property_by_offset(poff)
            props.append((prop.name, bytes(prop)))
            poff = f.next_property_offset(poff, quiet)
        children = []
        child = f.first_subnode(offset, quiet)
        while child >= 0:
            children.append(node(child, depth + 1))
            child = f.next_subnode(child, quiet)
        return (f.get_name(offset), props, children)

    reservations = [tuple(f.get_mem_rsv(i)) for i in range(f.num_mem_rsv())]
    return node(0, 0), [(int(a), int(s)) for a, s in reservations]


def our_view(tree: fdt.DeviceTree) -> tuple[NodeView, list[tuple[int, int]]]:
    def node(n: fdt.Node) -> NodeView:
        return (n.name, list(n.properties.items()), [node(c) for c in n.children])

    return node(tree.root), [(m.address, m.size) for m in tree.reservations]
