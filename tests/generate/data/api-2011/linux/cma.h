/* Stub: the June 2011 CMA series (PATCHv10) kernel API. */
#ifndef STUB_LINUX_CMA_H
#define STUB_LINUX_CMA_H
struct cma;
struct page;
/* Returns the reserved base, or a value IS_ERR_VALUE() is true for. */
unsigned long cma_reserve(unsigned long start, unsigned long size);
/* After slab is up; an ERR_PTR on failure. */
struct cma *cma_create(unsigned long start, unsigned long size);
void cma_destroy(struct cma *cma);
struct page *cm_alloc(struct cma *cma, int count, unsigned int order);
void cm_free(struct cma *cma, struct page *pages, int count);
#endif
