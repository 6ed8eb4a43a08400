/* ADD (int8, same shape or broadcast): parameters and entry point. */
#ifndef MF_ADD_S8_H
#define MF_ADD_S8_H

#include <stdint.h>

#include "mf_broadcast.h"

typedef struct {
    mf_broadcast bc;
    int32_t input1_offset, input2_offset, output_offset;
    int32_t left_shift;             /* headroom before rescaling both inputs to a common scale */
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} mf_add_params;

void mf_add_s8(const mf_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

#endif /* MF_ADD_S8_H */
