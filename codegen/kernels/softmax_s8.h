/* SOFTMAX (int8 -> int8): parameters and entry point. */
#ifndef MF_SOFTMAX_S8_H
#define MF_SOFTMAX_S8_H

#include <stdint.h>

typedef struct {
    int32_t rows;              /* softmax is taken over the last dimension: rows x depth values */
    int32_t depth;
    int32_t input_multiplier;  /* beta * input scale, as multiplier and left shift into a Q5.26 exp() argument */
    int32_t input_left_shift;
    int32_t diff_min;          /* differences from the row maximum below this contribute nothing */
} mf_softmax_params;

/* The output has scale 1/256 and zero point -128. */
void mf_softmax_s8(const mf_softmax_params *p, const int8_t *input, int8_t *output);

#endif /* MF_SOFTMAX_S8_H */
