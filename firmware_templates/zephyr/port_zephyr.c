/* The Zephyr port: the application runs in the main thread; the console is the devicetree's
 * zephyr,console UART, received by interrupt into a queue so that no byte is lost while the
 * thread sleeps between inferences. Cycles come from the CPU's own counter (DWT on Cortex-M,
 * CCOUNT on Xtensa), not from the system timer. */
#include <stddef.h>
#include <stdint.h>

#include <zephyr/device.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/sys_heap.h>

#include "cpu_cycles.h"
#include "mcuforge_app.h"
#include "port.h"

#define CONSOLE_QUEUE_BYTES 512

static const struct device *const console = DEVICE_DT_GET(DT_CHOSEN(zephyr_console));

K_MSGQ_DEFINE(console_input, 1, CONSOLE_QUEUE_BYTES, 1);

static void console_isr(const struct device *dev, void *user_data)
{
    ARG_UNUSED(user_data);
    if (!uart_irq_update(dev)) {
        return;
    }
    while (uart_irq_rx_ready(dev)) {
        uint8_t c;
        if (uart_fifo_read(dev, &c, 1) != 1) {
            break;
        }
        /* A full queue drops the byte: the host sees the bench line rejected and sends it again. */
        (void)k_msgq_put(&console_input, &c, K_NO_WAIT);
    }
}

int main(void)
{
    mcuforge_app_run();
    return 0;
}

void port_init(void)
{
    cpu_cycles_init();
    if (device_is_ready(console)) {
        uart_irq_callback_user_data_set(console, console_isr, NULL);
        uart_irq_rx_enable(console);
    }
}

void port_console_write(const char *text, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uart_poll_out(console, (unsigned char)text[i]);
    }
}

int port_console_read(uint32_t timeout_ms)
{
    uint8_t c;
    if (k_msgq_get(&console_input, &c, K_MSEC(timeout_ms)) == 0) {
        return c;
    }
    return PORT_NO_INPUT;
}

uint64_t port_cycles(void)
{
    return cpu_cycles_read();
}

uint32_t port_millis(void)
{
    return k_uptime_get_32();
}

int64_t port_stack_high_water(void)
{
    size_t unused = 0;
    struct k_thread *self = k_current_get();
    if (k_thread_stack_space_get(self, &unused) != 0) {
        return -1;
    }
    return (int64_t)(self->stack_info.size - unused);
}

int64_t port_heap_high_water(void)
{
#if defined(CONFIG_SYS_HEAP_RUNTIME_STATS) && CONFIG_HEAP_MEM_POOL_SIZE > 0
    /* The system heap behind k_malloc(). */
    extern struct k_heap _system_heap;
    struct sys_memory_stats stats;
    if (sys_heap_runtime_stats_get(&_system_heap.heap, &stats) != 0) {
        return -1;
    }
    return (int64_t)stats.max_allocated_bytes;
#else
    return -1;
#endif
}

void port_exit(int code)
{
    ARG_UNUSED(code); /* nothing to return to on a board: the thread stops here */
    for (;;) {
        k_sleep(K_FOREVER);
    }
}
