/* The port: what the application needs from the platform underneath it.
 *
 * mcuforge_app.c is the same on every platform; one port per platform (bare metal, FreeRTOS,
 * Zephyr, ESP-IDF, the host) implements these functions. */
#ifndef MCUFORGE_PORT_H
#define MCUFORGE_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "mcuforge_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* port_console_read() results besides a byte (0..255). */
#define PORT_NO_INPUT (-1)       /* nothing arrived before the timeout */
#define PORT_CONSOLE_CLOSED (-2) /* nothing more can ever arrive (the host's stdin ended) */

/* Bring up the console, the cycle counter and the clock. Called once, first. */
void port_init(void);

/* Write n bytes to the console. Blocks until they are accepted. */
void port_console_write(const char *text, size_t n);

/* Wait at most timeout_ms for one byte from the console and return it, or PORT_NO_INPUT.
 * This is also how the application sleeps between inferences, so a port should let the core
 * idle (or other threads run) while it waits. timeout_ms = 0 only polls. */
int port_console_read(uint32_t timeout_ms);

/* A free-running cycle counter in core-clock cycles. Only differences are meaningful. */
uint64_t port_cycles(void);

/* Milliseconds since start-up (wraps after 49 days; only differences are used). */
uint32_t port_millis(void);

/* Bytes of the application thread's stack used so far, and the most heap ever allocated;
 * -1 where the platform cannot tell. */
int64_t port_stack_high_water(void);
int64_t port_heap_high_water(void);

/* End the program with an exit code (0 = success). Never returns. */
void port_exit(int code) __attribute__((noreturn));

#if MCUFORGE_INPUTS_FROM_FILE
/* The verify harness: input vectors from a file (inputs.bin), read front to back.
 * port_inputs_open returns 0 and the file size in *total_bytes, or non-zero when the file
 * cannot be opened. port_inputs_read returns the number of bytes read (less than n only at
 * the end of the file or on an error). */
int port_inputs_open(uint32_t *total_bytes);
size_t port_inputs_read(void *dst, size_t n);
void port_inputs_close(void);
#endif

#ifdef __cplusplus
}
#endif

#endif
