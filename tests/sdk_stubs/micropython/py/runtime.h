/* Stub of MicroPython's py/runtime.h: declarations only (see ../../README.md). */
#pragma once
#include "py/obj.h"
__attribute__((noreturn)) void mp_raise_msg_varg(const mp_obj_type_t *exc_type, mp_rom_error_text_t fmt, ...);
