/* The FreeRTOS port for Cortex-M: the application runs in one task; the console, the cycle
 * counter (DWT: FreeRTOS owns SysTick) and the start-up code are the bare-metal ones. */
#include <stddef.h>
#include <stdint.h>

#include "FreeRTOS.h"
#include "task.h"

#include "cortex_m.h"
#include "mcuforge_app.h"
#include "mcuforge_board.h"
#include "port.h"
#include "semihosting.h"

#define APP_STACK_WORDS (MCUFORGE_APP_STACK_BYTES / sizeof(StackType_t))
#define APP_PRIORITY (tskIDLE_PRIORITY + 1)

enum { EXIT_RTOS = 6 };

static void app_task(void *argument)
{
    (void)argument;
    mcuforge_app_run();
}

static void fail_early(const char *line)
{
    size_t n = 0;
    while (line[n] != '\0') {
        n++;
    }
    console_init();
    port_console_write(line, n);
    port_exit(EXIT_RTOS);
}

int main(void)
{
    if (xTaskCreate(app_task, "mcuforge", (configSTACK_DEPTH_TYPE)APP_STACK_WORDS, NULL, APP_PRIORITY, NULL) != pdPASS) {
        fail_early("{\"error\":\"FreeRTOS could not create the application task: raise configTOTAL_HEAP_SIZE\"}\n");
    }
    vTaskStartScheduler();
    fail_early("{\"error\":\"the FreeRTOS scheduler returned\"}\n");
    return EXIT_RTOS;
}

void port_init(void)
{
    console_init();
    cycles_init();
}

uint32_t port_millis(void)
{
    return (uint32_t)xTaskGetTickCount() * (uint32_t)portTICK_PERIOD_MS;
}

/* Sleeps a tick at a time between polls, so the core idles while the loop waits. */
int port_console_read(uint32_t timeout_ms)
{
    const TickType_t start = xTaskGetTickCount();
    const TickType_t limit = pdMS_TO_TICKS(timeout_ms);
    for (;;) {
        int c = console_poll_byte();
        if (c >= 0) {
            return c;
        }
        if ((TickType_t)(xTaskGetTickCount() - start) >= limit) {
            return PORT_NO_INPUT;
        }
        vTaskDelay(1);
    }
}

int64_t port_stack_high_water(void)
{
    UBaseType_t never_used = uxTaskGetStackHighWaterMark(NULL);
    return (int64_t)(APP_STACK_WORDS - never_used) * (int64_t)sizeof(StackType_t);
}

int64_t port_heap_high_water(void)
{
    return (int64_t)configTOTAL_HEAP_SIZE - (int64_t)xPortGetMinimumEverFreeHeapSize();
}

void port_exit(int code)
{
    taskDISABLE_INTERRUPTS();
#if MCUFORGE_EXIT_THROUGH_SEMIHOSTING
    semihosting_exit(code);
#else
    (void)code; /* nothing to return to on a board: stop here */
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}

void vApplicationStackOverflowHook(TaskHandle_t task, char *name)
{
    (void)task;
    (void)name;
    fail_early("{\"error\":\"stack overflow in the application task: raise the stack size (mcuforge build --stack-bytes)\"}\n");
}

void vApplicationMallocFailedHook(void)
{
    fail_early("{\"error\":\"FreeRTOS heap exhausted: raise configTOTAL_HEAP_SIZE\"}\n");
}
