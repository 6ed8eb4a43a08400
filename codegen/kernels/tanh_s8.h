/* TANH (int8): parameters and entry point. */
#ifndef MF_TANH_S8_H
#define MF_TANH_S8_H

#include <stdint.h>

typedef struct {
    int32_t size;          /* number of values */
    const int8_t *table;   /* [256]: the output for input value v is table[v + 128] */
} mf_tanh_params;

/* The output has scale 1/128, zero point 0. */
void mf_tanh_s8(const mf_tanh_params *p, const int8_t *input, int8_t *output);

#endif /* MF_TANH_S8_H */
