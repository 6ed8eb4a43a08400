/* Stub of FreeRTOS-Kernel V11's FreeRTOS.h: declarations only (see ../README.md). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#define TICK_TYPE_WIDTH_32_BITS 1
#include "FreeRTOSConfig.h"
typedef uint32_t StackType_t;
typedef long BaseType_t;
typedef unsigned long UBaseType_t;
typedef uint32_t TickType_t;
#ifndef configSTACK_DEPTH_TYPE
#define configSTACK_DEPTH_TYPE StackType_t
#endif
#define pdPASS 1
#define portTICK_PERIOD_MS ((TickType_t)1000 / configTICK_RATE_HZ)
#define pdMS_TO_TICKS(ms) ((TickType_t)(((uint64_t)(ms) * (uint64_t)configTICK_RATE_HZ) / 1000U))
#define taskDISABLE_INTERRUPTS() __asm__ volatile("cpsid i" ::: "memory")
size_t xPortGetMinimumEverFreeHeapSize(void);
