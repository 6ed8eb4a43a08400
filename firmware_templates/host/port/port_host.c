/* The host port: runs the application and the model as an ordinary program, so that the
 * firmware's own C can be checked on the build machine (`verify --board host`).
 * Host "cycles" are nanoseconds of CLOCK_MONOTONIC: a notional 1 GHz clock. */
#define _POSIX_C_SOURCE 199309L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "port.h"

#define INPUTS_FILE "inputs.bin"

static FILE *inputs;

void port_init(void)
{
}

void port_console_write(const char *text, size_t n)
{
    fwrite(text, 1, n, stdout);
}

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

uint64_t port_cycles(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
        return 0;
    }
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

void port_exit(int code)
{
    fflush(stdout);
    exit(code);
}
