/* Stub: printk with format checking, pr_err, ARRAY_SIZE. */
#ifndef STUB_LINUX_KERNEL_H
#define STUB_LINUX_KERNEL_H
#include <linux/types.h>
int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define KERN_ERR "<3>"
#define KERN_INFO "<6>"
#define pr_err(fmt, ...) printk(KERN_ERR fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...) printk(KERN_INFO fmt, ##__VA_ARGS__)
#define ARRAY_SIZE(arr) (sizeof(arr) / sizeof((arr)[0]))
#endif
