/* linux/arch/arm/mach-s5pv210/mach-aquila.c
 *
 * Stand-in for the Aquila board file of a 2011-2013 tree: includes in
 * groups, a machine init that adds the devices, and the machine record.
 */

#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/platform_device.h>

#include <asm/mach/arch.h>

#include <plat/devs.h>

static struct platform_device *aquila_devices[] __initdata = {
	&s5p_device_fimc0,
	&s5p_device_fimc1,
	&s5p_device_fimc2,
	&s5p_device_mfc,
};

int platform_add_devices(struct platform_device **devs, int num);

static void __init aquila_map_io(void)
{
	/* clocks and the UART would be set up here */
}

static void __init aquila_machine_init(void)
{
	platform_add_devices(aquila_devices, ARRAY_SIZE(aquila_devices));
}

MACHINE_START(AQUILA, "Aquila")
	.init_machine	= aquila_machine_init,
MACHINE_END

static void (*aquila_unused)(void) __attribute__((used)) = aquila_map_io;
