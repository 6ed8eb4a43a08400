/* Stub of MicroPython's py/objstr.h: declarations only (see ../../README.md). */
#pragma once
#include "py/obj.h"
typedef struct { mp_obj_base_t base; size_t hash; size_t len; const char *data; } mp_obj_str_t;
extern const mp_obj_type_t mp_type_str;
#define MP_DEFINE_STR_OBJ(obj_name, str) mp_obj_str_t obj_name = {{&mp_type_str}, 0, sizeof(str) - 1, (const char *)(str)}
