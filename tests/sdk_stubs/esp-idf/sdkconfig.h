/* Stub of an ESP-IDF sdkconfig.h (see README.md). */
#pragma once
#define CONFIG_ESP_CONSOLE_UART_NUM 0
