/*
 * Host harness for the generated board-file C: it stands in for the kernel
 * around the machine record, runs .reserve and .init_machine as the ARM boot
 * code would, and prints every CMA call and every device's area, one per
 * line, for the test to compare with the plan.
 *
 * Build: gcc -I api-<gen> -I include -DGENERATED='"file.c"' -DMACHINE=AQUILA [-DEXTRA_DEVICES=...]
 *        -DDYNAMIC_BASE=0x56000000 harness.c
 * DYNAMIC_BASE is where a "place anywhere" reservation lands (the plan's base).
 */
#include <stdarg.h>
#include <stdio.h>

#include <linux/kernel.h>
#include <linux/platform_device.h>

struct platform_device s5p_device_fimc0 = { .name = "fimc0" };
struct platform_device s5p_device_fimc1 = { .name = "fimc1" };
struct platform_device s5p_device_fimc2 = { .name = "fimc2" };
struct platform_device s5p_device_jpeg = { .name = "jpeg" };
struct platform_device s5p_device_mfc = { .name = "mfc" };
struct platform_device s5p_device_mfc_l = { .name = "mfc_l" };
struct platform_device s5p_device_mfc_r = { .name = "mfc_r" };

/*
 * Another machine's platform devices: -DEXTRA_DEVICES='X(vpu_device, "vpu") ...'
 * defines each and lists it with the others.
 */
#ifdef EXTRA_DEVICES
#define X(sym, label) struct platform_device sym = { .name = label };
EXTRA_DEVICES
#undef X
#define X(sym, label) &sym,
#else
#define EXTRA_DEVICES
#endif

static struct platform_device *all_devices[] = {
	&s5p_device_fimc0, &s5p_device_fimc1, &s5p_device_fimc2,
	&s5p_device_jpeg, &s5p_device_mfc, &s5p_device_mfc_l, &s5p_device_mfc_r,
	EXTRA_DEVICES
};

static const char *dev_name(const struct device *dev)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(all_devices); i++)
		if (&all_devices[i]->dev == dev)
			return all_devices[i]->name;
	return dev ? "?" : "NULL";
}

int printk(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	printf("printk ");
	n = vprintf(fmt, ap);
	va_end(ap);
	return n;
}

#ifdef API_2011
struct cma {
	unsigned long start, size;
};
static struct cma contexts[16];
static unsigned int n_contexts;

unsigned long cma_reserve(unsigned long start, unsigned long size)
{
	printf("cma_reserve start=%#lx size=%#lx\n", start, size);
	return start ? start : (unsigned long)DYNAMIC_BASE;
}

struct cma *cma_create(unsigned long start, unsigned long size)
{
	struct cma *cma = &contexts[n_contexts++];

	printf("cma_create start=%#lx size=%#lx\n", start, size);
	cma->start = start;
	cma->size = size;
	return cma;
}
#else
int dma_declare_contiguous(struct device *dev, unsigned long size,
			   phys_addr_t base, phys_addr_t limit)
{
	printf("dma_declare_contiguous dev=%s size=%#lx base=%#lx limit=%#lx\n",
	       dev_name(dev), size, (unsigned long)base, (unsigned long)limit);
	return 0;
}

void dma_contiguous_reserve(phys_addr_t limit)
{
	printf("dma_contiguous_reserve limit=%#lx\n", (unsigned long)limit);
}

void s5p_mfc_reserve_mem(phys_addr_t rbase, unsigned int rsize,
			 phys_addr_t lbase, unsigned int lsize)
{
	printf("s5p_mfc_reserve_mem rbase=%#lx rsize=%#x lbase=%#lx lsize=%#x\n",
	       (unsigned long)rbase, rsize, (unsigned long)lbase, lsize);
}
#endif

int platform_add_devices(struct platform_device **devs, int num)
{
	printf("platform_add_devices %d\n", num);
	return 0;
}

#include GENERATED

#define DESC_(m) __mach_desc_##m
#define DESC(m) DESC_(m)

int main(void)
{
	unsigned int i;

	printf("machine %s\n", DESC(MACHINE).name);
	if (DESC(MACHINE).reserve)
		DESC(MACHINE).reserve();
	DESC(MACHINE).init_machine();
#ifdef API_2011
	for (i = 0; i < ARRAY_SIZE(all_devices); i++) {
		struct cma *cma = all_devices[i]->dev.archdata.cma_area;

		if (cma)
			printf("device %s area start=%#lx size=%#lx\n",
			       all_devices[i]->name, cma->start, cma->size);
	}
#else
	(void)i;
#endif
	return 0;
}
