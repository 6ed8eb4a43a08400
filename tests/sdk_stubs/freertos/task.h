/* Stub of FreeRTOS-Kernel V11's task.h: declarations only (see ../README.md). */
#pragma once
#include "FreeRTOS.h"
typedef struct tskTaskControlBlock *TaskHandle_t;
typedef void (*TaskFunction_t)(void *);
#define tskIDLE_PRIORITY ((UBaseType_t)0U)
BaseType_t xTaskCreate(TaskFunction_t code, const char *const name, const configSTACK_DEPTH_TYPE depth,
                       void *const parameters, UBaseType_t priority, TaskHandle_t *const created);
void vTaskStartScheduler(void);
TickType_t xTaskGetTickCount(void);
void vTaskDelay(const TickType_t ticks);
UBaseType_t uxTaskGetStackHighWaterMark(TaskHandle_t task);
