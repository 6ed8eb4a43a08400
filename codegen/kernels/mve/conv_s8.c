/* CONV_2D, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * Each output is a dot product of a receptive field with a filter: 16 products a beat with
 * VMLADAVA. The input offset goes in once per output through the filter's sum
 * (sum w*(x+off) = sum w*x + off*sum w; see mf_mve.h).
 * - The main path (one group, fields of up to 640 values) is a matrix product, four output pixels
 *   against one filter at a time (mf_mve_rows_4px in mf_mve.h): the four fields are staged on the
 *   stack, interleaved so that one pointer walks them, each weight vector is loaded once for the
 *   four, and the filter's four outputs are requantized as one vector and scattered to their
 *   pixels. Fields are copied from the input (whole rows of beats), or gathered with padding that
 *   holds the input zero point: zero point + offset = 0, so padded taps add nothing, as the
 *   portable kernel skips them. The effective biases, bias + offset * sum w, are made once per call.
 * - 1x1 convolutions may run in place (mf_conv_s8_runs_in_place): each block of pixels is staged
 *   before its outputs are written over it.
 * - Grouped convolutions and larger fields (conv_general): four pixels per filter where their
 *   fields fit a 1 KiB buffer, otherwise one pixel at a time, two filters per pass over its field,
 *   taken row by row (or tap by tap) from the input.
 * Stack: about 3.7 KiB on the main path (the stage, a gather buffer, the effective biases). */
#include <stddef.h>

#include "conv_in_place.h"
#include "conv_s8.h"
#include "mf_mve.h"
#include "mf_quant.h"

#if MF_HAVE_MVE

#define MF_CONV_COLUMN_BYTES 1024
#define MF_CONV_PIXELS 4

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

/* Where one output pixel's receptive field lies: its top-left tap and the range of valid taps. */
typedef struct {
    int32_t in_y0, in_x0, fy0, fy1, fx0, fx1;
} field_window;

static inline field_window window_of(const mf_window *w, int32_t oy, int32_t ox)
{
    field_window f;
    f.in_y0 = oy * w->stride_h - w->pad_h;
    f.in_x0 = ox * w->stride_w - w->pad_w;
    valid_taps(f.in_y0, w->dilation_h, w->filter_h, w->in_h, &f.fy0, &f.fy1);
    valid_taps(f.in_x0, w->dilation_w, w->filter_w, w->in_w, &f.fx0, &f.fx1);
    return f;
}

static inline int whole(const mf_window *w, const field_window *f)
{
    return f->fy0 == 0 && f->fy1 == w->filter_h && f->fx0 == 0 && f->fx1 == w->filter_w;
}

/* Copies and fills of a few bytes, 16 a beat: the C library's are byte loops behind a call. */
static inline void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    mf_mve_copy_bytes(dst, src, n);
}

static inline void fill_bytes(int8_t *dst, int8_t value, int32_t n)
{
    mf_mve_fill_bytes(dst, value, n);
}

/* The receptive field of one output pixel for one group, [filter_h][filter_w][filter_in_c], padded. */
static void gather_field(const mf_conv_params *p, const int8_t *image, const field_window *f, int32_t in_c0, int8_t *col)
{
    const mf_window *w = &p->win;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t fic = p->filter_in_c;
    const int32_t row_len = w->filter_w * fic;
    const int32_t before = f->fx0 * fic, after = (w->filter_w - f->fx1) * fic;
    const size_t row_step = (size_t)w->dilation_h * w->in_w * w->in_c;
    fill_bytes(col, pad, f->fy0 * row_len);
    col += f->fy0 * row_len;
    if (f->fy0 < f->fy1) {
        const int8_t *in_row = image + ((size_t)(f->in_y0 + w->dilation_h * f->fy0) * w->in_w) * w->in_c + in_c0;
        for (int32_t fy = f->fy0; fy < f->fy1; ++fy, col += row_len, in_row += row_step) {
            if (before > 0) {
                fill_bytes(col, pad, before);
            }
            if (fic == w->in_c && w->dilation_w == 1) {
                /* The valid taps of a row are one run of the input. */
                copy_bytes(col + before, in_row + (size_t)(f->in_x0 + f->fx0) * w->in_c, (f->fx1 - f->fx0) * fic);
            } else {
                for (int32_t fx = f->fx0; fx < f->fx1; ++fx) {
                    copy_bytes(col + fx * fic, in_row + (size_t)(f->in_x0 + w->dilation_w * fx) * w->in_c, fic);
                }
            }
            if (after > 0) {
                fill_bytes(col + row_len - after, pad, after);
            }
        }
    }
    fill_bytes(col, pad, (w->filter_h - f->fy1) * row_len);
}

