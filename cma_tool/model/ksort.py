"""The kernel's sort(): lib/sort.c's bottom-up heapsort, which is NOT stable.

It matters to the model because of_reserved_mem sorts its nodes with
__rmem_cmp (by base, then size) and every dynamic node compares equal (base 0,
size 0 when sorted): the order the heapsort leaves equal elements in is the
order the kernel allocates the dynamic nodes and numbers their CMA areas.
A stable sort would be simpler and wrong; Python's sorted() cannot stand in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def kernel_sort(items: list[T], cmp: Callable[[T, T], int]) -> list[T]:
    """A sorted copy of ``items``, equal elements placed exactly as lib/sort.c places them."""
    a = list(items)
    n = len(a)
    heap_build = n // 2  # "a" in lib/sort.c: the next element to sift down while building
    if heap_build == 0:
        return a
    while True:
        if heap_build:
            heap_build -= 1
            top = heap_build
        else:
            n -= 1
            if n == 0:
                break
            a[0], a[n] = a[n], a[0]  # extract the root to the sorted tail
            top = 0
        # Bottom-up sift: follow the larger child to a leaf (one compare per level),
        # then climb back to where the element at "top" belongs.
        b = top
        while True:
            c = 2 * b + 1
            d = c + 1
            if d >= n:
                break
            b = c if cmp(a[c], a[d]) >= 0 else d
        if d == n:  # a last leaf without a sibling
            b = c
        while b != top and cmp(a[top], a[b]) >= 0:
            b = (b - 1) // 2
        dest = b
        while b != top:  # rotate the path: "top" moves down to dest, the others up one level
            b = (b - 1) // 2
            a[b], a[dest] = a[dest], a[b]
    return a
