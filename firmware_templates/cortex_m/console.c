/* The console: the board's UART when mcuforge has a driver for it, semihosting otherwise. */
#include <stddef.h>
#include <stdint.h>

#include "cortex_m.h"
#include "mcuforge_board.h"
#include "port.h"
#include "semihosting.h"
#if defined(MCUFORGE_CONSOLE_UART_CMSDK)
#include "uart_cmsdk.h"
#endif

#if defined(MCUFORGE_CONSOLE_SEMIHOSTING)
static int32_t console_handle = -1;
#endif

void console_init(void)
{
#if defined(MCUFORGE_CONSOLE_UART_CMSDK)
    uart_cmsdk_init(MCUFORGE_UART_BASE, MCUFORGE_UART_BAUD_DIVISOR);
#elif defined(MCUFORGE_CONSOLE_SEMIHOSTING)
    console_handle = semihosting_open(":tt", SEMIHOSTING_MODE_W);
#endif
}

void port_console_write(const char *text, size_t n)
{
#if defined(MCUFORGE_CONSOLE_UART_CMSDK)
    uart_cmsdk_write(MCUFORGE_UART_BASE, text, n);
#elif defined(MCUFORGE_CONSOLE_SEMIHOSTING)
    if (console_handle >= 0) {
        semihosting_write(console_handle, text, n);
    }
#else
#error "mcuforge_board.h selects no console"
#endif
}

int console_poll_byte(void)
{
#if defined(MCUFORGE_CONSOLE_UART_CMSDK)
    return uart_cmsdk_poll(MCUFORGE_UART_BASE);
#else
    return -1;
#endif
}
