/* The ESP-IDF port: app_main() starts the application in its own FreeRTOS task, pinned to one
 * core so that the cycle counter (CCOUNT, per core) reads consistently. The console is the
 * console UART, read through the UART driver's receive buffer. */
#include <stddef.h>
#include <stdint.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_heap_caps.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

#include "mcuforge_app.h"
#include "port.h"

#define CONSOLE_UART CONFIG_ESP_CONSOLE_UART_NUM
#define CONSOLE_RX_BUFFER_BYTES 2048
#define APP_STACK_BYTES MCUFORGE_APP_STACK_BYTES
#define APP_PRIORITY 5
#define APP_CORE (portNUM_PROCESSORS - 1)

static uint32_t cycles_high;
static uint32_t cycles_last;

static void app_task(void *argument)
{
    (void)argument;
    mcuforge_app_run();
}

void app_main(void)
{
    xTaskCreatePinnedToCore(app_task, "mcuforge", APP_STACK_BYTES, NULL, APP_PRIORITY, NULL, APP_CORE);
}

void port_init(void)
{
    if (!uart_is_driver_installed(CONSOLE_UART)) {
        uart_driver_install(CONSOLE_UART, CONSOLE_RX_BUFFER_BYTES, 0, 0, NULL, 0);
    }
}

void port_console_write(const char *text, size_t n)
{
    uart_write_bytes(CONSOLE_UART, text, n);
}

int port_console_read(uint32_t timeout_ms)
{
    uint8_t c;
    if (uart_read_bytes(CONSOLE_UART, &c, 1, pdMS_TO_TICKS(timeout_ms)) == 1) {
        return c;
    }
    return PORT_NO_INPUT;
}

/* CCOUNT is 32 bits (17.9 s at 240 MHz); extended here as it is read around every inference. */
uint64_t port_cycles(void)
{
    uint32_t now = (uint32_t)esp_cpu_get_cycle_count();
    if (now < cycles_last) {
        cycles_high++;
    }
    cycles_last = now;
    return ((uint64_t)cycles_high << 32) | now;
}

uint32_t port_millis(void)
{
    return (uint32_t)xTaskGetTickCount() * (uint32_t)portTICK_PERIOD_MS;
}

/* ESP-IDF counts task stacks in bytes. */
int64_t port_stack_high_water(void)
{
    return (int64_t)APP_STACK_BYTES - (int64_t)uxTaskGetStackHighWaterMark(NULL);
}

int64_t port_heap_high_water(void)
{
    return (int64_t)heap_caps_get_total_size(MALLOC_CAP_DEFAULT) - (int64_t)heap_caps_get_minimum_free_size(MALLOC_CAP_DEFAULT);
}

void port_exit(int code)
{
    (void)code; /* nothing to return to on a board: the task stops here */
    for (;;) {
        vTaskSuspend(NULL);
    }
}
