"""DMA entry points: how a driver's dma_alloc_coherent() reaches cma_alloc.

Three paths, chosen by the kernel's :class:`DmaRoute` and, for
``CONTIGUOUS``, by the profile's ``arch``:

- ``CONTIGUOUS`` on ARM32 (3.5 to 6.12): the device's own area, else the
  default area; align = min(get_order(size), CONFIG_CMA_ALIGNMENT); no
  single-page bypass and no fallback: a failed cma_alloc fails the request.
  With no CMA area at all the buffer comes from normal pages.
- ``CONTIGUOUS`` on dma-direct (arm64): the device's own area without falling
  back to the default one, else nothing for a single page, else the default
  area; when CMA says no, alloc_pages() supplies the buffer. Both seen on
  Debian's 5.10, 6.1 and 6.12 arm64 (tests/data/kernel-matrix: l-single-page,
  one-page buffers never reach CMA; h-cmdline-size-16m, the buffer CMA
  refuses is granted all the same).
- ``CM_ALLOC`` (the 2011 series): cm_alloc(area, count, max(order, 8)) on the
  area the board file gave the device, and system pages when that fails or
  there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, assert_never

from cma_tool.model.area import AllocResult, CmaState
from cma_tool.model.boot import get_order
from cma_tool.model.events import Event
from cma_tool.model.profiles import DmaRoute

BufferSource = Literal["cma", "pages", "vmalloc"]


@dataclass(frozen=True)
class Device:
    """A DMA master as far as CMA cares."""

    name: str
    #: Its own CMA area (memory-region + of_reserved_mem_device_init(), or the
    #: 2011 set_dev_cma_area()); None means the default area.
    area: str | None = None
    #: False for a driver whose buffers never go through the DMA API (vb2-vmalloc).
    dma_capable: bool = True


@dataclass(frozen=True)
class DmaBuffer:
    device: str
    size: int  # bytes, page-aligned, as the allocator saw them
    source: BufferSource
    area: str | None = None
    pfn: int | None = None
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "size": self.size,
            "source": self.source,
            "area": self.area,
            "pfn": self.pfn,
            "count": self.count,
        }


@dataclass(frozen=True)
class DmaAllocResult:
    buffer: DmaBuffer | None  # None: dma_alloc_coherent returned NULL
    cma: AllocResult | None  # the cma_alloc call made on the way, if any

    @property
    def events(self) -> tuple[Event, ...]:
        return self.cma.events if self.cma else ()

    @property
    def messages(self) -> tuple[str, ...]:
        return self.cma.messages if self.cma else ()


def page_align(size: int, page_size: int) -> int:
    return (size + page_size - 1) & ~(page_size - 1)


def dma_alloc(state: CmaState, default_area: str | None, device: Device, size: int) -> DmaAllocResult:
    """dma_alloc_coherent(dev, size) with blocking allowed, as the profile's kernel does it."""
    profile = state.profile
    size = page_align(size, profile.page_size)
    count = size >> profile.page_shift
    order = get_order(size, profile.page_shift)
    if not device.dma_capable:
        return DmaAllocResult(DmaBuffer(device.name, size, "vmalloc"), None)
    if size == 0:
        return DmaAllocResult(None, None)

    order = max(order, profile.facts.dma_min_align_order)
    match profile.facts.dma_route:
        case DmaRoute.CM_ALLOC:
            area = device.area or default_area
            if area is None:
                return DmaAllocResult(DmaBuffer(device.name, size, "pages"), None)
            result = state.alloc(area, count, order)
            if result.ok:
                return DmaAllocResult(DmaBuffer(device.name, size, "cma", area, result.pfn, count), result)
            return DmaAllocResult(DmaBuffer(device.name, size, "pages"), result)
        case DmaRoute.CONTIGUOUS:
            return _contiguous(state, default_area, device, size, count, min(order, profile.cma_alignment))
        case _ as unhandled:
            assert_never(unhandled)


def _contiguous(state: CmaState, default_area: str | None, device: Device, size: int, count: int,
                align: int) -> DmaAllocResult:
    profile = state.profile
    if profile.arch == "arm32":
        area = device.area or default_area
        if area is None:
            return DmaAllocResult(DmaBuffer(device.name, size, "pages"), None)
        result = state.alloc(area, count, align)
        if result.ok:
            return DmaAllocResult(DmaBuffer(device.name, size, "cma", area, result.pfn, count), result)
        return DmaAllocResult(None, result)

    # dma-direct: dma_alloc_contiguous(), then alloc_pages() on NULL.
    if device.area is not None:
        area = device.area
    elif count <= 1 or default_area is None:
        return DmaAllocResult(DmaBuffer(device.name, size, "pages"), None)
    else:
        area = default_area
    result = state.alloc(area, count, align)
    if result.ok:
        return DmaAllocResult(DmaBuffer(device.name, size, "cma", area, result.pfn, count), result)
    return DmaAllocResult(DmaBuffer(device.name, size, "pages"), result)


def dma_free(state: CmaState, buffer: DmaBuffer) -> tuple[Event, ...]:
    """dma_free_coherent(): CMA buffers go back through cma_release, the rest to the buddy."""
    if buffer.source != "cma" or buffer.pfn is None:
        return ()
    return state.release(buffer.area, buffer.pfn, buffer.count).events
