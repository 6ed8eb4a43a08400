/* Arm semihosting: file and exit services of the debugger or emulator (QEMU -semihosting). */
#ifndef MCUFORGE_SEMIHOSTING_H
#define MCUFORGE_SEMIHOSTING_H

#include <stddef.h>
#include <stdint.h>

/* Returns a handle (>= 0) or -1. */
int32_t semihosting_open(const char *path, uint32_t mode);
int32_t semihosting_close(int32_t handle);
/* Returns the file length in bytes, or -1. */
int32_t semihosting_flen(int32_t handle);
/* Returns the number of bytes read. */
size_t semihosting_read(int32_t handle, void *dst, size_t n);
/* Writes to a handle; returns the number of bytes written. */
size_t semihosting_write(int32_t handle, const void *src, size_t n);
void semihosting_exit(int code) __attribute__((noreturn));

/* Open modes (the index into fopen's mode strings). */
#define SEMIHOSTING_MODE_RB 1u
#define SEMIHOSTING_MODE_W 4u

#endif
