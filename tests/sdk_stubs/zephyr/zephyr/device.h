/* Stub of Zephyr's device.h and devicetree macros: declarations only (see ../../README.md). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
struct device { const char *name; };
extern const struct device __stub_console_device;
#define DT_CHOSEN(name) name
#define DEVICE_DT_GET(node) (&__stub_console_device)
bool device_is_ready(const struct device *dev);
#define ARG_UNUSED(x) (void)(x)
