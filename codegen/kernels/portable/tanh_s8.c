/* TANH, int8: portable C99.
 * TFLM's int8 reference evaluates tanh in Q4.27 fixed point for every value. The output depends
 * on the input value alone, so mcuforge evaluates that same arithmetic on the host for all 256
 * int8 inputs and the device only looks the result up. */
#include "tanh_s8.h"

void mf_tanh_s8(const mf_tanh_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        output[i] = p->table[(int32_t)input[i] + 128];
    }
}
