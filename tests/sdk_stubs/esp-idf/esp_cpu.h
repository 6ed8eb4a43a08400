/* Stub of ESP-IDF 5's esp_cpu.h: declarations only (see README.md). */
#pragma once
#include <stdint.h>
typedef uint32_t esp_cpu_cycle_count_t;
esp_cpu_cycle_count_t esp_cpu_get_cycle_count(void);
