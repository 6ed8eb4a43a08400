/* The CPU's own cycle counter: DWT->CYCCNT on Arm Cortex-M (M3 and up), CCOUNT on Xtensa.
 * Both are 32 bits; cpu_cycles_read() extends them to 64 bits in software, which holds as long
 * as it is called at least once per wrap (5 s at 800 MHz, 17 s at 240 MHz): reading around
 * every inference does that. Include this header in one file only. */
#ifndef MCUFORGE_CPU_CYCLES_H
#define MCUFORGE_CPU_CYCLES_H

#include <stdint.h>

#if defined(__arm__)

#define MCUFORGE_DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define MCUFORGE_DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define MCUFORGE_DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define MCUFORGE_DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)
#define MCUFORGE_DEMCR_TRCENA (1u << 24)
#define MCUFORGE_DWT_CTRL_CYCCNTENA 1u
#define MCUFORGE_CORESIGHT_UNLOCK 0xC5ACCE55u

static inline void cpu_cycles_init(void)
{
    MCUFORGE_DEMCR |= MCUFORGE_DEMCR_TRCENA;
    MCUFORGE_DWT_LAR = MCUFORGE_CORESIGHT_UNLOCK; /* needed on the Cortex-M7, ignored elsewhere */
    MCUFORGE_DWT_CYCCNT = 0u;
    MCUFORGE_DWT_CTRL |= MCUFORGE_DWT_CTRL_CYCCNTENA;
}

static inline uint32_t cpu_cycles_read32(void)
{
    return MCUFORGE_DWT_CYCCNT;
}

#elif defined(__XTENSA__)

static inline void cpu_cycles_init(void)
{
    /* CCOUNT always runs. */
}

static inline uint32_t cpu_cycles_read32(void)
{
    uint32_t count;
    __asm__ volatile("rsr %0, ccount" : "=a"(count));
    return count;
}

#else
#error "cpu_cycles.h knows the cycle counters of Arm Cortex-M and Xtensa only"
#endif

static uint32_t cpu_cycles_high;
static uint32_t cpu_cycles_last;

static inline uint64_t cpu_cycles_read(void)
{
    uint32_t now = cpu_cycles_read32();
    if (now < cpu_cycles_last) {
        cpu_cycles_high++;
    }
    cpu_cycles_last = now;
    return ((uint64_t)cpu_cycles_high << 32) | now;
}

#endif
