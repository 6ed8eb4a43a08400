/* Stub of ESP-IDF's freertos/task.h: declarations only (see ../README.md). */
#pragma once
#include "freertos/FreeRTOS.h"
typedef struct tskTaskControlBlock *TaskHandle_t;
typedef void (*TaskFunction_t)(void *);
BaseType_t xTaskCreatePinnedToCore(TaskFunction_t code, const char *const name, const uint32_t stack_depth,
                                   void *const parameters, UBaseType_t priority, TaskHandle_t *const created,
                                   const BaseType_t core_id);
TickType_t xTaskGetTickCount(void);
UBaseType_t uxTaskGetStackHighWaterMark(TaskHandle_t task);
void vTaskSuspend(TaskHandle_t task);
