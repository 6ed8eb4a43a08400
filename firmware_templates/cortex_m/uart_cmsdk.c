/* Arm CMSDK APB UART, as documented in the Cortex-M System Design Kit TRM. */
#include "uart_cmsdk.h"

typedef struct {
    volatile uint32_t data;      /* 0x00 */
    volatile uint32_t state;     /* 0x04: bit 0 TX buffer full, bit 1 RX buffer full */
    volatile uint32_t ctrl;      /* 0x08: bit 0 TX enable, bit 1 RX enable */
    volatile uint32_t intstatus; /* 0x0C */
    volatile uint32_t bauddiv;   /* 0x10: at least 16 */
} cmsdk_uart_regs;

#define UART_STATE_TX_FULL 0x1u
#define UART_STATE_RX_FULL 0x2u
#define UART_CTRL_TX_ENABLE 0x1u
#define UART_CTRL_RX_ENABLE 0x2u
#define UART_MIN_BAUD_DIVISOR 16u

void uart_cmsdk_init(uintptr_t base, uint32_t baud_divisor)
{
    cmsdk_uart_regs *uart = (cmsdk_uart_regs *)base;
    uart->bauddiv = baud_divisor < UART_MIN_BAUD_DIVISOR ? UART_MIN_BAUD_DIVISOR : baud_divisor;
    uart->ctrl = UART_CTRL_TX_ENABLE | UART_CTRL_RX_ENABLE;
}

void uart_cmsdk_write(uintptr_t base, const char *text, size_t n)
{
    cmsdk_uart_regs *uart = (cmsdk_uart_regs *)base;
    for (size_t i = 0; i < n; i++) {
        while ((uart->state & UART_STATE_TX_FULL) != 0u) {
        }
        uart->data = (uint8_t)text[i];
    }
}

int uart_cmsdk_poll(uintptr_t base)
{
    cmsdk_uart_regs *uart = (cmsdk_uart_regs *)base;
    if ((uart->state & UART_STATE_RX_FULL) == 0u) {
        return -1;
    }
    return (int)(uart->data & 0xFFu);
}
