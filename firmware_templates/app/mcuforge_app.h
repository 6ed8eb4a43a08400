/* The mcuforge application: the same on every RTOS. A port starts it from its main thread or
 * task with mcuforge_app_run(), which calls port_init() first and does not return. */
#ifndef MCUFORGE_APP_H
#define MCUFORGE_APP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void mcuforge_app_run(void) __attribute__((noreturn));

/* The input for the next inference of the loop (see input_source.c). */
void mcuforge_input_fill(uint8_t *buffer, uint32_t bytes, uint32_t iteration);

#ifdef __cplusplus
}
#endif

#endif
