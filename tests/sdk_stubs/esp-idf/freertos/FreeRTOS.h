/* Stub of ESP-IDF's freertos/FreeRTOS.h: declarations only (see ../README.md). */
#pragma once
#include <stdint.h>
typedef uint32_t TickType_t;
typedef int BaseType_t;
typedef unsigned int UBaseType_t;
typedef uint32_t configSTACK_DEPTH_TYPE;
#define portNUM_PROCESSORS 2
#define portTICK_PERIOD_MS 1
#define pdMS_TO_TICKS(ms) ((TickType_t)(ms))
