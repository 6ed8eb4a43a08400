/* The cycle counter: DWT->CYCCNT on silicon; SysTick where the DWT is not modelled (QEMU 7.2
 * reads CYCCNT as 0). An RTOS that owns SysTick (FreeRTOS) always gets the DWT. */
#include <stdint.h>

#include "cortex_m.h"
#include "mcuforge_board.h"
#include "port.h"

#if defined(MCUFORGE_CYCLES_DWT)

#include "cpu_cycles.h"

void cycles_init(void)
{
    cpu_cycles_init();
}

uint64_t port_cycles(void)
{
    return cpu_cycles_read();
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

void cycles_init(void)
{
    SYST_CSR = 0u;
    SYST_RVR = SYSTICK_MAX;
    SYST_CVR = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE_CORE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    /* The reload from the cleared value is not counted as a wrap: wait until the counter
     * really runs from the reload value before anything is timed. */
    while (SYST_CVR == 0u) {
    }
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