/* Bias, requantization and store of four channels oc.. of one pixel (count of them valid). */
static inline void finish_channels(const mf_conv_params *p, int32x4_t acc, int32x4_t wsum, int32_t oc, int32_t count,
                                   int8_t *out)
{
    const mve_pred16_t lanes = mf_mve_lanes32(count);
    int32x4_t total = vmlaq_n_s32(acc, wsum, p->input_offset);
    if (p->bias != NULL) {
        total = vaddq_s32(total, vldrwq_z_s32(p->bias + oc, lanes));
    }
    mf_mve_requantize_store(total, vldrwq_z_s32(p->multiplier + oc, lanes), vldrwq_z_s32(p->shift + oc, lanes),
                            p->output_offset, p->act_min, p->act_max, out + oc, count);
}

/* All outputs of `count` (2 to 4) neighbouring output pixels whose full fields are at fields[],
 * four channels at a time: each filter goes once over the four fields, and each pixel's four
 * sums are requantized as one vector. */
static __attribute__((noinline)) void pixels(const mf_conv_params *p, const int8_t *const fields[MF_CONV_PIXELS],
                                             int32_t count, int32_t field, int8_t *out)
{
    const int32_t out_c = p->win.out_c;
    /* Unused lanes read pixel 0 again; their results are not stored. */
    const int8_t *const x0 = fields[0];
    const int8_t *const x1 = fields[1];
    const int8_t *const x2 = count > 2 ? fields[2] : x0;
    const int8_t *const x3 = count > 3 ? fields[3] : x0;
    for (int32_t oc = 0; oc < out_c; oc += 4) {
        const int32_t channels = out_c - oc < 4 ? out_c - oc : 4;
        /* sums[pixel][channel] */
        int32_t sums[MF_CONV_PIXELS][4] __attribute__((aligned(16)));
        int32_t wsum[4] __attribute__((aligned(16)));
        if (channels < 4) {
            /* Lanes of missing channels are computed and not stored; give them defined values. */
            for (int32_t k = 0; k < 4; ++k) {
                sums[0][k] = sums[1][k] = sums[2][k] = sums[3][k] = wsum[k] = 0;
            }
        }
        const int8_t *w = p->filter + (size_t)oc * field;
        for (int32_t k = 0; k < channels; ++k, w += field) {
            int32_t acc[4];
            if (count > 2) {
                mf_mve_dot_s8_4px(x0, x1, x2, x3, w, field, acc, &wsum[k]);
            } else {
                mf_mve_dot_s8_2px(x0, x1, w, field, acc, &wsum[k]);
                acc[2] = acc[3] = 0;
            }
            sums[0][k] = acc[0];
            sums[1][k] = acc[1];
            sums[2][k] = acc[2];
            sums[3][k] = acc[3];
        }
        const int32x4_t wsums = vldrwq_s32(wsum);
        for (int32_t px = 0; px < count; ++px) {
            finish_channels(p, vldrwq_s32(sums[px]), wsums, oc, channels, out + (size_t)px * out_c);
        }
    }
}

/* acc[k] += sum x * w_k and wsum[k] += sum w_k over n values, for `rows` (1 to 4) filters w_stride apart. */
static void dot_rows(const int8_t *x, const int8_t *w, size_t w_stride, int32_t n, int32_t rows,
                     int32_t acc[4], int32_t wsum[4])
{
    for (int32_t k = 0; k < rows; k += 2, w += 2 * w_stride) {
        if (k + 1 < rows) {
            mf_mve_dot_s8_x2(x, w, w + w_stride, n, &acc[k], &wsum[k]);
        } else {
            mf_mve_dot_s8(x, w, n, &acc[k], &wsum[k]);
        }
    }
}

