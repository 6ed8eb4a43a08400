/* Stub of MicroPython's py/obj.h: declarations only (see ../../README.md). QSTRs, which
 * MicroPython's build generates, are taken as strings here. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
typedef void *mp_obj_t;
typedef const void *mp_rom_obj_t;
typedef struct { const void *type; } mp_obj_base_t;
typedef struct _mp_obj_type_t { mp_obj_base_t base; } mp_obj_type_t;
typedef const char *mp_rom_error_text_t;
#define MP_ERROR_TEXT(text) (text)
#define MP_ROM_QSTR(q) ((mp_rom_obj_t) #q)
#define MP_ROM_PTR(p) ((mp_rom_obj_t)(p))
#define MP_ROM_INT(i) ((mp_rom_obj_t)(intptr_t)(((i) << 1) | 1))
typedef struct { void *buf; size_t len; int typecode; } mp_buffer_info_t;
#define MP_BUFFER_READ 1
void mp_get_buffer_raise(mp_obj_t obj, mp_buffer_info_t *bufinfo, int flags);
typedef struct { size_t alloc; size_t len; char *buf; bool fixed_buf; } vstr_t;
void vstr_init_len(vstr_t *vstr, size_t len);
mp_obj_t mp_obj_new_bytes_from_vstr(vstr_t *vstr);
extern const mp_obj_type_t mp_type_tuple, mp_type_module, mp_type_ValueError, mp_type_RuntimeError;
typedef struct { mp_obj_base_t base; void *fun; } mp_obj_fun_builtin_fixed_t;
#define MP_DEFINE_CONST_FUN_OBJ_1(name, fun_name) \
    const mp_obj_fun_builtin_fixed_t name = {{&mp_type_tuple}, (void *)(mp_obj_t (*)(mp_obj_t))(fun_name)}
typedef struct { mp_obj_base_t base; size_t len; mp_rom_obj_t items[]; } mp_rom_obj_tuple_t;
typedef struct { mp_rom_obj_t key; mp_rom_obj_t value; } mp_rom_map_elem_t;
typedef struct { mp_obj_base_t base; const mp_rom_map_elem_t *table; } mp_obj_dict_t;
#define MP_DEFINE_CONST_DICT(name, table) const mp_obj_dict_t name = {{&mp_type_tuple}, (table)}
typedef struct { mp_obj_base_t base; mp_obj_dict_t *globals; } mp_obj_module_t;
#define MP_REGISTER_MODULE(name, obj) extern const mp_obj_module_t obj
