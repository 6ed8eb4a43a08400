/* The port: what the application needs from the platform underneath it.
 *
 * mcuforge_app.c is the same on every platform; one port file per platform (bare metal,
 * host, an RTOS) implements these functions. */
#ifndef MCUFORGE_PORT_H
#define MCUFORGE_PORT_H

#include <stddef.h>
#include <stdint.h>

/* Bring up the console and the cycle counter. Called once, first. */
void port_init(void);

/* Write n bytes to the console. Blocks until they are accepted. */
void port_console_write(const char *text, size_t n);

/* The input vector file (inputs.bin), read front to back.
 * port_inputs_open returns 0 and the file size in *total_bytes, or non-zero when the file
 * cannot be opened. port_inputs_read returns the number of bytes read (less than n only at
 * the end of the file or on an error). */
int port_inputs_open(uint32_t *total_bytes);
size_t port_inputs_read(void *dst, size_t n);
void port_inputs_close(void);

/* A free-running cycle counter in core-clock cycles. Only differences are meaningful. */
uint64_t port_cycles(void);

/* End the program with an exit code (0 = success). Never returns. */
void port_exit(int code) __attribute__((noreturn));

#endif
