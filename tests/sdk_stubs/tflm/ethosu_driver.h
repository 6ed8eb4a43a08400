/* Stub of the Ethos-U core driver's ethosu_driver.h: declarations only (see ../README.md). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
struct ethosu_driver { void *dev; };
int ethosu_init(struct ethosu_driver *drv, void *const base_address, const void *fast_memory,
                const size_t fast_memory_size, uint32_t secure_enable, uint32_t privilege_enable);
void ethosu_irq_handler(struct ethosu_driver *drv);
#ifdef __cplusplus
}
#endif
