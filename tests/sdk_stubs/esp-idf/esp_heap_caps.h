/* Stub of ESP-IDF 5's esp_heap_caps.h: declarations only (see README.md). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#define MALLOC_CAP_DEFAULT (1 << 12)
size_t heap_caps_get_total_size(uint32_t caps);
size_t heap_caps_get_minimum_free_size(uint32_t caps);
