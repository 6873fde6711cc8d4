/* Stub: struct device with the ARM archdata the 2011 series added. */
#ifndef STUB_LINUX_DEVICE_H
#define STUB_LINUX_DEVICE_H
struct cma;
struct dev_archdata {
	struct cma *cma_area;
};
struct device {
	const char *init_name;
	struct dev_archdata archdata;
};
#endif
