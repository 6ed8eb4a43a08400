/* QUANTIZE (float32 -> int8, int8 -> int8) and DEQUANTIZE (int8 -> float32). */
#ifndef MF_QUANTIZE_H
#define MF_QUANTIZE_H

#include <stdint.h>

typedef struct {
    int32_t count;
    double scale;            /* TFLM keeps the scale in double for these conversions */
    int32_t zero_point;
} mf_affine_params;

typedef struct {
    int32_t count;
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift;
} mf_requantize_params;

void mf_quantize_f32_s8(const mf_affine_params *p, const float *input, int8_t *output);
void mf_requantize_s8(const mf_requantize_params *p, const int8_t *input, int8_t *output);
void mf_dequantize_s8_f32(const mf_affine_params *p, const int8_t *input, float *output);

#endif /* MF_QUANTIZE_H */
