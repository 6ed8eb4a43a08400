/* Arm semihosting calls (Arm "Semihosting for AArch32 and AArch64", v2.0).
 * On M-profile cores a call is BKPT 0xAB with the operation in r0 and a pointer to its
 * parameter block in r1; the result comes back in r0. */
#include "semihosting.h"

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20,
};

#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUNTIME_ERROR_UNKNOWN 0x20023u

static int32_t semihosting_call(uint32_t operation, const void *parameters)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = parameters;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

int32_t semihosting_open(const char *path, uint32_t mode)
{
    size_t length = 0;
    while (path[length] != '\0') {
        length++;
    }
    const uint32_t block[3] = {(uint32_t)(uintptr_t)path, mode, (uint32_t)length};
    return semihosting_call(SYS_OPEN, block);
}

int32_t semihosting_close(int32_t handle)
{
    const uint32_t block[1] = {(uint32_t)handle};
    return semihosting_call(SYS_CLOSE, block);
}

int32_t semihosting_flen(int32_t handle)
{
    const uint32_t block[1] = {(uint32_t)handle};
    return semihosting_call(SYS_FLEN, block);
}

size_t semihosting_read(int32_t handle, void *dst, size_t n)
{
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)dst, (uint32_t)n};
    int32_t not_read = semihosting_call(SYS_READ, block);
    if (not_read < 0 || (size_t)not_read > n) {
        return 0;
    }
    return n - (size_t)not_read;
}

size_t semihosting_write(int32_t handle, const void *src, size_t n)
{
    const uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)src, (uint32_t)n};
    int32_t not_written = semihosting_call(SYS_WRITE, block);
    if (not_written < 0 || (size_t)not_written > n) {
        return 0;
    }
    return n - (size_t)not_written;
}

void semihosting_exit(int code)
{
    if (code == 0) {
        /* The AArch32 SYS_EXIT takes the reason itself, not a block, and carries no code. */
        semihosting_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    } else {
        /* SYS_EXIT_EXTENDED carries the exit code; a host without it returns, and then the
         * run ends as a generic runtime error, which is non-zero too. */
        const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
        semihosting_call(SYS_EXIT_EXTENDED, block);
        semihosting_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_RUNTIME_ERROR_UNKNOWN);
    }
    for (;;) {
        __asm__ volatile("wfi");
    }
}
