/* FULLY_CONNECTED, int8 activations and weights, int32 bias: portable C99.
 * Semantics of TFLM's reference_integer_ops::FullyConnected (per tensor and per channel). */
#include <stddef.h>

#include "fully_connected_s8.h"
#include "mf_quant.h"

void mf_fully_connected_s8(const mf_fully_connected_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_row = input + (size_t)b * (size_t)p->accum_depth;
        int8_t *out_row = output + (size_t)b * (size_t)p->output_depth;
        for (int32_t c = 0; c < p->output_depth; ++c) {
            const int8_t *w_row = p->weights + (size_t)c * (size_t)p->accum_depth;
            int32_t acc = 0;
            for (int32_t d = 0; d < p->accum_depth; ++d) {
                acc += ((int32_t)w_row[d] + p->filter_offset) * ((int32_t)in_row[d] + p->input_offset);
            }
            if (p->bias != NULL) {
                acc += p->bias[c];
            }
            int32_t q = p->per_channel ? c : 0;
            acc = mf_multiply_by_quantized_multiplier(acc, p->multiplier[q], p->shift[q]);
            acc += p->output_offset;
            out_row[c] = (int8_t)mf_clamp(acc, p->act_min, p->act_max);
        }
    }
}
