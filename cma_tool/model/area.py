"""cma_alloc / cma_release over booted areas: the allocator the kernel runs.

The bitmap is a bytearray with one byte per bit (0 free, 1 taken) rather than
a packed bitset: bytearray.find/rfind run in C, so the kernel's
find_next_zero_bit / find_next_bit cost one call each, which is what lets a
1 GiB area at order_per_bit 0 replay hundreds of thousands of events a
second. (Python ints as bitsets need a shift of the whole map per lookup.)

Pinned pages model what alloc_contig_range cannot migrate. In 6.1 and 6.12 the
isolation of MIGRATE_CMA pageblocks never fails on unmovable pages
(has_unmovable_pages() returns early for CMA pageblocks), migration covers
only [pfn, pfn + count), and test_pages_isolated() starts at the buddy page
holding ``pfn`` or at ``pfn`` itself when that page is in use; so a pin makes
the range busy exactly when it lies inside the requested pages. Pins in the
same pageblock but outside the range do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cma_tool.errors import ConfigError
from cma_tool.model.events import NO_PFN, Event
from cma_tool.model.profiles import KernelProfile

AreaSource = Literal["dt-static", "dt-dynamic", "cmdline", "kconfig", "board-file"]

ENOMEM = -12
EBUSY = -16
EINVAL = -22

_ERRNO_NAME = {0: "0", ENOMEM: "-ENOMEM", EBUSY: "-EBUSY", EINVAL: "-EINVAL"}


def errno_name(ret: int) -> str:
    return _ERRNO_NAME.get(ret, str(ret))


@dataclass(frozen=True)
class CmaArea:
    """One declared area, as struct cma describes it after boot."""

    name: str
    base: int
    size: int
    base_pfn: int
    count: int  # pages
    order_per_bit: int
    source: AreaSource
    index: int  # position in cma_areas[]

    @property
    def end_pfn(self) -> int:
        return self.base_pfn + self.count

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "base": self.base,
            "size": self.size,
            "base_pfn": self.base_pfn,
            "count": self.count,
            "order_per_bit": self.order_per_bit,
            "source": self.source,
        }


# AllocResult and ReleaseResult are made once per call on the hot path; like
# Event they skip frozen=True for speed and are values by convention.
@dataclass(slots=True)
class AllocResult:
    """What one cma_alloc call did."""

    area: str | None
    count: int
    align: int
    pfn: int | None  # first page on success, None on failure
    ret: int  # 0, -ENOMEM, -EBUSY, or -EINVAL for an early exit
    events: tuple[Event, ...]
    messages: tuple[str, ...]  # kernel log lines it printed

    @property
    def ok(self) -> bool:
        return self.pfn is not None


@dataclass(slots=True)
class ReleaseResult:
    area: str | None
    pfn: int
    count: int
    released: bool
    events: tuple[Event, ...]


@dataclass
class AreaCounters:
    """/sys/kernel/mm/cma/<name>/*, in pages (CONFIG_CMA_SYSFS)."""

    alloc_pages_success: int = 0
    alloc_pages_fail: int = 0
    release_pages_success: int = 0  # stays 0 on kernels without the counter (KernelFacts.counts_released_pages)


@dataclass
class Counters:
    """/proc/vmstat cma_alloc_success / cma_alloc_fail plus the per-area sysfs counters."""

    cma_alloc_success: int = 0
    cma_alloc_fail: int = 0
    areas: dict[str, AreaCounters] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        return {
            "vmstat": {"cma_alloc_success": self.cma_alloc_success, "cma_alloc_fail": self.cma_alloc_fail},
            "sysfs": {
                name: {
                    "alloc_pages_success": c.alloc_pages_success,
                    "alloc_pages_fail": c.alloc_pages_fail,
                    "release_pages_success": c.release_pages_success,
                }
                for name, c in self.areas.items()
            },
        }


class AreaState:
    """The mutable half of one area: its bitmap and its pinned pages."""

    __slots__ = ("area", "bitmap", "nbits", "pinned", "pinned_count")

    def __init__(self, area: CmaArea) -> None:
        self.area = area
        self.nbits = area.count >> area.order_per_bit
        self.bitmap = bytearray(self.nbits)
        # One byte per page, made on first pin: most runs never pin anything.
        self.pinned: bytearray | None = None
        self.pinned_count = 0

    def find_free_range(self, start: int, nbits: int, mask: int, offset: int) -> int:
        """bitmap_find_next_zero_area_off(); -1 where the kernel returns an index >= size.

        The kernel's answer is the lowest aligned bit whose window of ``nbits``
        is clear. After a window that holds set bits this search restarts past
        the *last* of them rather than the kernel's first: every aligned start
        up to there would overlap it, so the answer is the same in fewer steps.
        (tests/model/test_property.py checks this against a brute-force search.)
        """
        bitmap = self.bitmap
        size = self.nbits
        while True:
            # A single-byte find beat searching for a run of clear bits in
            # measurements (tests/model/bench_replay.py): memchr is hard to beat.
            index = bitmap.find(0, start, size)
            if index < 0:
                return -1
            if mask:
                index = ((index + offset + mask) & ~mask) - offset
            end = index + nbits
            if end > size:
                return -1
            last = bitmap.rfind(1, index, end)
            if last < 0:
                return index
            start = last + 1

    def is_busy(self, pfn: int, count: int) -> bool:
        if not self.pinned_count or self.pinned is None:
            return False
        lo = pfn - self.area.base_pfn
        return self.pinned.find(1, max(lo, 0), lo + count) >= 0

    def used_bits(self) -> int:
        return self.bitmap.count(1)

    def free_runs(self) -> list[tuple[int, int]]:
        """(first bit, bits) of each free run, in bitmap order."""
        runs: list[tuple[int, int]] = []
        bitmap, size, start = self.bitmap, self.nbits, 0
        while start < size:
            zero = bitmap.find(0, start)
            if zero < 0:
                break
            one = bitmap.find(1, zero)
            if one < 0:
                one = size
            runs.append((zero, one - zero))
            start = one
        return runs


_ONES_CACHE: dict[int, bytes] = {}


def _ones(n: int) -> bytes:
    ones = _ONES_CACHE.get(n)
    if ones is None:
        ones = b"\x01" * n
        if len(_ONES_CACHE) < 4096:
            _ONES_CACHE[n] = ones
    return ones


class CmaState:
    """Every area's allocator state plus the counters user space can read.

    Not thread-safe and not meant to be: the kernel serialises alloc_contig_range
    with one global mutex, and the model replays events one at a time.
    """

    def __init__(self, profile: KernelProfile, areas: tuple[CmaArea, ...]) -> None:
        self.profile = profile
        self.areas = areas
        self._state = {a.name: AreaState(a) for a in areas}
        self.counters = Counters(areas={a.name: AreaCounters() for a in areas})
        # Kernel facts read on every call, looked up once.
        facts = profile.facts
        self._trace = facts.has_tracepoints
        # 5.10: one nameless cma_alloc event at the end (pfn -1 on failure), no start or retry events.
        self._named = facts.tracepoints_name_area
        self._errorno = facts.finish_has_errorno
        self._early_counts = facts.early_exit_counts_failure
        self._warns = facts.warns_on_alloc_failure
        self._dump_free = facts.dumps_free_runs_on_failure
        self._pfn_offset = facts.align_offset_follows_pfn
        self._dry_enomem = facts.exhausted_search_returns_enomem
        self._retries = facts.retries_busy_ranges
        self._count_released = facts.counts_released_pages

    # --- lookups ------------------------------------------------------------

    def area(self, name: str) -> CmaArea:
        try:
            return self._state[name].area
        except KeyError:
            known = ", ".join(a.name for a in self.areas) or "none"
            raise ConfigError(f"no CMA area named {name!r} (areas: {known})") from None

    def state(self, name: str) -> AreaState:
        self.area(name)
        return self._state[name]

    def area_of_pfn(self, pfn: int) -> CmaArea | None:
        for area in self.areas:
            if area.base_pfn <= pfn < area.end_pfn:
                return area
        return None

    # --- meminfo ------------------------------------------------------------

    @property
    def total_pages(self) -> int:
        return sum(a.count for a in self.areas)

    @property
    def free_pages(self) -> int:
        """Pages whose bitmap bits are clear.

        The kernel's CmaFree counts MIGRATE_CMA pages on the buddy free lists,
        so it also drops when page cache or anonymous memory borrows CMA pages
        and reads low after a release while pages sit on per-CPU lists. Only
        the drop across an allocation compares exactly with this number.
        """
        total = 0
        for st in self._state.values():
            used = st.used_bits() << st.area.order_per_bit
            total += max(st.area.count - used, 0)
        return total

    @property
    def cma_total_kb(self) -> int:
        return self.total_pages * self.profile.page_size // 1024

    @property
    def cma_free_kb(self) -> int:
        return self.free_pages * self.profile.page_size // 1024

    # --- pins ----------------------------------------------------------------

    def pin(self, name: str, pfn: int, count: int) -> None:
        """Mark pages that alloc_contig_range cannot migrate (e.g. long-term pinned)."""
        st = self.state(name)
        area = st.area
        if count <= 0 or pfn < area.base_pfn or pfn + count > area.end_pfn:
            raise ConfigError(
                f"pin of {count} pages at pfn 0x{pfn:x} is outside area {name!r} (pfn 0x{area.base_pfn:x}..0x{area.end_pfn - 1:x})",
                hint="pin pages inside the area, e.g. its base_pfn plus an offset",
            )
        if st.pinned is None:
            st.pinned = bytearray(area.count)
        lo = pfn - area.base_pfn
        st.pinned[lo : lo + count] = _ones(count)
        st.pinned_count = st.pinned.count(1)

    def unpin(self, name: str, pfn: int, count: int) -> None:
        st = self.state(name)
        if st.pinned is None:
            return
        lo = max(pfn - st.area.base_pfn, 0)
        hi = min(pfn + count - st.area.base_pfn, st.area.count)
        if hi > lo:
            st.pinned[lo:hi] = bytes(hi - lo)
        st.pinned_count = st.pinned.count(1)

    # --- cma_alloc -----------------------------------------------------------

    def alloc(self, name: str | None, count: int, align: int, *, no_warn: bool = False) -> AllocResult:
        """cma_alloc(area, count, align, no_warn) as the profile's kernel runs it."""
        counters = self.counters
        st = self._state.get(name) if name is not None else None
        if st is None or st.area.count == 0 or count == 0:
            if name is not None and st is None:
                self.area(name)  # raises: the caller named an area that does not exist
            if self._early_counts:
                counters.cma_alloc_fail += 1
            return AllocResult(name, count, align, None, EINVAL, (), ())
        area = st.area
        area_name = area.name
        trace = self._trace
        named = self._named
        events: list[Event] = []
        if trace and named:
            events.append(Event("alloc_start", area_name, count, align))
        opb = area.order_per_bit
        mask = 0 if align <= opb else (1 << (align - opb)) - 1
        offset = (area.base_pfn & ((1 << align) - 1)) >> opb if self._pfn_offset else 0
        nbits = ((count + (1 << opb) - 1) >> opb) if opb else count
        if nbits > st.nbits:
            if self._early_counts:
                counters.cma_alloc_fail += 1
                counters.areas[area_name].alloc_pages_fail += count
            return AllocResult(name, count, align, None, ENOMEM, tuple(events), ())

        ret = ENOMEM
        pfn = NO_PFN
        page: int | None = None
        start = 0
        while True:
            bitmap_no = st.find_free_range(start, nbits, mask, offset)
            if bitmap_no < 0:
                if self._dry_enomem:
                    ret = ENOMEM
                break
            pfn = area.base_pfn + (bitmap_no << opb)
            if not st.pinned_count or not st.is_busy(pfn, count):
                st.bitmap[bitmap_no : bitmap_no + nbits] = _ones(nbits)
                ret = 0
                page = pfn
                break
            ret = EBUSY
            if not self._retries:
                break
            if trace and named:
                events.append(Event("busy_retry", area_name, count, align, pfn))
            start = bitmap_no + mask + 1

        if trace and named:
            events.append(Event("alloc_finish", area_name, count, align, pfn, page is None, ret if self._errorno else None))
        elif trace:
            events.append(Event("alloc_finish", "", count, align, pfn if page is not None else NO_PFN, page is None))
        if page is not None:
            counters.cma_alloc_success += 1
            counters.areas[area_name].alloc_pages_success += count
            return AllocResult(name, count, align, page, 0, tuple(events), ())
        counters.cma_alloc_fail += 1
        counters.areas[area_name].alloc_pages_fail += count
        messages: tuple[str, ...] = ()
        if not no_warn and self._warns:
            named_in = f" {area_name}:" if self.profile.facts.failure_names_area else ""
            messages = (f"cma: {self.profile.facts.alloc_function}:{named_in} alloc failed, req-size: {count} pages, ret: {ret}",)
            if self._dump_free:
                messages += (self._available_pages_line(st),)
        return AllocResult(name, count, align, None, ret, tuple(events), messages)

    def _available_pages_line(self, st: AreaState) -> str:
        # cma_debug_show_areas(): "<pages>@<first bit>" per free run, then the total.
        parts = []
        total = 0
        for bit, bits in st.free_runs():
            pages = bits << st.area.order_per_bit
            parts.append(f"{'+' if total else ''}{pages}@{bit}")
            total += pages
        return f"cma: number of available pages: {''.join(parts)}=> {total} free of {st.area.count} total pages"

    # --- cma_release ---------------------------------------------------------

    def release(self, name: str | None, pfn: int, count: int) -> ReleaseResult:
        """cma_release(area, page, count): false when pfn is outside the area; never checks ownership."""
        st = self._state.get(name) if name is not None else None
        if st is None or not (st.area.base_pfn <= pfn < st.area.end_pfn):
            return ReleaseResult(name, pfn, count, False, ())
        area = st.area
        opb = area.order_per_bit
        first = (pfn - area.base_pfn) >> opb
        nbits = ((count + (1 << opb) - 1) >> opb) if opb else count
        end = min(first + nbits, st.nbits)
        if end > first:
            st.bitmap[first:end] = bytes(end - first)
        if self._count_released:
            self.counters.areas[area.name].release_pages_success += count
        events: tuple[Event, ...] = ()
        if self._trace:
            events = (Event("release", area.name if self._named else "", count, None, pfn),)
        return ReleaseResult(name, pfn, count, True, events)
