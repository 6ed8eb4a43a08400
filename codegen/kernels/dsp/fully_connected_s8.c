/* FULLY_CONNECTED, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * Output channels are computed three at a time, so that each word of input is loaded and widened to
 * int16 pairs once for three weight rows, then multiplied in pairs with SMLAD (see mf_dsp.h).
 * Asymmetric weights (a filter offset, rare for int8) take the two-row path, which adds it. */
#include <stddef.h>

#include "fully_connected_s8.h"
#include "mf_dsp.h"
#include "mf_quant.h"

static inline int8_t requantize(const mf_fully_connected_params *p, int32_t c, int32_t acc)
{
    if (p->bias != NULL) {
        acc += p->bias[c];
    }
    const int32_t q = p->per_channel ? c : 0;
    acc = mf_requantize_fast(acc, p->multiplier[q], p->shift[q]) + p->output_offset;
    return (int8_t)mf_clamp(acc, p->act_min, p->act_max);
}

void mf_fully_connected_s8(const mf_fully_connected_params *p, const int8_t *input, int8_t *output)
{
    const int32_t depth = p->accum_depth;
    const int32_t rows_by_three = p->filter_offset == 0 ? p->output_depth / 3 * 3 : 0;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_row = input + (size_t)b * (size_t)depth;
        int8_t *out_row = output + (size_t)b * (size_t)p->output_depth;
        int32_t c = 0;
        for (; c < rows_by_three; c += 3) {
            const int8_t *w_row = p->weights + (size_t)c * (size_t)depth;
            int32_t acc[3] = {0, 0, 0};
            mf_dot_s8_x3(in_row, w_row, w_row + depth, w_row + 2 * (size_t)depth, depth, p->input_offset, acc);
            out_row[c] = requantize(p, c, acc[0]);
            out_row[c + 1] = requantize(p, c + 1, acc[1]);
            out_row[c + 2] = requantize(p, c + 2, acc[2]);
        }
        for (; c + 2 <= p->output_depth; c += 2) {
            const int8_t *w_row = p->weights + (size_t)c * (size_t)depth;
            int32_t acc0 = 0, acc1 = 0;
            mf_dot_s8_x2(in_row, w_row, w_row + depth, depth, p->input_offset, p->filter_offset, &acc0, &acc1);
            out_row[c] = requantize(p, c, acc0);
            out_row[c + 1] = requantize(p, c + 1, acc1);
        }
        if (c < p->output_depth) {
            const int8_t *w_row = p->weights + (size_t)c * (size_t)depth;
            out_row[c] = requantize(p, c, mf_dot_s8(in_row, w_row, depth, p->input_offset, p->filter_offset, 0));
        }
    }
}
