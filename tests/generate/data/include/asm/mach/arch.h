/* Stub: the machine descriptor and MACHINE_START/MACHINE_END. */
#ifndef STUB_ASM_MACH_ARCH_H
#define STUB_ASM_MACH_ARCH_H
/* Numbers from arch/arm/tools/mach-types. */
#define MACH_TYPE_AQUILA 2676
#define MACH_TYPE_GONI 2862
#define MACH_TYPE_MX53_LOCO 3273
struct machine_desc {
	unsigned int nr;
	const char *name;
	void (*reserve)(void);
	void (*init_machine)(void);
};
#define MACHINE_START(_type, _name)				\
static const struct machine_desc __mach_desc_##_type		\
	__attribute__((used, section(".arch.info.init"))) = {	\
	.nr = MACH_TYPE_##_type,				\
	.name = _name,
#define MACHINE_END };
#endif
