/* Stub: the Linux 3.5 to 5.9 contiguous DMA API (drivers/base/dma-contiguous.c). */
#ifndef STUB_LINUX_DMA_CONTIGUOUS_H
#define STUB_LINUX_DMA_CONTIGUOUS_H
#include <linux/types.h>
struct device;
void dma_contiguous_reserve(phys_addr_t limit);
int dma_declare_contiguous(struct device *dev, unsigned long size,
			   phys_addr_t base, phys_addr_t limit);
#endif
