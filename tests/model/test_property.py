"""The fast allocator against a deliberately naive one, on random alloc/free/pin sequences.

The reference is written straight from the rule, not from mm/cma.c's loop: a
candidate is any bit ``i`` with ``(i + offset) & mask == 0`` whose window of
``nbits`` bits is all free; candidates are tried lowest first; a candidate
whose pages hold a pin is "busy" and the next candidate is tried; the result
is the first candidate that is not busy, -EBUSY if some were busy, else
-ENOMEM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from cma_tool.model import PROFILES, CmaArea, CmaState

P61 = PROFILES["linux-6.1"]


@dataclass
class NaiveArea:
    base_pfn: int
    count: int
    order_per_bit: int
    bits: list[bool] = field(default_factory=list)
    pinned: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.bits = [False] * (self.count >> self.order_per_bit)

    def alloc(self, count: int, align: int) -> tuple[int | None, int, list[int]]:
        """(pfn or None, ret, busy pfns tried)."""
        opb = self.order_per_bit
        nbits = -(-count // (1 << opb))
        mask = (1 << (align - opb)) - 1 if align > opb else 0
        offset = (self.base_pfn % (1 << align)) >> opb
        busy: list[int] = []
        for i in range(len(self.bits) - nbits + 1):
            if (i + offset) & mask:
                continue
            if any(self.bits[i : i + nbits]):
                continue
            pfn = self.base_pfn + (i << opb)
            if any(p in self.pinned for p in range(pfn, pfn + count)):
                busy.append(pfn)
                continue
            for j in range(i, i + nbits):
                self.bits[j] = True
            return pfn, 0, busy
        return None, (-16 if busy else -12), busy

    def release(self, pfn: int, count: int) -> None:
        opb = self.order_per_bit
        first = (pfn - self.base_pfn) >> opb
        for j in range(first, min(first + -(-count // (1 << opb)), len(self.bits))):
            self.bits[j] = False


op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(1, 300), st.integers(0, 10)),
    st.tuples(st.just("free"), st.integers(0, 1000), st.just(0)),
    st.tuples(st.just("pin"), st.integers(0, 1023), st.integers(1, 8)),
    st.tuples(st.just("unpin"), st.integers(0, 1023), st.integers(1, 64)),
)


@settings(max_examples=300, deadline=None)
@given(
    base_pfn=st.integers(0x40000, 0x40000 + 4096),
    pages=st.sampled_from([256, 512, 1000, 1024]),
    opb=st.integers(0, 2),
    ops=st.lists(op, max_size=60),
)
def test_fast_allocator_matches_naive(base_pfn: int, pages: int, opb: int, ops: list[tuple[str, int, int]]) -> None:
    count = pages - pages % (1 << opb)
    area = CmaArea("prop", base_pfn << 12, count << 12, base_pfn, count, opb, "kconfig", 0)
    fast = CmaState(P61, (area,))
    naive = NaiveArea(base_pfn, count, opb)
    live: list[tuple[int, int]] = []
    for kind, a, b in ops:
        if kind == "alloc":
            got = fast.alloc("prop", a, b)
            want_pfn, want_ret, want_busy = naive.alloc(a, b)
            assert (got.pfn, got.ret) == (want_pfn, want_ret)
            assert [e.pfn for e in got.events if e.kind == "busy_retry"] == want_busy
            if got.pfn is not None:
                live.append((got.pfn, a))
        elif kind == "free" and live:
            pfn, n = live.pop(a % len(live))
            fast.release("prop", pfn, n)
            naive.release(pfn, n)
        elif kind in ("pin", "unpin"):
            pfn = base_pfn + a % count
            n = min(b, base_pfn + count - pfn)
            if kind == "pin":
                fast.pin("prop", pfn, n)
                naive.pinned.update(range(pfn, pfn + n))
            else:
                fast.unpin("prop", pfn, n)
                naive.pinned.difference_update(range(pfn, pfn + n))
    used = sum(naive.bits) << opb
    assert fast.free_pages == count - used
