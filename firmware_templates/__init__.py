"""Jinja templates (`.j2`) and plain sources for firmware projects.

    app/          the RTOS-independent application (mcuforge_app.c), its port and engine interfaces,
                  and the engine glue (aot, tflm/ethos-u)
    common/       shared by several ports: the CPU cycle counter, Kconfig fragments
    cortex_m/     start-up, linker script, console, cycle counter and memory marks for Cortex-M,
                  shared by the bare-metal and FreeRTOS ports; their CMake build
    baremetal/    the bare-metal port and its Makefile
    freertos/     the FreeRTOS port (Cortex-M) and FreeRTOSConfig.h
    zephyr/       the Zephyr port and project files
    esp-idf/      the ESP-IDF port and project files
    micropython/  the MicroPython user C module
    host/         the host port (the verify harness and the application on the build machine)
    readme/       the README of each kind of project

Templates hold layout: every value they show is computed in host_tools (firmware.py, project.py).
"""
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
