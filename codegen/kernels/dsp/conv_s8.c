/* CONV_2D, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * Each output pixel is a dot product of its receptive field with every filter of its group, three
 * filters at a time on SMLAD (mf_dsp.h). The receptive field is read in place when it is one
 * contiguous run of the input (1x1 convolutions, and rows as wide as the input); otherwise it is
 * gathered into a small buffer on the stack (im2col), where padding holds the input zero point:
 * zero point + input offset = 0, so padded taps add nothing, as the portable kernel skips them.
 * A field too large for that buffer is taken row by row (or tap by tap) from the input instead. */
#include <stddef.h>
#include <string.h>

#include "conv_s8.h"
#include "mf_dsp.h"
#include "mf_quant.h"

/* Up to 512 int8 values: a 3x3 field of 56 channels, a 10x4 one of 12. */
#define MF_CONV_COLUMN_BYTES 512

/* acc[k] += sum (x + x_off) * w_k for `rows` (1 to 3) filters that are w_stride apart. Out of line:
 * inlined into the pixel loops, its pointers and sums no longer fit in registers. */
static __attribute__((noinline)) void dot_rows(const int8_t *x, const int8_t *w, size_t w_stride, int32_t n,
                                               int32_t rows, int32_t x_off, int32_t acc[3])
{
    if (rows == 3) {
        mf_dot_s8_x3(x, w, w + w_stride, w + 2 * w_stride, n, x_off, acc);
    } else if (rows == 2) {
        mf_dot_s8_x2(x, w, w + w_stride, n, x_off, 0, &acc[0], &acc[1]);
    } else {
        acc[0] = mf_dot_s8(x, w, n, x_off, 0, acc[0]);
    }
}

/* The tap range [*lo, *hi) of a filter dimension that lands inside the input. */
static inline void valid_taps(int32_t start, int32_t dilation, int32_t taps, int32_t size, int32_t *lo, int32_t *hi)
{
    int32_t first = 0;
    while (first < taps && start + dilation * first < 0) {
        ++first;
    }
    int32_t last = taps;
    while (last > first && start + dilation * (last - 1) >= size) {
        --last;
    }
    *lo = first;
    *hi = last;
}

/* The receptive field of one output pixel for one group, [filter_h][filter_w][filter_in_c], padded. */
static void gather_field(const mf_conv_params *p, const int8_t *image, int32_t in_y0, int32_t in_x0, int32_t in_c0,
                         int32_t fy0, int32_t fy1, int32_t fx0, int32_t fx1, int8_t *col)
{
    const mf_window *w = &p->win;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t fic = p->filter_in_c;
    const int32_t row_len = w->filter_w * fic;
    const int merge = fic == w->in_c && w->dilation_w == 1;
    for (int32_t fy = 0; fy < w->filter_h; ++fy, col += row_len) {
        if (fy < fy0 || fy >= fy1) {
            memset(col, pad, (size_t)row_len);
            continue;
        }
        const int8_t *in_row = image + ((size_t)(in_y0 + w->dilation_h * fy) * w->in_w) * w->in_c + in_c0;
        memset(col, pad, (size_t)(fx0 * fic));
        if (merge) {
            memcpy(col + fx0 * fic, in_row + (size_t)(in_x0 + fx0) * w->in_c, (size_t)((fx1 - fx0) * fic));
        } else {
            for (int32_t fx = fx0; fx < fx1; ++fx) {
                memcpy(col + fx * fic, in_row + (size_t)(in_x0 + w->dilation_w * fx) * w->in_c, (size_t)fic);
            }
        }
        memset(col + fx1 * fic, pad, (size_t)((w->filter_w - fx1) * fic));
    }
}

static inline int8_t requantize(const mf_conv_params *p, int32_t oc, int32_t acc)
{
    if (p->bias != NULL) {
        acc += p->bias[oc];
    }
    acc = mf_requantize_fast(acc, p->multiplier[oc], p->shift[oc]) + p->output_offset;
    return (int8_t)mf_clamp(acc, p->act_min, p->act_max);
}

void mf_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t fic = p->filter_in_c;
    const int32_t groups = w->in_c / fic;
    const int32_t filters_per_group = w->out_c / groups;
    const int32_t field = w->filter_h * w->filter_w * fic;
    const int use_column = field <= MF_CONV_COLUMN_BYTES;
    /* A field read in place: one run of filter_w * in_c values per row, rows back to back. */
    const int contiguous = groups == 1 && (w->filter_w == 1 || w->dilation_w == 1) &&
                           (w->filter_h == 1 || (w->dilation_h == 1 && w->filter_w == w->in_w));
    int8_t column[MF_CONV_COLUMN_BYTES];

    for (int32_t b = 0; b < w->batches; ++b) {
        const int8_t *image = input + (size_t)b * w->in_h * w->in_w * w->in_c;
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            int32_t fy0, fy1;
            valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                int32_t fx0, fx1;
                valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                const int whole = fy0 == 0 && fy1 == w->filter_h && fx0 == 0 && fx1 == w->filter_w;
                int8_t *out = output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * w->out_c;
                for (int32_t g = 0; g < groups; ++g) {
                    const int32_t in_c0 = g * fic;
                    const int8_t *patch = NULL;
                    if (whole && contiguous) {
                        patch = image + ((size_t)in_y0 * w->in_w + in_x0) * w->in_c;
                    } else if (use_column) {
                        gather_field(p, image, in_y0, in_x0, in_c0, fy0, fy1, fx0, fx1, column);
                        patch = column;
                    }
                    const int32_t oc_end = (g + 1) * filters_per_group;
                    for (int32_t oc = g * filters_per_group; oc < oc_end; oc += 3) {
                        const int32_t rows = oc_end - oc < 3 ? oc_end - oc : 3;
                        const int8_t *filter = p->filter + (size_t)oc * field;
                        int32_t acc[3] = {0, 0, 0};
                        if (patch != NULL) {
                            dot_rows(patch, filter, (size_t)field, field, rows, p->input_offset, acc);
                        } else {
                            for (int32_t fy = fy0; fy < fy1; ++fy) {
                                const int8_t *in_row = image + ((size_t)(in_y0 + w->dilation_h * fy) * w->in_w) * w->in_c + in_c0;
                                const int8_t *f_row = filter + (size_t)fy * w->filter_w * fic;
                                if (groups == 1 && w->dilation_w == 1) {
                                    dot_rows(in_row + (size_t)(in_x0 + fx0) * w->in_c, f_row + (size_t)fx0 * fic,
                                             (size_t)field, (fx1 - fx0) * fic, rows, p->input_offset, acc);
                                } else {
                                    for (int32_t fx = fx0; fx < fx1; ++fx) {
                                        dot_rows(in_row + (size_t)(in_x0 + w->dilation_w * fx) * w->in_c,
                                                 f_row + (size_t)fx * fic, (size_t)field, fic, rows, p->input_offset, acc);
                                    }
                                }
                            }
                        }
                        for (int32_t k = 0; k < rows; ++k) {
                            out[oc + k] = requantize(p, oc + k, acc[k]);
                        }
                    }
                }
            }
        }
    }
}
