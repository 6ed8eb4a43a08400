/* The bare-metal port: no RTOS; the application runs in main() on the main stack.
 * Console, cycles, start-up and memory marks come from the Cortex-M support files; the exit
 * (under an emulator or a debugger) and the verify harness's inputs.bin go through semihosting. */
#include <stddef.h>
#include <stdint.h>

#include "cortex_m.h"
#include "mcuforge_app.h"
#include "mcuforge_board.h"
#include "port.h"
#include "semihosting.h"

#define CYCLES_PER_MS (MCUFORGE_CORE_CLOCK_HZ / 1000u)

int main(void)
{
    mcuforge_app_run();
}

void port_init(void)
{
    console_init();
    cycles_init();
    __asm__ volatile("cpsie i" : : : "memory");
}

uint32_t port_millis(void)
{
    return (uint32_t)(port_cycles() / CYCLES_PER_MS);
}

/* No scheduler to hand the time to: wait by polling the console and the cycle counter, which
 * also keeps the one-byte UART from overflowing while a bench vector streams in. (A board
 * with a low-power timer could sleep here instead.) */
int port_console_read(uint32_t timeout_ms)
{
    uint64_t deadline = port_cycles() + (uint64_t)timeout_ms * CYCLES_PER_MS;
    do {
        int c = console_poll_byte();
        if (c >= 0) {
            return c;
        }
    } while (port_cycles() < deadline);
    return PORT_NO_INPUT;
}

int64_t port_stack_high_water(void)
{
    return stack_used_bytes();
}

int64_t port_heap_high_water(void)
{
    return heap_used_bytes();
}

void port_exit(int code)
{
#if MCUFORGE_EXIT_THROUGH_SEMIHOSTING
    semihosting_exit(code);
#else
    (void)code; /* nothing to return to on a board: stop here */
    __asm__ volatile("cpsid i" : : : "memory");
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}

#if MCUFORGE_INPUTS_FROM_FILE

#define INPUTS_FILE "inputs.bin"

static int32_t inputs_handle = -1;

int port_inputs_open(uint32_t *total_bytes)
{
    inputs_handle = semihosting_open(INPUTS_FILE, SEMIHOSTING_MODE_RB);
    if (inputs_handle < 0) {
        return -1;
    }
    int32_t length = semihosting_flen(inputs_handle);
    if (length < 0) {
        port_inputs_close();
        return -1;
    }
    *total_bytes = (uint32_t)length;
    return 0;
}

size_t port_inputs_read(void *dst, size_t n)
{
    if (inputs_handle < 0) {
        return 0;
    }
    return semihosting_read(inputs_handle, dst, n);
}

void port_inputs_close(void)
{
    if (inputs_handle >= 0) {
        semihosting_close(inputs_handle);
        inputs_handle = -1;
    }
}

#endif
