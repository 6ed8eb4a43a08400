/* FULLY_CONNECTED, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * Each output is sum (w + w_off)(x + x_off)
 *   = sum w*x + x_off * sum w + w_off * sum x + depth * w_off * x_off,
 * where sum w*x and sum w come 16 lanes at a time from VMLADAVA/VADDVA (mf_mve.h), two weight
 * rows per pass over the input, and sum x once per input row (only for asymmetric weights).
 * Four outputs at a time are requantized in vector registers. */
#include <stddef.h>

#include "fully_connected_s8.h"
#include "mf_mve.h"
#include "mf_quant.h"

#if MF_HAVE_MVE

void mf_fully_connected_s8(const mf_fully_connected_params *p, const int8_t *input, int8_t *output)
{
    const int32_t depth = p->accum_depth;
    const int32_t out_depth = p->output_depth;
    int32x4_t multiplier = vdupq_n_s32(p->multiplier[0]);
    int32x4_t shift = vdupq_n_s32(p->shift[0]);
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_row = input + (size_t)b * (size_t)depth;
        int8_t *out_row = output + (size_t)b * (size_t)out_depth;
        const int32_t x_sum = p->filter_offset != 0 ? mf_mve_sum_s8(in_row, depth) : 0;
        const int32_t constant_part = p->filter_offset * x_sum + depth * p->filter_offset * p->input_offset;
        for (int32_t c = 0; c < out_depth; c += 4) {
            const int32_t count = out_depth - c < 4 ? out_depth - c : 4;
            const mve_pred16_t lanes = mf_mve_lanes32(count);
            int32_t acc[4] = {0, 0, 0, 0};
            int32_t wsum[4] = {0, 0, 0, 0};
            const int8_t *w_row = p->weights + (size_t)c * (size_t)depth;
            for (int32_t k = 0; k < count; k += 2) {
                if (k + 1 < count) {
                    mf_mve_dot_s8_x2(in_row, w_row, w_row + depth, depth, &acc[k], &wsum[k]);
                } else {
                    mf_mve_dot_s8(in_row, w_row, depth, &acc[k], &wsum[k]);
                }
                w_row += 2 * (size_t)depth;
            }
            int32x4_t total = vmlaq_n_s32(vldrwq_s32(acc), vldrwq_s32(wsum), p->input_offset);
            total = vaddq_n_s32(total, constant_part);
            if (p->bias != NULL) {
                total = vaddq_s32(total, vldrwq_z_s32(p->bias + c, lanes));
            }
            if (p->per_channel) {
                multiplier = vldrwq_z_s32(p->multiplier + c, lanes);
                shift = vldrwq_z_s32(p->shift + c, lanes);
            }
            mf_mve_requantize_store(total, multiplier, shift, p->output_offset, p->act_min, p->act_max,
                                    out_row + c, count);
        }
    }
}

#else /* no Helium: the portable kernel, shipped beside this file by the code generator */

#include "fully_connected_s8_portable.inc"

#endif
