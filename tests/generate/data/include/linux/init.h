/* Stub: section markers are plain attributes here. */
#ifndef STUB_LINUX_INIT_H
#define STUB_LINUX_INIT_H
#define __init __attribute__((section(".init.text")))
#define __initdata __attribute__((section(".init.data")))
#endif
