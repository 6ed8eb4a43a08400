/* QUANTIZE and DEQUANTIZE: portable C99 with the semantics of TFLM's AffineQuantize,
 * Requantize and Dequantize. The float paths divide and multiply in double, as TFLM does. */
#include <math.h>

#include "mf_quant.h"
#include "quantize.h"

void mf_quantize_f32_s8(const mf_affine_params *p, const float *input, int8_t *output)
{
    for (int32_t i = 0; i < p->count; ++i) {
        const double scaled = round((double)input[i] / p->scale);
        /* Clamp before the integer conversion, which is undefined out of range. */
        const double clamped = scaled < -1e6 ? -1e6 : (scaled > 1e6 ? 1e6 : scaled);
        output[i] = (int8_t)mf_clamp((int32_t)clamped + p->zero_point, -128, 127);
    }
}

void mf_requantize_s8(const mf_requantize_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->count; ++i) {
        const int32_t value = mf_multiply_by_quantized_multiplier((int32_t)input[i] - p->input_zero_point,
                                                                  p->multiplier, p->shift);
        output[i] = (int8_t)mf_clamp(value + p->output_zero_point, -128, 127);
    }
}

void mf_dequantize_s8_f32(const mf_affine_params *p, const int8_t *input, float *output)
{
    for (int32_t i = 0; i < p->count; ++i) {
        output[i] = (float)(p->scale * (double)((int32_t)input[i] - p->zero_point));
    }
}
