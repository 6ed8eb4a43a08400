/* The host port: runs the application and the model as an ordinary program, so that the
 * firmware's own C can be checked on the build machine (`verify --board host`, and the
 * application's protocol in the tests). The console is stdin/stdout.
 * Host "cycles" are nanoseconds of CLOCK_MONOTONIC: a notional 1 GHz clock. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "mcuforge_app.h"
#include "port.h"

static int stdin_closed;

int main(void)
{
    mcuforge_app_run();
}

void port_init(void)
{
}

void port_console_write(const char *text, size_t n)
{
    fwrite(text, 1, n, stdout);
    if (n > 0 && text[n - 1] == '\n') {
        fflush(stdout);
    }
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return 0;
    }
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec pause = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

int port_console_read(uint32_t timeout_ms)
{
    if (stdin_closed) {
        sleep_ms(timeout_ms);
        return PORT_CONSOLE_CLOSED;
    }
    struct pollfd input = {STDIN_FILENO, POLLIN, 0};
    int ready = poll(&input, 1, (int)timeout_ms);
    if (ready <= 0) {
        return PORT_NO_INPUT;
    }
    unsigned char c;
    ssize_t got = read(STDIN_FILENO, &c, 1);
    if (got == 1) {
        return c;
    }
    stdin_closed = 1;
    return PORT_CONSOLE_CLOSED;
}

uint64_t port_cycles(void)
{
    return monotonic_ns();
}

uint32_t port_millis(void)
{
    return (uint32_t)(monotonic_ns() / 1000000u);
}

int64_t port_stack_high_water(void)
{
    return -1;
}

int64_t port_heap_high_water(void)
{
    return -1;
}

void port_exit(int code)
{
    fflush(stdout);
    exit(code);
}

#if MCUFORGE_INPUTS_FROM_FILE

#define INPUTS_FILE "inputs.bin"

static FILE *inputs;

int port_inputs_open(uint32_t *total_bytes)
{
    inputs = fopen(INPUTS_FILE, "rb");
    if (inputs == NULL) {
        return -1;
    }
    if (fseek(inputs, 0, SEEK_END) != 0) {
        port_inputs_close();
        return -1;
    }
    long length = ftell(inputs);
    if (length < 0 || (unsigned long)length > UINT32_MAX || fseek(inputs, 0, SEEK_SET) != 0) {
        port_inputs_close();
        return -1;
    }
    *total_bytes = (uint32_t)length;
    return 0;
}

size_t port_inputs_read(void *dst, size_t n)
{
    return inputs == NULL ? 0 : fread(dst, 1, n, inputs);
}

void port_inputs_close(void)
{
    if (inputs != NULL) {
        fclose(inputs);
        inputs = NULL;
    }
}

#endif
