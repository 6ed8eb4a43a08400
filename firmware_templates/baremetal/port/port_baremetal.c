/* The bare-metal port: console on the board's UART (or semihosting), inputs.bin and exit
 * through semihosting, cycles from SysTick or the DWT cycle counter. */
#include <stddef.h>
#include <stdint.h>

#include "mcuforge_board.h"
#include "port.h"
#include "semihosting.h"
#if defined(MCUFORGE_CONSOLE_UART_CMSDK)
#include "uart_cmsdk.h"
#endif

#define INPUTS_FILE "inputs.bin"

/* ---- console ---------------------------------------------------------------------------- */

#if defined(MCUFORGE_CONSOLE_SEMIHOSTING)
static int32_t console_handle = -1;
#endif

static void console_init(void)
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

/* ---- cycle counter ---------------------------------------------------------------------- */

#if defined(MCUFORGE_CYCLES_DWT)

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL_CYCCNTENA 1u
#define CORESIGHT_UNLOCK 0xC5ACCE55u

static uint32_t cycles_high;
static uint32_t cycles_last;

static void cycles_init(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = CORESIGHT_UNLOCK; /* needed on the Cortex-M7, ignored elsewhere */
    DWT_CYCCNT = 0u;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
}

/* CYCCNT is 32 bits; extending it in software holds as long as it is read at least once
 * per wrap (5 s at 800 MHz), which reading around every inference does. */
uint64_t port_cycles(void)
{
    uint32_t now = DWT_CYCCNT;
    if (now < cycles_last) {
        cycles_high++;
    }
    cycles_last = now;
    return ((uint64_t)cycles_high << 32) | now;
}

#else /* SysTick */

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_CSR_ENABLE 1u
#define SYST_CSR_TICKINT 2u
#define SYST_CSR_CLKSOURCE_CORE 4u
#define SYSTICK_MAX 0x00FFFFFFu
#define SYSTICK_PERIOD_BITS 24

static volatile uint32_t systick_wraps;

void SysTick_Handler(void)
{
    systick_wraps++;
}

static void cycles_init(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYSTICK_MAX;
    SYST_CVR = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE_CORE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    /* The reload from the cleared value is not counted as a wrap: wait until the counter
     * really runs from the reload value before anything is timed. */
    while (SYST_CVR == 0u) {
    }
    __asm__ volatile("cpsie i" : : : "memory");
}

/* SysTick counts down and wraps every 2^24 core-clock cycles; the interrupt counts wraps.
 * A wrap between the two reads of the count is caught by reading it again. */
uint64_t port_cycles(void)
{
    uint32_t wraps;
    uint32_t current;
    do {
        wraps = systick_wraps;
        current = SYST_CVR;
    } while (wraps != systick_wraps);
    return ((uint64_t)wraps << SYSTICK_PERIOD_BITS) + (SYSTICK_MAX - current);
}

#endif

/* ---- inputs.bin ------------------------------------------------------------------------- */

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

/* ---- life cycle ------------------------------------------------------------------------- */

void port_init(void)
{
    console_init();
    cycles_init();
}

void port_exit(int code)
{
    semihosting_exit(code);
}

/* ---- heap for the C library (malloc), bounded by the linker script's .heap section ------- */

extern char __mcuforge_heap_start[];
extern char __mcuforge_heap_end[];

void *_sbrk(ptrdiff_t increment)
{
    static char *brk = __mcuforge_heap_start;
    if (increment > __mcuforge_heap_end - brk || increment < __mcuforge_heap_start - brk) {
        return (void *)-1;
    }
    char *previous = brk;
    brk += increment;
    return previous;
}
