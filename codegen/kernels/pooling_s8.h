/* AVERAGE_POOL_2D and MAX_POOL_2D (int8): parameters and entry points. */
#ifndef MF_POOLING_S8_H
#define MF_POOLING_S8_H

#include <stdint.h>

#include "mf_window.h"

typedef struct {
    mf_window win;               /* in_c == out_c; dilation is 1 */
    int32_t act_min, act_max;
} mf_pool_params;

void mf_average_pool_s8(const mf_pool_params *p, const int8_t *input, int8_t *output);
void mf_max_pool_s8(const mf_pool_params *p, const int8_t *input, int8_t *output);

#endif /* MF_POOLING_S8_H */
