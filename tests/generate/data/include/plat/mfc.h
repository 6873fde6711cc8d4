/* Stub: Samsung's MFC reservation helper (3.5 to 5.9): right port first. */
#ifndef STUB_PLAT_MFC_H
#define STUB_PLAT_MFC_H
#include <linux/types.h>
void s5p_mfc_reserve_mem(phys_addr_t rbase, unsigned int rsize,
			 phys_addr_t lbase, unsigned int lsize);
#endif
