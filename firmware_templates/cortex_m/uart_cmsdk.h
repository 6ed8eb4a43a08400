/* Arm CMSDK APB UART: the console UART of the MPS2 and MPS3 boards (polled, no interrupts). */
#ifndef MCUFORGE_UART_CMSDK_H
#define MCUFORGE_UART_CMSDK_H

#include <stddef.h>
#include <stdint.h>

void uart_cmsdk_init(uintptr_t base, uint32_t baud_divisor);
void uart_cmsdk_write(uintptr_t base, const char *text, size_t n);
/* The received byte (0..255), or -1 when none is waiting. The UART holds one byte: poll it
 * often (bench mode does nothing else while it waits). */
int uart_cmsdk_poll(uintptr_t base);

#endif
