/* ADD, int8: portable C99 with the semantics of TFLM's reference_integer_ops::Add and its
 * broadcasting form: both inputs are shifted left, rescaled to twice the larger input scale,
 * summed, then rescaled to the output. Safe to run in place (output == input1 or input2)
 * when that input has the output's shape. */
#include "add_s8.h"
#include "mf_quant.h"

static inline int8_t add_one(const mf_add_params *p, int32_t a, int32_t b)
{
    const int32_t x1 = (int32_t)((uint32_t)(a + p->input1_offset) << p->left_shift);
    const int32_t x2 = (int32_t)((uint32_t)(b + p->input2_offset) << p->left_shift);
    const int32_t s1 = mf_multiply_by_quantized_multiplier(x1, p->input1_multiplier, p->input1_shift);
    const int32_t s2 = mf_multiply_by_quantized_multiplier(x2, p->input2_multiplier, p->input2_shift);
    const int32_t out = mf_multiply_by_quantized_multiplier(s1 + s2, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)mf_clamp(out, p->act_min, p->act_max);
}

void mf_add_s8(const mf_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (!p->bc.broadcast) {
        for (int32_t i = 0; i < p->bc.count; ++i) {
            output[i] = add_one(p, input1[i], input2[i]);
        }
        return;
    }
    int32_t counter[MF_MAX_DIMS] = {0};
    int32_t i1 = 0, i2 = 0;
    for (int32_t i = 0; i < p->bc.count; ++i) {
        output[i] = add_one(p, input1[i1], input2[i2]);
        mf_broadcast_next(&p->bc, counter, &i1, &i2);
    }
}
