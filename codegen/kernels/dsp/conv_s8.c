/* CONV_2D, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * - The main path (one group, fields of up to 256 values) is a matrix product, four output pixels
 *   against one filter at a time (mf_dsp_rows_4px in mf_dsp.h): the four fields are widened once
 *   into int16 pairs with the input offset added, and each word of a filter is split once for the
 *   four, eight SMLADs for sixteen products. A field is copied from the input when it is one
 *   contiguous run of it (1x1 convolutions, rows as wide as the input) and gathered otherwise, with
 *   padding holding the input zero point: zero point + input offset = 0, so padded taps add
 *   nothing, as the portable kernel skips them. When every filter's sums are small enough they
 *   requantize in five instructions (mf_dsp.h).
 * - 1x1 convolutions may run in place (mf_conv_s8_runs_in_place): each block of pixels is staged
 *   before its outputs are written over it.
 * - Grouped convolutions and larger fields: each pixel's field against three filters at a time,
 *   read in place, gathered into a buffer on the stack, or taken row by row (or tap by tap).
 * Stack: about 2.8 KiB on the main path (the stage and a gather buffer). */
#include <stddef.h>
#include <string.h>

#include "conv_in_place.h"
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

/* ---- the main path: four pixels against one filter at a time ------------------------------------
 *
 * The fields of four output pixels are widened once, input offset added, into int16 pairs on the
 * stack: for each group of four values, (x0, x2) and (x1, x3), the order in which SXTB16 splits a
 * word of weights, and the four pixels' pairs side by side. Each word of a filter is then loaded and
 * split once for the four pixels, and one LDRD brings the two pairs of a pixel: eight SMLADs for
 * sixteen products. A value plus the offset lies in [-255, 255], so it fits its int16 half; padding
 * holds the zero point, which the offset turns into 0. */

#define MF_CONV_STAGE_WORDS 512   /* four fields of up to 256 values, as int16 */

static inline int32_t round_up4(int32_t n)
{
    return (n + 3) & ~3;
}

static inline int staged(const mf_conv_params *p)
{
    const mf_window *w = &p->win;
    const int32_t field = w->filter_h * w->filter_w * p->filter_in_c;
    return MF_HAVE_DSP && w->in_c == p->filter_in_c && 2 * round_up4(field) <= MF_CONV_STAGE_WORDS &&
           field <= MF_CONV_COLUMN_BYTES;
}

int mf_conv_s8_runs_in_place(const mf_conv_params *p)
{
    const mf_window *w = &p->win;
    return staged(p) && w->filter_h == 1 && w->filter_w == 1 && w->stride_h == 1 && w->stride_w == 1 &&
           w->pad_h == 0 && w->pad_w == 0 && w->in_h == w->out_h && w->in_w == w->out_w && w->out_c <= w->in_c;
}

#if MF_HAVE_DSP

static __attribute__((noinline)) void conv_staged(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t field = w->filter_h * w->filter_w * p->filter_in_c;
    const int contiguous = (w->filter_w == 1 || w->dilation_w == 1) &&
                           (w->filter_h == 1 || (w->dilation_h == 1 && w->filter_w == w->in_w));
    const int32_t n_pixels = w->out_h * w->out_w;
    mf_dsp_rows rows;
    rows.filter = p->filter;
    rows.bias = p->bias;
    rows.multiplier = p->multiplier;
    rows.shift = p->shift;
    rows.field = field;
    rows.count = w->out_c;
    rows.out_stride = w->out_c;
    rows.output_offset = p->output_offset;
    rows.act_min = p->act_min;
    rows.act_max = p->act_max;
    rows.mode = mf_dsp_rows_mode(&rows);
    uint32_t stage[MF_CONV_STAGE_WORDS] __attribute__((aligned(8)));
    int8_t column[MF_CONV_COLUMN_BYTES];
    for (int32_t b = 0; b < w->batches; ++b) {
        const int8_t *image = input + (size_t)b * w->in_h * w->in_w * w->in_c;
        int8_t *out_image = output + (size_t)b * n_pixels * w->out_c;
        int32_t oy = 0, ox = 0;
        for (int32_t pix = 0; pix < n_pixels; pix += 4) {
            const int32_t pixels = n_pixels - pix < 4 ? n_pixels - pix : 4;
            for (int32_t r = 0; r < pixels; ++r) {
                const int32_t in_y0 = oy * w->stride_h - w->pad_h, in_x0 = ox * w->stride_w - w->pad_w;
                int32_t fy0, fy1, fx0, fx1;
                valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
                valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                const int whole = fy0 == 0 && fy1 == w->filter_h && fx0 == 0 && fx1 == w->filter_w;
                if (contiguous && whole) {
                    mf_dsp_stage_field(stage, r, image + ((size_t)in_y0 * w->in_w + in_x0) * w->in_c, field, p->input_offset);
                } else {
                    gather_field(p, image, in_y0, in_x0, 0, fy0, fy1, fx0, fx1, column);
                    mf_dsp_stage_field(stage, r, column, field, p->input_offset);
                }
                if (++ox == w->out_w) {
                    ox = 0;
                    ++oy;
                }
            }
            mf_dsp_rows_4px(&rows, stage, pixels, out_image + (size_t)pix * w->out_c);
        }
    }
}

#endif /* MF_HAVE_DSP */

/* Grouped convolutions and fields too large for the stage. Out of line, so that its buffer is
 * not on the stack of the staged path. */
static __attribute__((noinline)) void conv_general(const mf_conv_params *p, const int8_t *input, int8_t *output)
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

void mf_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
#if MF_HAVE_DSP
    if (staged(p)) {
        conv_staged(p, input, output);
        return;
    }
#endif
    conv_general(p, input, output);
}

