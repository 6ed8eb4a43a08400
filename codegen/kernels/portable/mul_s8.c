/* MUL, int8: portable C99 with the semantics of TFLM's reference_integer_ops::Mul and its
 * broadcasting form. Safe to run in place when the overwritten input has the output's shape. */
#include "mf_quant.h"
#include "mul_s8.h"

static inline int8_t mul_one(const mf_mul_params *p, int32_t a, int32_t b)
{
    const int32_t product = (a + p->input1_offset) * (b + p->input2_offset);
    const int32_t out = p->output_offset + mf_multiply_by_quantized_multiplier(product, p->output_multiplier, p->output_shift);
    return (int8_t)mf_clamp(out, p->act_min, p->act_max);
}

void mf_mul_s8(const mf_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (!p->bc.broadcast) {
        for (int32_t i = 0; i < p->bc.count; ++i) {
            output[i] = mul_one(p, input1[i], input2[i]);
        }
        return;
    }
    int32_t counter[MF_MAX_DIMS] = {0};
    int32_t i1 = 0, i2 = 0;
    for (int32_t i = 0; i < p->bc.count; ++i) {
        output[i] = mul_one(p, input1[i1], input2[i2]);
        mf_broadcast_next(&p->bc, counter, &i1, &i2);
    }
}
