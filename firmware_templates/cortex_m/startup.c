/* Start-up code for Arm Cortex-M: vector table, reset and fault handlers.
 * Symbols named __mcuforge_* come from the generated linker script (linker.ld). */
#include <stdint.h>

#include "cortex_m.h"
#include "mcuforge_board.h"
#include "port.h"

extern uint32_t __mcuforge_stack_top[];
extern uint32_t __mcuforge_stack_limit[];
extern uint32_t __mcuforge_data_load[];
extern uint32_t __mcuforge_data_start[];
extern uint32_t __mcuforge_data_end[];
extern uint32_t __mcuforge_bss_start[];
extern uint32_t __mcuforge_bss_end[];
extern uint32_t __mcuforge_arena_start[];
extern uint32_t __mcuforge_arena_end[];

typedef void (*vector_entry)(void);
extern vector_entry __mcuforge_init_array_start[];
extern vector_entry __mcuforge_init_array_end[];

void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void);
void Default_Handler(void);
/* An RTOS port defines these (FreeRTOSConfig.h maps FreeRTOS's handlers onto them). */
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
#if defined(MCUFORGE_ETHOSU_IRQ)
void mcuforge_npu_irq_handler(void) __attribute__((weak, alias("Default_Handler")));
#endif
void mcuforge_fault_report(uint32_t exc_return, uint32_t pc, uint32_t lr) __attribute__((noreturn, used));

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define CPACR_CP10_CP11_FULL_ACCESS (0xFu << 20)

enum { EXIT_FAULT = 4 };

int main(void);

/* System exceptions, and the NPU's interrupt when the build names it (MCUFORGE_ETHOSU_IRQ):
 * the application enables no other peripheral interrupt. */
#if defined(MCUFORGE_ETHOSU_IRQ)
#define VECTOR_COUNT (16 + MCUFORGE_ETHOSU_IRQ + 1)
#else
#define VECTOR_COUNT 16
#endif

__attribute__((section(".vectors"), used)) const vector_entry mcuforge_vectors[VECTOR_COUNT] = {
    (vector_entry)(uintptr_t)__mcuforge_stack_top,
    Reset_Handler,
    Default_Handler,   /* NMI */
    Fault_Handler,     /* HardFault */
    Fault_Handler,     /* MemManage */
    Fault_Handler,     /* BusFault */
    Fault_Handler,     /* UsageFault */
    Fault_Handler,     /* SecureFault (Armv8-M) */
    0,
    0,
    0,
    SVC_Handler,
    Default_Handler,   /* DebugMonitor */
    0,
    PendSV_Handler,
    SysTick_Handler,
#if defined(MCUFORGE_ETHOSU_IRQ)
    [16 ... VECTOR_COUNT - 1] = Default_Handler,
    [16 + MCUFORGE_ETHOSU_IRQ] = mcuforge_npu_irq_handler,
#endif
};

static void copy_words(uint32_t *dst, const uint32_t *src, const uint32_t *dst_end)
{
    while (dst < dst_end) {
        *dst++ = *src++;
    }
}

static void zero_words(uint32_t *dst, const uint32_t *dst_end)
{
    while (dst < dst_end) {
        *dst++ = 0u;
    }
}

/* Kept out of line so that no FPU or MVE instruction the compiler might choose for these
 * loops can run before Reset_Handler has enabled the coprocessors. */
__attribute__((noinline)) static void initialise_memory(void)
{
    copy_words(__mcuforge_data_start, __mcuforge_data_load, __mcuforge_data_end);
    zero_words(__mcuforge_bss_start, __mcuforge_bss_end);
    /* The arena is NOLOAD, but C promises zeroed statics, and the model may rely on it. */
    zero_words(__mcuforge_arena_start, __mcuforge_arena_end);
}

void Reset_Handler(void)
{
#if MCUFORGE_HAS_MSPLIM
    __asm__ volatile("msr msplim, %0" : : "r"(__mcuforge_stack_limit));
#endif
#if MCUFORGE_ENABLE_FPU
    SCB_CPACR |= CPACR_CP10_CP11_FULL_ACCESS;
    __asm__ volatile("dsb\n\tisb" : : : "memory");
#endif
    initialise_memory();
    stack_paint();
    /* C++ constructors (the TFLM engine's library may have some). */
    for (vector_entry *constructor = __mcuforge_init_array_start; constructor < __mcuforge_init_array_end; constructor++) {
        (*constructor)();
    }
    port_exit(main());
}

/* Reads the faulting PC and LR from the exception frame, then moves the stack pointer back
 * to the top: after a stack overflow there is no room left to call the reporter. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r3, msp\n\t"
        "mrsne r3, psp\n\t"
        "mov r0, lr\n\t"
        "ldr r1, [r3, #24]\n\t"
        "ldr r2, [r3, #20]\n\t"
        "ldr r3, =__mcuforge_stack_top\n\t"
        "msr msp, r3\n\t"
        "b mcuforge_fault_report\n\t"
        ".ltorg\n\t");
}

void Default_Handler(void)
{
    uint32_t exc_return;
    __asm__ volatile("mov %0, lr" : "=r"(exc_return));
    mcuforge_fault_report(exc_return, 0u, 0u);
}

static void write_text(const char *text)
{
    uint32_t n = 0;
    while (text[n] != '\0') {
        n++;
    }
    port_console_write(text, n);
}

static void write_hex32(uint32_t value)
{
    static const char nibbles[] = "0123456789abcdef";
    char text[10] = {'0', 'x'};
    for (int i = 0; i < 8; i++) {
        text[2 + i] = nibbles[(value >> (28 - 4 * i)) & 0xFu];
    }
    port_console_write(text, sizeof text);
}

void mcuforge_fault_report(uint32_t exc_return, uint32_t pc, uint32_t lr)
{
    static const char *const names[16] = {
        "Thread", "Reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault",
        "SecureFault", "Exception8", "Exception9", "Exception10", "SVCall", "DebugMonitor",
        "Exception13", "PendSV", "SysTick",
    };
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    write_text("{\"error\":\"");
    write_text(ipsr < 16u ? names[ipsr] : "unexpected interrupt");
    write_text(" pc=");
    write_hex32(pc);
    write_text(" lr=");
    write_hex32(lr);
    write_text(" exc_return=");
    write_hex32(exc_return);
    write_text(" cfsr=");
    write_hex32(SCB_CFSR);
    write_text(" hfsr=");
    write_hex32(SCB_HFSR);
    write_text("\"}\n");
    port_exit(EXIT_FAULT);
}
