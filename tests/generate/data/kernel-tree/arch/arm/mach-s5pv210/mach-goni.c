/* linux/arch/arm/mach-s5pv210/mach-goni.c
 *
 * Stand-in for a board file that already has a .reserve hook reserving MFC
 * memory, as 3.5-era Samsung boards did.
 */

#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/platform_device.h>

#include <asm/mach/arch.h>

#include <plat/devs.h>
#include <plat/mfc.h>

static void __init goni_machine_init(void)
{
	/* devices are added here */
}

static void __init goni_reserve(void)
{
	s5p_mfc_reserve_mem(0x43000000, 8 << 20, 0x51000000, 8 << 20);
}

MACHINE_START(GONI, "GONI")
	.init_machine	= goni_machine_init,
	.reserve	= &goni_reserve,
MACHINE_END
