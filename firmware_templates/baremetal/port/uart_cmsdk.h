/* Arm CMSDK APB UART (transmit only): the console UART of the MPS2 and MPS3 boards. */
#ifndef MCUFORGE_UART_CMSDK_H
#define MCUFORGE_UART_CMSDK_H

#include <stddef.h>
#include <stdint.h>

void uart_cmsdk_init(uintptr_t base, uint32_t baud_divisor);
void uart_cmsdk_write(uintptr_t base, const char *text, size_t n);

#endif
