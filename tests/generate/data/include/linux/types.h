/* Stub: the types the board-file code uses (ARM32 without LPAE). */
#ifndef STUB_LINUX_TYPES_H
#define STUB_LINUX_TYPES_H
typedef unsigned int u32;
typedef unsigned long long u64;
typedef u32 phys_addr_t;
typedef __SIZE_TYPE__ size_t;
#ifndef NULL
#define NULL ((void *)0)
#endif
#endif
