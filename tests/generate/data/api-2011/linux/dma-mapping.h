/* Stub: the 2011 series' ARM dma-mapping additions (asm/dma-mapping.h). */
#ifndef STUB_LINUX_DMA_MAPPING_H
#define STUB_LINUX_DMA_MAPPING_H
#include <linux/device.h>
static inline void set_dev_cma_area(struct device *dev, struct cma *cma)
{
	dev->archdata.cma_area = cma;
}
#endif
