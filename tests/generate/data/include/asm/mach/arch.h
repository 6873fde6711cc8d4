/* Stub: the machine descriptor and MACHINE_START/MACHINE_END. */
#ifndef STUB_ASM_MACH_ARCH_H
#define STUB_ASM_MACH_ARCH_H
#define MACH_TYPE_AQUILA 2646
#define MACH_TYPE_GONI 3107
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
