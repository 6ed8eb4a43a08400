/* MEAN, int8: portable C99 with the semantics of TFLM's reference QuantizedMeanOrSum: an int32
 * sum of the raw values, less the input zero point times the element count, requantized once by a
 * multiplier that includes the division by the count, plus the output zero point. */
#include <stddef.h>

#include "mean_s8.h"
#include "mf_quant.h"

/* An int8 value as the uint32 with the same bits as its int32 value (adding those wraps as TFLM's
 * int32 sum does, without signed overflow). */
static inline uint32_t mf_mean_wrap(int8_t value)
{
    return (uint32_t)(int32_t)value;
}

/* Steps a row-major multi-index over dims [0, rank) and keeps *offset in step with it; returns 0
 * after the last position (the index is back at zero). */
static int mf_mean_next(int32_t *index, const int32_t *size, const int32_t *stride, int32_t rank, size_t *offset)
{
    for (int32_t d = rank - 1; d >= 0; --d) {
        *offset += (size_t)stride[d];
        if (++index[d] < size[d]) {
            return 1;
        }
        *offset -= (size_t)size[d] * (size_t)stride[d];
        index[d] = 0;
    }
    return 0;
}

void mf_mean_s8(const mf_mean_params *p, const int8_t *input, int8_t *output)
{
    const int32_t last = p->reduced_rank - 1;
    const int32_t run = p->reduced_size[last];
    const size_t run_stride = (size_t)p->reduced_stride[last];
    int32_t kept_index[MF_MEAN_MAX_DIMS] = {0};
    size_t base = 0;
    int8_t *out = output;
    do {
        int32_t reduced_index[MF_MEAN_MAX_DIMS] = {0};
        size_t offset = base;
        uint32_t sum = 0;
        do {
            const int8_t *x = input + offset;
            for (int32_t i = 0; i < run; ++i) {
                sum += mf_mean_wrap(x[(size_t)i * run_stride]);
            }
        } while (mf_mean_next(reduced_index, p->reduced_size, p->reduced_stride, last, &offset));
        const int32_t centered = (int32_t)(sum - (uint32_t)p->input_zero_sum);
        const int32_t value = mf_multiply_by_quantized_multiplier(centered, p->multiplier, p->shift) + p->output_offset;
        *out++ = (int8_t)mf_clamp(value, INT8_MIN, INT8_MAX);
    } while (mf_mean_next(kept_index, p->kept_size, p->kept_stride, p->kept_rank, &base));
}
