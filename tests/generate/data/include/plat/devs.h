/* Stub: the S5PV210 platform devices board files refer to. */
#ifndef STUB_PLAT_DEVS_H
#define STUB_PLAT_DEVS_H
#include <linux/platform_device.h>
extern struct platform_device s5p_device_fimc0;
extern struct platform_device s5p_device_fimc1;
extern struct platform_device s5p_device_fimc2;
extern struct platform_device s5p_device_jpeg;
extern struct platform_device s5p_device_mfc;
extern struct platform_device s5p_device_mfc_l;
extern struct platform_device s5p_device_mfc_r;
#endif