/* Outputs oc_begin .. oc_end - 1 of one output pixel whose field (of its group) is at `patch`:
 * two filters per pass over the field, four outputs requantized as one vector. */
static __attribute__((noinline)) void one_field(const mf_conv_params *p, const int8_t *patch, int32_t field,
                                                int32_t oc_begin, int32_t oc_end, int8_t *out)
{
    for (int32_t oc = oc_begin; oc < oc_end; oc += 4) {
        const int32_t rows = oc_end - oc < 4 ? oc_end - oc : 4;
        int32_t acc[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
        int32_t wsum[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
        dot_rows(patch, p->filter + (size_t)oc * field, (size_t)field, field, rows, acc, wsum);
        finish_channels(p, vldrwq_s32(acc), vldrwq_s32(wsum), oc, rows, out);
    }
}

/* All outputs of one output pixel, group by group: the field gathered when it fits, otherwise
 * taken from the input row by row (or tap by tap). */
static __attribute__((noinline)) void one_pixel(const mf_conv_params *p, const int8_t *image, const field_window *f,
                                                int8_t *column, int8_t *out)
{
    const mf_window *w = &p->win;
    const int32_t fic = p->filter_in_c;
    const int32_t groups = w->in_c / fic;
    const int32_t filters_per_group = w->out_c / groups;
    const int32_t field = w->filter_h * w->filter_w * fic;
    for (int32_t g = 0; g < groups; ++g) {
        const int32_t in_c0 = g * fic;
        const int32_t oc_end = (g + 1) * filters_per_group;
        if (field <= MF_CONV_COLUMN_BYTES) {
            gather_field(p, image, f, in_c0, column);
            one_field(p, column, field, g * filters_per_group, oc_end, out);
            continue;
        }
        for (int32_t oc = g * filters_per_group; oc < oc_end; oc += 4) {
            const int32_t rows = oc_end - oc < 4 ? oc_end - oc : 4;
            const int8_t *filter = p->filter + (size_t)oc * field;
            int32_t acc[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
            int32_t wsum[4] __attribute__((aligned(16))) = {0, 0, 0, 0};
            for (int32_t fy = f->fy0; fy < f->fy1; ++fy) {
                const int8_t *in_row = image + ((size_t)(f->in_y0 + w->dilation_h * fy) * w->in_w) * w->in_c + in_c0;
                const int8_t *f_row = filter + (size_t)fy * w->filter_w * fic;
                if (groups == 1 && w->dilation_w == 1) {
                    dot_rows(in_row + (size_t)(f->in_x0 + f->fx0) * w->in_c, f_row + (size_t)f->fx0 * fic,
                             (size_t)field, (f->fx1 - f->fx0) * fic, rows, acc, wsum);
                } else {
                    for (int32_t fx = f->fx0; fx < f->fx1; ++fx) {
                        dot_rows(in_row + (size_t)(f->in_x0 + w->dilation_w * fx) * w->in_c,
                                 f_row + (size_t)fx * fic, (size_t)field, fic, rows, acc, wsum);
                    }
                }
            }
            finish_channels(p, vldrwq_s32(acc), vldrwq_s32(wsum), oc, rows, out);
        }
    }
}

/* ---- the main path: four pixels against one filter at a time ------------------------------------
 *
 * The fields of four output pixels are staged on the stack, interleaved 16 bytes at a time, so that
 * one pointer walks all four and each weight vector is loaded once for them (mf_mve_dot_s8_4rows).
 * The input offset goes into an effective bias, prepared once per call for each filter:
 * bias + input_offset * sum w. Padding holds the input zero point, whose product with the offset
 * added is zero, so that identity holds at the borders too. The four sums of a filter share its
 * multiplier and shift: they are requantized as one vector and scattered to their pixels. */

#define MF_CONV_STAGE_BYTES 2560   /* four fields of up to 640 values (3x3x64 is 576) */
#define MF_CONV_BIAS_CHANNELS 128  /* filters whose effective bias is prepared at once */
#define MF_CONV_SMALL_FIELD 256    /* fields gathered whole before they are staged */

static inline int32_t round_up16(int32_t n)
{
    return (n + 15) & ~15;
}

/* Whether the staged path takes this convolution (one group, four fields fit the stage). */
static inline int staged(const mf_conv_params *p)
{
    const mf_window *w = &p->win;
    return w->in_c == p->filter_in_c && 4 * round_up16(w->filter_h * w->filter_w * p->filter_in_c) <= MF_CONV_STAGE_BYTES;
}

int mf_conv_s8_runs_in_place(const mf_conv_params *p)
{
    const mf_window *w = &p->win;
    return staged(p) && w->filter_h == 1 && w->filter_w == 1 && w->stride_h == 1 && w->stride_w == 1 &&
           w->pad_h == 0 && w->pad_w == 0 && w->in_h == w->out_h && w->in_w == w->out_w && w->out_c <= w->in_c &&
           w->out_c <= MF_CONV_BIAS_CHANNELS;
}

/* The effective bias of filters oc0 .. oc0 + count - 1; returns whether all of them requantize with
 * a right shift only (shift < 0), the usual case, which needs neither the left shift nor a test. */
static int effective_bias(const mf_conv_params *p, int32_t field, int32_t oc0, int32_t count, int32_t *bias)
{
    const int8_t *f = p->filter + (size_t)oc0 * field;
    int right_only = 1;
    for (int32_t k = 0; k < count; ++k, f += field) {
        bias[k] = (p->bias != NULL ? p->bias[oc0 + k] : 0) + p->input_offset * mf_mve_sum_s8(f, field);
        right_only &= p->shift[oc0 + k] < 0;
    }
    return right_only;
}

/* n bytes of a field, from field offset `at` on, into staged row r: whole beats where the run is
 * aligned to them, otherwise the pieces of each beat, predicated. */
static inline void stage_run(int8_t *stage, int32_t r, int32_t at, const int8_t *src, int32_t n)
{
    int8_t *dst = stage + (at >> 4) * 64 + 16 * r + (at & 15);
    if (((at | n) & 15) == 0) {
        for (; n > 0; n -= 16, src += 16, dst += 64) {
            vstrbq_s8(dst, vldrbq_s8(src));
        }
        return;
    }
    while (n > 0) {
        const int32_t room = 16 - (at & 15), len = room < n ? room : n;
        const mve_pred16_t lanes = vctp8q((uint32_t)len);
        vstrbq_p_s8(dst, vldrbq_z_s8(src, lanes), lanes);
        at += len;
        src += len;
        n -= len;
        dst = stage + (at >> 4) * 64 + 16 * r;
    }
}

/* Pixel r's receptive field, [filter_h][filter_w][in_c], straight into the stage, padded with the
 * input zero point (one group). */
static void gather_staged(const mf_conv_params *p, const int8_t *image, const field_window *f, int8_t *stage, int32_t r)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, row_len = w->filter_w * in_c;
    if (!whole(w, f)) {
        const int8x16_t pad = vdupq_n_s8((int8_t)(-p->input_offset));
        int8_t *dst = stage + 16 * r;
        for (int32_t n = w->filter_h * row_len; n > 0; n -= 16, dst += 64) {
            vstrbq_s8(dst, pad);
        }
    }
    const size_t row_step = (size_t)w->dilation_h * w->in_w * in_c;
    const int8_t *in_row = image + ((size_t)(f->in_y0 + w->dilation_h * f->fy0) * w->in_w + f->in_x0) * in_c;
    int32_t at = f->fy0 * row_len;
    if (w->dilation_w == 1 && (f->fy1 - f->fy0 == 1 || (f->fx0 == 0 && f->fx1 == w->filter_w && row_len == w->in_w * in_c &&
                                                          w->dilation_h == 1))) {
        /* The valid rows are one run of the input. */
        stage_run(stage, r, at + f->fx0 * in_c, in_row + (size_t)f->fx0 * in_c,
                  (f->fy1 - f->fy0 - 1) * row_len + (f->fx1 - f->fx0) * in_c);
        return;
    }
    for (int32_t fy = f->fy0; fy < f->fy1; ++fy, in_row += row_step, at += row_len) {
        if (w->dilation_w == 1) {
            stage_run(stage, r, at + f->fx0 * in_c, in_row + (size_t)f->fx0 * in_c, (f->fx1 - f->fx0) * in_c);
        } else {
            for (int32_t fx = f->fx0; fx < f->fx1; ++fx) {
                stage_run(stage, r, at + fx * in_c, in_row + (size_t)fx * w->dilation_w * in_c, in_c);
            }
        }
    }
}

static __attribute__((noinline)) void conv_staged(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t field = w->filter_h * w->filter_w * p->filter_in_c;
    /* 1x1, stride 1: the field of pixel i is input pixel i. */
    const int pointwise = w->filter_h == 1 && w->filter_w == 1 && w->stride_h == 1 && w->stride_w == 1 &&
                          w->pad_h == 0 && w->pad_w == 0 && w->in_h == w->out_h && w->in_w == w->out_w;
    const int32_t n_pixels = w->out_h * w->out_w;
    /* Rows of the field that are whole beats, with no dilation along them. */
    const int32_t row_len = w->filter_w * w->in_c, y_span = (w->filter_h - 1) * w->dilation_h + 1;
    const size_t row_step = (size_t)w->dilation_h * w->in_w * w->in_c;
    const int aligned_rows = (row_len & 15) == 0 && (w->dilation_w == 1 || w->filter_w == 1);
    int8_t stage[MF_CONV_STAGE_BYTES] __attribute__((aligned(16)));
    int8_t column[MF_CONV_SMALL_FIELD] __attribute__((aligned(16)));
    int32_t bias[MF_CONV_BIAS_CHANNELS] __attribute__((aligned(16)));

    for (int32_t oc0 = 0; oc0 < w->out_c; oc0 += MF_CONV_BIAS_CHANNELS) {
        const int32_t channels = w->out_c - oc0 < MF_CONV_BIAS_CHANNELS ? w->out_c - oc0 : MF_CONV_BIAS_CHANNELS;
        mf_mve_rows rows;
        rows.filter = p->filter + (size_t)oc0 * field;
        rows.bias = bias;
        rows.multiplier = p->multiplier + oc0;
        rows.shift = p->shift + oc0;
        rows.field = field;
        rows.count = channels;
        rows.out_stride = w->out_c;
        rows.output_offset = p->output_offset;
        rows.act_min = p->act_min;
        rows.act_max = p->act_max;
        rows.right_only = effective_bias(p, field, oc0, channels, bias);
        for (int32_t b = 0; b < w->batches; ++b) {
            const int8_t *image = input + (size_t)b * w->in_h * w->in_w * w->in_c;
            int8_t *out_image = output + (size_t)b * n_pixels * w->out_c;
            int32_t oy = 0, ox = 0;
            for (int32_t pix = 0; pix < n_pixels; pix += 4) {
                const int32_t pixels = n_pixels - pix < 4 ? n_pixels - pix : 4;
                if (pointwise) {
                    const int8_t *src = image + (size_t)pix * w->in_c;
                    for (int32_t r = 0; r < pixels; ++r, src += w->in_c) {
                        mf_mve_stage_row(stage, r, src, field);
                    }
                } else {
                    for (int32_t r = 0; r < pixels; ++r) {
                        const int32_t in_y0 = oy * w->stride_h - w->pad_h, in_x0 = ox * w->stride_w - w->pad_w;
                        if (aligned_rows && in_y0 >= 0 && in_y0 + y_span <= w->in_h && in_x0 >= 0 &&
                            in_x0 + w->filter_w <= w->in_w) {
                            /* A whole field whose rows are whole beats: straight copies, no padding. */
                            const int8_t *src = image + ((size_t)in_y0 * w->in_w + in_x0) * w->in_c;
                            int8_t *dst = stage + 16 * r;
                            for (int32_t fy = 0; fy < w->filter_h; ++fy, src += row_step) {
                                for (int32_t i = 0; i < row_len; i += 16, dst += 64) {
                                    vstrbq_s8(dst, vldrbq_s8(src + i));
                                }
                            }
                        } else if (field <= MF_CONV_SMALL_FIELD) {
                            /* Gathered whole first: cheaper than the pieces of unaligned runs. */
                            const field_window f = window_of(w, oy, ox);
                            gather_field(p, image, &f, 0, column);
                            mf_mve_stage_row(stage, r, column, field);
                        } else {
                            const field_window f = window_of(w, oy, ox);
                            gather_staged(p, image, &f, stage, r);
                        }
                        if (++ox == w->out_w) {
                            ox = 0;
                            ++oy;
                        }
                    }
                }
                mf_mve_rows_4px(&rows, stage, pixels, out_image + (size_t)pix * w->out_c + oc0);
            }
        }
    }
}

/* Grouped convolutions and fields too large for the stage. Out of line, so that its buffer is
 * not on the stack of the staged path. */
static __attribute__((noinline)) void conv_general(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t groups = w->in_c / p->filter_in_c;
    const int32_t field = w->filter_h * w->filter_w * p->filter_in_c;
    /* A field read in place: one run of filter_w * in_c values per row, rows back to back. */
    const int contiguous = groups == 1 && (w->filter_w == 1 || w->dilation_w == 1) &&
                           (w->filter_h == 1 || (w->dilation_h == 1 && w->filter_w == w->in_w));
    /* How many gathered fields fit in the buffer next to each other. */
    const int32_t fit = groups == 1 ? (MF_CONV_COLUMN_BYTES / field < MF_CONV_PIXELS ? MF_CONV_COLUMN_BYTES / field
                                                                                      : MF_CONV_PIXELS)
                                    : 0;
    const int32_t n_pixels = w->out_h * w->out_w;
    int8_t column[MF_CONV_COLUMN_BYTES] __attribute__((aligned(16)));

    for (int32_t b = 0; b < w->batches; ++b) {
        const int8_t *image = input + (size_t)b * w->in_h * w->in_w * w->in_c;
        int8_t *out_image = output + (size_t)b * n_pixels * w->out_c;
        int32_t pix = 0;
        while (pix < n_pixels) {
            /* The next pixels whose fields can be read in place or gathered: up to four. */
            const int8_t *fields[MF_CONV_PIXELS];
            int32_t count = 0, gathered = 0;
            while (count < MF_CONV_PIXELS && pix + count < n_pixels) {
                const int32_t oy = (pix + count) / w->out_w, ox = (pix + count) % w->out_w;
                const field_window f = window_of(w, oy, ox);
                if (contiguous && whole(w, &f)) {
                    fields[count] = image + ((size_t)f.in_y0 * w->in_w + f.in_x0) * w->in_c;
                } else if (gathered < fit) {
                    fields[count] = column + (size_t)gathered * field;
                    gather_field(p, image, &f, 0, column + (size_t)gathered * field);
                    ++gathered;
                } else {
                    if (count == 0) {
                        one_pixel(p, image, &f, column, out_image + (size_t)pix * w->out_c);
                        count = -1;
                    }
                    break;
                }
                ++count;
            }
            if (count < 0) {
                ++pix;
                continue;
            }
            if (count == 1) {
                /* A lone pixel: filters in pairs over its one field does more with each load. */
                one_field(p, fields[0], field, 0, w->out_c, out_image + (size_t)pix * w->out_c);
            } else {
                pixels(p, fields, count, field, out_image + (size_t)pix * w->out_c);
            }
            pix += count;
        }
    }
}

void mf_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output)
{
    if (staged(p)) {
        conv_staged(p, input, output);
        return;
    }
    conv_general(p, input, output);
}

#else /* no Helium: the portable kernel, shipped beside this file by the code generator */

int mf_conv_s8_runs_in_place(const mf_conv_params *p)
{
    (void)p;
    return 0;
}

#include "conv_s8_portable.inc"

#endif
