"""Just enough of memblock to place CMA areas where the kernel places them.

Ranges are (start, end) with end exclusive. The allocator is memblock's
default top-down search: walk the free ranges from the highest, clamp each to
[start, end), and take the highest ``align``-aligned block that fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE_SIZE = 4096
#: memblock_phys_alloc_range() with end 0 from the device-tree code means "anywhere".
ALLOC_ANYWHERE = (1 << 64) - 1


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in ranges:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    return out


def _overlaps(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in ranges)


@dataclass
class Memblock:
    memory: list[tuple[int, int]]
    reserved: list[tuple[int, int]] = field(default_factory=list)
    nomap: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def from_banks(cls, banks: list[tuple[int, int]]) -> Memblock:
        return cls(memory=_merge([(base, base + size) for base, size in banks]))

    @property
    def end_of_dram(self) -> int:
        return self.memory[-1][1] if self.memory else 0

    @property
    def total(self) -> int:
        return sum(e - s for s, e in self.memory)

    def in_memory(self, base: int, size: int) -> bool:
        """True when [base, base+size) lies inside one bank."""
        return any(s <= base and base + size <= e for s, e in self.memory)

    def is_region_reserved(self, base: int, size: int) -> bool:
        return _overlaps(self.reserved, base, base + size)

    def reserve(self, base: int, size: int) -> None:
        self.reserved = _merge(self.reserved + [(base, base + size)])

    def free(self, base: int, size: int) -> None:
        self.reserved = _subtract(self.reserved, base, base + size)

    def mark_nomap(self, base: int, size: int) -> None:
        self.nomap = _merge(self.nomap + [(base, base + size)])

    def clear_nomap(self, base: int, size: int) -> None:
        self.nomap = _subtract(self.nomap, base, base + size)

    def free_ranges(self) -> list[tuple[int, int]]:
        free = list(self.memory)
        for s, e in self.reserved + self.nomap:
            free = _subtract(free, s, e)
        return free

    def find_top_down(self, size: int, align: int, start: int, end: int) -> int | None:
        """__memblock_find_range_top_down(); None when nothing fits."""
        start = max(start, PAGE_SIZE)
        end = max(start, end)
        for fs, fe in reversed(self.free_ranges()):
            this_start = min(max(fs, start), end)
            this_end = min(max(fe, start), end)
            if this_end < size:
                continue
            cand = (this_end - size) & ~(align - 1)
            if cand >= this_start:
                return cand
        return None

    def alloc_range(self, size: int, align: int, start: int, end: int) -> int | None:
        """memblock_alloc_range_nid(): find top-down and reserve; None (the kernel's 0) on failure."""
        base = self.find_top_down(size, align, start, end)
        if base is None:
            return None
        self.reserve(base, size)
        return base
