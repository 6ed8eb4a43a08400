/* LOGISTIC (int8): parameters and entry point. */
#ifndef MF_LOGISTIC_S8_H
#define MF_LOGISTIC_S8_H

#include <stdint.h>

typedef struct {
    int32_t size;          /* number of values */
    const int8_t *table;   /* [256]: the output for input value v is table[v + 128] */
} mf_logistic_params;

/* The output has scale 1/256, zero point -128. */
void mf_logistic_s8(const mf_logistic_params *p, const int8_t *input, int8_t *output);

#endif /* MF_LOGISTIC_S8_H */
