/* Stub: error values in pointers and unsigned longs, as include/linux/err.h. */
#ifndef STUB_LINUX_ERR_H
#define STUB_LINUX_ERR_H
#define MAX_ERRNO 4095
#define IS_ERR_VALUE(x) ((unsigned long)(x) >= (unsigned long)-MAX_ERRNO)
static inline long IS_ERR_OR_NULL(const void *ptr)
{
	return !ptr || IS_ERR_VALUE((unsigned long)ptr);
}
#endif
