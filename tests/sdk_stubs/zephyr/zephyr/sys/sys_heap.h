/* Stub of Zephyr's sys/sys_heap.h: declarations only (see ../../../README.md). */
#pragma once
#include <zephyr/kernel.h>
struct sys_memory_stats { size_t free_bytes; size_t allocated_bytes; size_t max_allocated_bytes; };
int sys_heap_runtime_stats_get(struct sys_heap *heap, struct sys_memory_stats *stats);
