"""lib/sort.c's heapsort: sorted output, and equal elements where the kernel leaves them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cma_tool.model.ksort import kernel_sort


def by_key(x: tuple[int, str], y: tuple[int, str]) -> int:
    return (x[0] > y[0]) - (x[0] < y[0])


def test_two_equal_elements_swap() -> None:
    # n=2: the heap is built without a swap (equal keys), then the root is extracted to the end.
    assert kernel_sort([(0, "A"), (0, "B")], by_key) == [(0, "B"), (0, "A")]


def test_dynamic_nodes_around_static_ones() -> None:
    # Worked by hand through the sift-downs: [L, R43, R54, V] -> [V, L, R43, R54]; the real
    # 6.1 kernel allocated vidpool (V) before linux,cma (L) (kernel-traces/f-two-dynamic-nodes).
    nodes = [(0, "L"), (0x43, "R43"), (0x54, "R54"), (0, "V")]
    assert [n for _, n in kernel_sort(nodes, by_key)] == ["V", "L", "R43", "R54"]


def test_one_dynamic_node_comes_first() -> None:
    assert [n for _, n in kernel_sort([(0, "L"), (0x4C, "S")], by_key)] == ["L", "S"]


@given(st.lists(st.integers(0, 4), max_size=20))
def test_the_result_is_sorted_and_a_permutation(keys: list[int]) -> None:
    items = [(k, str(i)) for i, k in enumerate(keys)]
    out = kernel_sort(items, by_key)
    assert [k for k, _ in out] == sorted(keys)
    assert sorted(out) == sorted(items)
