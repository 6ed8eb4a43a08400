/* What the Cortex-M support files (start-up, console, cycle counter, memory marks) give the
 * bare-metal and FreeRTOS ports. */
#ifndef MCUFORGE_CORTEX_M_H
#define MCUFORGE_CORTEX_M_H

#include <stddef.h>
#include <stdint.h>

/* console.c: the board's UART, or semihosting. */
void console_init(void);
/* One received byte (0..255), or -1 when none is waiting. A semihosting console has no
 * non-blocking read, so there it always returns -1 (output only). */
int console_poll_byte(void);

/* cycles.c: DWT->CYCCNT on silicon, SysTick where the DWT is not modelled (QEMU). */
void cycles_init(void);

/* memory_marks.c: how much of the stack and of the heap was ever used. The stack is painted
 * at reset (startup.c) and the first word still holding the paint marks the deepest use. */
void stack_paint(void);
int64_t stack_used_bytes(void);
int64_t heap_used_bytes(void);

#endif
