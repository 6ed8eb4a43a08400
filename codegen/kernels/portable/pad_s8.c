/* PAD and PADV2, int8: portable C99 with the semantics of TFLM's reference Pad: the output is the
 * input surrounded by a constant. The output is written in order, one innermost row at a time,
 * and the input is read in order, as each row that lies inside the input consumes one input row. */
#include <stddef.h>
#include <string.h>

#include "pad_s8.h"

static int mf_pad_inside(const mf_pad_params *p, int dim, int32_t index)
{
    return index >= p->before[dim] && index < p->before[dim] + p->input_size[dim];
}

void mf_pad_s8(const mf_pad_params *p, const int8_t *input, int8_t *output)
{
    int32_t out_size[MF_PAD_DIMS];
    for (int d = 0; d < MF_PAD_DIMS; ++d) {
        out_size[d] = p->before[d] + p->input_size[d] + p->after[d];
    }
    const size_t row = (size_t)out_size[4];
    const size_t before = (size_t)p->before[4];
    const size_t inner = (size_t)p->input_size[4];
    const size_t after = (size_t)p->after[4];
    const int8_t *in = input;
    int8_t *out = output;
    for (int32_t i0 = 0; i0 < out_size[0]; ++i0) {
        const int in0 = mf_pad_inside(p, 0, i0);
        for (int32_t i1 = 0; i1 < out_size[1]; ++i1) {
            const int in1 = in0 && mf_pad_inside(p, 1, i1);
            for (int32_t i2 = 0; i2 < out_size[2]; ++i2) {
                const int in2 = in1 && mf_pad_inside(p, 2, i2);
                for (int32_t i3 = 0; i3 < out_size[3]; ++i3) {
                    if (in2 && mf_pad_inside(p, 3, i3)) {
                        memset(out, p->value, before);
                        memcpy(out + before, in, inner);
                        memset(out + before + inner, p->value, after);
                        in += inner;
                    } else {
                        memset(out, p->value, row);
                    }
                    out += row;
                }
            }
        }
    }
}
