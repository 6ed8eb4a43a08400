/* High-water marks of the stack and the heap, and the heap itself (_sbrk for the C library's
 * malloc), bounded by the linker script's .stack and .heap sections. */
#include <stddef.h>
#include <stdint.h>

#include "cortex_m.h"

#define STACK_PAINT 0xA5A5A5A5u
/* Left unpainted below the stack pointer at the time of painting: the painter's own frame. */
#define STACK_PAINT_MARGIN_WORDS 16u

extern uint32_t __mcuforge_stack_limit[];
extern uint32_t __mcuforge_stack_top[];
extern char __mcuforge_heap_start[];
extern char __mcuforge_heap_end[];

static char *heap_break = __mcuforge_heap_start;
static char *heap_highest = __mcuforge_heap_start;

void *_sbrk(ptrdiff_t increment)
{
    if (increment > __mcuforge_heap_end - heap_break || increment < __mcuforge_heap_start - heap_break) {
        return (void *)-1;
    }
    char *previous = heap_break;
    heap_break += increment;
    if (heap_break > heap_highest) {
        heap_highest = heap_break;
    }
    return previous;
}

int64_t heap_used_bytes(void)
{
    return (int64_t)(heap_highest - __mcuforge_heap_start);
}

__attribute__((noinline)) void stack_paint(void)
{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *word = __mcuforge_stack_limit; word < sp - STACK_PAINT_MARGIN_WORDS; word++) {
        *word = STACK_PAINT;
    }
}

int64_t stack_used_bytes(void)
{
    const uint32_t *word = __mcuforge_stack_limit;
    while (word < __mcuforge_stack_top && *word == STACK_PAINT) {
        word++;
    }
    return (int64_t)((const char *)__mcuforge_stack_top - (const char *)word);
}
