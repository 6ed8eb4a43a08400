/* Stub of Zephyr's kernel.h: declarations only (see ../../README.md). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <zephyr/device.h>
#define CONFIG_HEAP_MEM_POOL_SIZE 4096
#define CONFIG_SYS_HEAP_RUNTIME_STATS 1
typedef struct { int64_t ticks; } k_timeout_t;
#define K_MSEC(ms) ((k_timeout_t){(ms)})
#define K_NO_WAIT ((k_timeout_t){0})
#define K_FOREVER ((k_timeout_t){-1})
struct k_msgq { char *buffer; };
#define K_MSGQ_DEFINE(name, msg_size, max_msgs, align) \
    static char __stub_##name##_buffer[(msg_size) * (max_msgs)]; struct k_msgq name = {__stub_##name##_buffer}
int k_msgq_put(struct k_msgq *msgq, const void *data, k_timeout_t timeout);
int k_msgq_get(struct k_msgq *msgq, void *data, k_timeout_t timeout);
struct _thread_stack_info { uintptr_t start; size_t size; size_t delta; };
struct k_thread { struct _thread_stack_info stack_info; };
typedef struct k_thread *k_tid_t;
k_tid_t k_current_get(void);
int k_thread_stack_space_get(const struct k_thread *thread, size_t *unused_ptr);
int32_t k_sleep(k_timeout_t timeout);
uint32_t k_uptime_get_32(void);
struct sys_heap { void *heap; };
struct k_heap { struct sys_heap heap; };
