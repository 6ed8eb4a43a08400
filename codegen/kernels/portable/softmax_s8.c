/* SOFTMAX, int8 input, int8 output (scale 1/256, zero point -128): portable C99.
 * Semantics of TFLM's int8 reference softmax: exp() of beta-scaled differences from the row
 * maximum in Q5.26 fixed point, summed in Q12.19, divided by the sum through a fixed-point
 * reciprocal. No floating point. */
#include <stddef.h>

#include "softmax_s8.h"
#include "mf_fixedpoint.h"

#define MF_SOFTMAX_DIFF_INTEGER_BITS 5
#define MF_SOFTMAX_ACCUM_INTEGER_BITS 12

/* exp((input - row maximum) * beta * input scale), as Q0.31. */
static int32_t softmax_exp(const mf_softmax_params *p, int32_t diff)
{
    /* MultiplyByQuantizedMultiplierGreaterThanOne: |diff| << shift stays below 2^31 for diff >= diff_min. */
    const int32_t scaled = mf_saturating_rounding_doubling_high_mul(
        (int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
    return mf_exp_on_negative_values(scaled, MF_SOFTMAX_DIFF_INTEGER_BITS);
}

void mf_softmax_s8(const mf_softmax_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *in = input + (size_t)r * (size_t)p->depth;
        int8_t *out = output + (size_t)r * (size_t)p->depth;

        int32_t max_in_row = INT8_MIN;
        for (int32_t c = 0; c < p->depth; ++c) {
            if (in[c] > max_in_row) {
                max_in_row = in[c];
            }
        }

        int32_t sum_of_exps = 0;  /* Q12.19; depth < 4096 keeps it below 2^31 */
        for (int32_t c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= p->diff_min) {
                sum_of_exps = mf_fx_add(sum_of_exps,
                                        mf_fx_rescale(softmax_exp(p, diff), 0, MF_SOFTMAX_ACCUM_INTEGER_BITS));
            }
        }

        int num_bits_over_unit;
        const int32_t shifted_scale = mf_fx_reciprocal(sum_of_exps, MF_SOFTMAX_ACCUM_INTEGER_BITS, &num_bits_over_unit);
        /* Output in units of 1/256: 31 fractional bits down to 8. */
        const int exponent = num_bits_over_unit + 31 - 8;

        for (int32_t c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            int32_t value = INT8_MIN;
            if (diff >= p->diff_min) {
                /* A sum of exponentials of 512 or more (only possible with depth >= 512) makes every
                 * probability round to 0; TFLM's reference stops on a check there instead. */
                const int32_t unsat = exponent > 31 ? 0 :
                    mf_rounding_divide_by_pot(mf_fx_mul(shifted_scale, softmax_exp(p, diff)), exponent);
                value = mf_clamp(unsat + INT8_MIN, INT8_MIN, INT8_MAX);
            }
            out[c] = (int8_t)value;
        }
    }
}
