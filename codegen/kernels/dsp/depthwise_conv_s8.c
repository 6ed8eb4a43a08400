/* DEPTHWISE_CONV_2D, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * Channels are neighbours in both the input and the filter, so one word holds four channels of a
 * tap: SXTB16/SXTAB16 widen them to int16 pairs and SMLABB/SMLATT add each product to its own
 * channel's sum (mf_dsp.h). With depth multiplier 1 the taps of rows of three and two are written
 * out, and the sums requantize in five instructions when all of them are small enough (mf_dsp.h).
 * With a depth multiplier above 1, the outputs of one input channel are the neighbours instead, and
 * the one input value multiplies four filter values at a time; a single input channel is a plain
 * convolution with the filter transposed, which goes through the four-pixel matrix product of the
 * convolutions (mf_dsp_rows_4px). The tap range that lands inside the input is worked out once per
 * output pixel, not tested tap by tap. */
#include <stddef.h>
#include <string.h>

#include "depthwise_conv_s8.h"
#include "mf_dsp.h"
#include "mf_quant.h"

/* The tap range [*lo, *hi) of a filter dimension that lands inside the input. */
static inline void valid_taps(int32_t start, int32_t dilation, int32_t n, int32_t size, int32_t *lo, int32_t *hi)
{
    int32_t first = 0;
    while (first < n && start + dilation * first < 0) {
        ++first;
    }
    int32_t last = n;
    while (last > first && start + dilation * (last - 1) >= size) {
        --last;
    }
    *lo = first;
    *hi = last;
}

/* One output pixel: its first valid tap in the input (x) and the filter (w), and how to step on. */
typedef struct {
    const int8_t *x, *w;
    int32_t rows, cols;
    size_t x_col, x_row, w_col, w_row;
} taps;

static int32_t one_output(const taps *t, int32_t x_channel, int32_t w_channel, int32_t x_off, int32_t acc)
{
    const int8_t *x = t->x + x_channel, *w = t->w + w_channel;
    for (int32_t r = 0; r < t->rows; ++r, x += t->x_row, w += t->w_row) {
        const int8_t *xt = x, *wt = w;
        for (int32_t c = 0; c < t->cols; ++c, xt += t->x_col, wt += t->w_col) {
            acc += ((int32_t)*xt + x_off) * (int32_t)*wt;
        }
    }
    return acc;
}

/* Four neighbouring outputs from oc on: bias, taps, requantization. With `broadcast` (depth
 * multiplier above 1) they share the input channel x_channel; otherwise each has its own, from
 * x_channel on. Out of line, so that the sums of the tap loop have the registers to themselves. */
static __attribute__((noinline)) void four_outputs(const mf_depthwise_conv_params *p, const taps *t,
                                                   int32_t x_channel, int32_t oc, int broadcast, int8_t *out)
{
    int32_t acc[4] = {0, 0, 0, 0};
    if (p->bias != NULL) {
        acc[0] = p->bias[oc];
        acc[1] = p->bias[oc + 1];
        acc[2] = p->bias[oc + 2];
        acc[3] = p->bias[oc + 3];
    }
    if (broadcast) {
        mf_depthwise_taps_broadcast_s8_x4(t->x + x_channel, t->w + oc, t->rows, t->cols, t->x_col, t->x_row,
                                          t->w_col, t->w_row, p->input_offset, acc);
    } else {
        mf_depthwise_taps_s8_x4(t->x + x_channel, t->w + oc, t->rows, t->cols, t->x_col, t->x_row, t->w_col,
                                t->w_row, p->input_offset, acc);
    }
    const int32_t *const mult = p->multiplier + oc, *const shift = p->shift + oc;
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    /* Spelled out: with constant indices the four sums stay in registers. */
    out[oc] = mf_requantize_to_s8(acc[0], mult[0], shift[0], out_off, act_min, act_max);
    out[oc + 1] = mf_requantize_to_s8(acc[1], mult[1], shift[1], out_off, act_min, act_max);
    out[oc + 2] = mf_requantize_to_s8(acc[2], mult[2], shift[2], out_off, act_min, act_max);
    out[oc + 3] = mf_requantize_to_s8(acc[3], mult[3], shift[3], out_off, act_min, act_max);
}

static void single_output(const mf_depthwise_conv_params *p, const taps *t, int32_t x_channel, int32_t oc,
                          int8_t *out)
{
    const int32_t acc = one_output(t, x_channel, oc, p->input_offset, p->bias != NULL ? p->bias[oc] : 0);
    out[oc] = mf_requantize_to_s8(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
}

/* All outputs of one pixel: blocks of four, then single outputs. */
static void pixel(const mf_depthwise_conv_params *p, const taps *t, int8_t *out)
{
    const int32_t in_c = p->win.in_c, dm = p->depth_multiplier;
    if (dm == 1) {
        int32_t c = 0;
        for (; c + 4 <= in_c; c += 4) {
            four_outputs(p, t, c, c, 0, out);
        }
        for (; c < in_c; ++c) {
            single_output(p, t, c, c, out);
        }
        return;
    }
    for (int32_t ic = 0; ic < in_c; ++ic) {
        int32_t oc = ic * dm;
        const int32_t oc_end = oc + dm;
        for (; oc + 4 <= oc_end; oc += 4) {
            four_outputs(p, t, ic, oc, 1, out);
        }
        for (; oc < oc_end; ++oc) {
            single_output(p, t, ic, oc, out);
        }
    }
}

/* ---- depth multiplier 1: four channels a word, requantized in five instructions -------------------
 *
 * The taps of four neighbouring channels go through SMLABB/SMLATT as above, with the tap loop
 * written out for rows of three (the usual 3x3 filter) and the bias as the sums' start. When every
 * channel's sums are small enough (the bound below), they requantize in the five-instruction form
 * of mf_dsp.h; otherwise in mf_requantize_fast(). */

#if MF_HAVE_DSP

/* Whether every channel takes the five-instruction requantization: |sum| is at most
 * taps * 255 * 128 plus its bias. */
static int all_fast(const mf_depthwise_conv_params *p)
{
    const int32_t products = p->win.filter_h * p->win.filter_w * 255 * 128;
    if (products >= (1 << 30)) {
        return 0;
    }
    const int32_t limit = (1 << 30) - 1 - products;
    for (int32_t c = 0; c < p->win.out_c; ++c) {
        const int32_t bias = p->bias != NULL ? p->bias[c] : 0;
        const int32_t shift = p->shift[c];
        if (bias < -limit || bias > limit || shift >= 0 || shift < -22 || p->multiplier[c] < 0) {
            return 0;
        }
    }
    return 1;
}

enum { CLAMP_NONE, CLAMP_LOW, CLAMP_BOTH };

static inline __attribute__((always_inline)) int8_t finish_fast(int32_t acc, int32_t mult, int32_t right, int32_t k,
                                                              int32_t act_min, int32_t act_max, const int clamp)
{
    const mf_dsp_requant q = {mult, k, right};
    int32_t y = __ssat(mf_dsp_requant_apply(acc, &q), 8);
    if (clamp != CLAMP_NONE) {
        y = y < act_min ? act_min : y;
    }
    if (clamp == CLAMP_BOTH) {
        y = y > act_max ? act_max : y;
    }
    return (int8_t)y;
}

/* One tap of four channels: x and w point at the tap's four input values and filter values. */
#define MF_TAP4(xp, wp)                                                                        \
    do {                                                                                       \
        const uint32_t xv_ = mf_load_word(xp), wv_ = mf_load_word(wp);                         \
        const int32_t x02_ = __sxtab16(x_pair, xv_), x13_ = mf_sxtab16_ror8(x_pair, xv_);       \
        const int32_t w02_ = __sxtb16((int32_t)wv_), w13_ = mf_sxtb16_ror8(wv_);                \
        a0 = __smlabb(x02_, w02_, a0);                                                         \
        a1 = __smlabb(x13_, w13_, a1);                                                         \
        a2 = __smlatt(x02_, w02_, a2);                                                         \
        a3 = __smlatt(x13_, w13_, a3);                                                         \
    } while (0)

/* One tap in assembly: the input and filter words at offset `at` of x and w. */
#define MF_TAP4_ASM(at)                                                                        \
    "   ldr     %[xv], [%[x]" at "]                  \n"                                         \
    "   ldr     %[wv], [%[w]" at "]                  \n"                                         \
    "   sxtab16 %[x13], %[pair], %[xv], ror #8       \n"                                         \
    "   sxtab16 %[xv], %[pair], %[xv]                \n"                                         \
    "   sxtb16  %[w13], %[wv], ror #8                \n"                                         \
    "   sxtb16  %[wv], %[wv]                         \n"                                         \
    "   smlabb  %[a0], %[xv], %[wv], %[a0]           \n"                                         \
    "   smlatt  %[a2], %[xv], %[wv], %[a2]           \n"                                         \
    "   smlabb  %[a1], %[x13], %[w13], %[a1]         \n"                                         \
    "   smlatt  %[a3], %[x13], %[w13], %[a3]         \n"

/* A row of three taps `col` apart in both the input and the filter (no dilation along rows),
 * written out: GCC's schedule spills around the twelve registers it needs. */
#if MF_DSP_ASM
#define MF_ROW3(xp, wp, step)                                                                     \
    do {                                                                                       \
        uint32_t xv_, wv_;                                                                     \
        int32_t x13_, w13_;                                                                    \
        __asm__(MF_TAP4_ASM("") MF_TAP4_ASM(", %[col]") MF_TAP4_ASM(", %[col], lsl #1")        \
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xv] "=&r"(xv_),   \
                  [wv] "=&r"(wv_), [x13] "=&r"(x13_), [w13] "=&r"(w13_)                           \
                : [x] "r"(xp), [w] "r"(wp), [col] "r"(step), [pair] "r"(x_pair)                    \
                : "memory");                                                                   \
    } while (0)

#define MF_ROW2(xp, wp, step)                                                                     \
    do {                                                                                       \
        uint32_t xv_, wv_;                                                                     \
        int32_t x13_, w13_;                                                                    \
        __asm__(MF_TAP4_ASM("") MF_TAP4_ASM(", %[col]")                                        \
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xv] "=&r"(xv_),   \
                  [wv] "=&r"(wv_), [x13] "=&r"(x13_), [w13] "=&r"(w13_)                           \
                : [x] "r"(xp), [w] "r"(wp), [col] "r"(step), [pair] "r"(x_pair)                    \
                : "memory");                                                                   \
    } while (0)
#else
#define MF_ROW3(xp, wp, step)                                                                  \
    do {                                                                                       \
        MF_TAP4(xp, wp);                                                                       \
        MF_TAP4((xp) + (step), (wp) + (step));                                                 \
        MF_TAP4((xp) + 2 * (step), (wp) + 2 * (step));                                         \
    } while (0)
#define MF_ROW2(xp, wp, step)                                                                  \
    do {                                                                                       \
        MF_TAP4(xp, wp);                                                                       \
        MF_TAP4((xp) + (step), (wp) + (step));                                                 \
    } while (0)
#endif

#define MF_DM1_COLUMNS 128 /* output columns whose valid taps are worked out once */

/* Depth multiplier 1, the whole tensor: output rows, then four channels at a time, then the pixels
 * of the row, so that the requantization constants of four channels are made once per row. */
static inline __attribute__((always_inline)) void dm1_body(const mf_depthwise_conv_params *p, const int8_t *input,
                                                          int8_t *output, const int fast, const int clamp,
                                                          const int column)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, quads = in_c & ~3;
    const int32_t x_pair = mf_pair16(p->input_offset);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t odd_offset = 2 * out_off + 1;
    const size_t x_col = (size_t)w->dilation_w * in_c, w_col = (size_t)in_c;
    const size_t x_row = (size_t)w->dilation_h * w->in_w * in_c, w_row = (size_t)w->filter_w * in_c;
    const int32_t col = in_c; /* the step of MF_ROW3/MF_ROW2, when x_col == w_col */
    const int32_t *const bias = p->bias, *const mult = p->multiplier, *const shift = p->shift;
    int16_t first_col[MF_DM1_COLUMNS], col_count[MF_DM1_COLUMNS];
    const int32_t known = w->out_w < MF_DM1_COLUMNS ? w->out_w : MF_DM1_COLUMNS;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            int32_t fy0, fy1;
            valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
            const int32_t rows = fy1 - fy0;
            const int8_t *const x_base = input + ((size_t)b * w->in_h + (in_y0 + w->dilation_h * fy0)) * w->in_w * in_c;
            const int8_t *const w_base = p->filter + (size_t)fy0 * w_row;
            int8_t *const out_row = output + ((size_t)b * w->out_h + oy) * w->out_w * in_c;
            if (oy == 0 && b == 0) {
                /* The columns of taps inside the input: the same for every output row. */
                for (int32_t ox = 0; ox < known; ++ox) {
                    int32_t fx0, fx1;
                    valid_taps(ox * w->stride_w - w->pad_w, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                    first_col[ox] = (int16_t)fx0;
                    col_count[ox] = (int16_t)(fx1 - fx0);
                }
            }
            for (int32_t c = 0; c < quads; c += 4) {
                int32_t start[4] = {0, 0, 0, 0}, m[4], k[4], right[4];
                if (bias != NULL) {
                    for (int32_t j = 0; j < 4; ++j) {
                        start[j] = bias[c + j];
                    }
                }
                if (fast) {
                    for (int32_t j = 0; j < 4; ++j) {
                        m[j] = mult[c + j];
                        right[j] = -shift[c + j];
                        k[j] = (int32_t)((uint32_t)odd_offset << right[j]) >> 1;
                    }
                }
                for (int32_t ox = 0; ox < w->out_w; ++ox) {
                    const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                    int32_t fx0, cols;
                    if (ox < known) {
                        fx0 = first_col[ox];
                        cols = col_count[ox];
                    } else {
                        int32_t fx1;
                        valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                        cols = fx1 - fx0;
                    }
                    const int8_t *x = x_base + (size_t)(in_x0 + w->dilation_w * fx0) * in_c + c;
                    const int8_t *f = w_base + (size_t)fx0 * in_c + c;
                    int32_t a0 = start[0], a1 = start[1], a2 = start[2], a3 = start[3];
                    if (column) {
                        /* A filter one column wide (1-D along the height): a column of taps. */
                        for (int32_t r = 0; r < rows * cols; ++r, x += x_row, f += w_row) {
                            MF_TAP4(x, f);
                        }
                    } else if (cols == 3 && x_col == w_col) {
                        for (int32_t r = 0; r < rows; ++r, x += x_row, f += w_row) {
                            MF_ROW3(x, f, col);
                        }
                    } else if (cols == 2 && x_col == w_col) {
                        for (int32_t r = 0; r < rows; ++r, x += x_row, f += w_row) {
                            MF_ROW2(x, f, col);
                        }
                    } else {
                        for (int32_t r = 0; r < rows; ++r, x += x_row, f += w_row) {
                            const int8_t *xt = x, *ft = f;
                            for (int32_t i = 0; i < cols; ++i, xt += x_col, ft += w_col) {
                                MF_TAP4(xt, ft);
                            }
                        }
                    }
                    int8_t *const out = out_row + (size_t)ox * in_c + c;
                    if (fast) {
                        out[0] = finish_fast(a0, m[0], right[0], k[0], act_min, act_max, clamp);
                        out[1] = finish_fast(a1, m[1], right[1], k[1], act_min, act_max, clamp);
                        out[2] = finish_fast(a2, m[2], right[2], k[2], act_min, act_max, clamp);
                        out[3] = finish_fast(a3, m[3], right[3], k[3], act_min, act_max, clamp);
                    } else {
                        out[0] = mf_requantize_to_s8(a0, mult[c], shift[c], out_off, act_min, act_max);
                        out[1] = mf_requantize_to_s8(a1, mult[c + 1], shift[c + 1], out_off, act_min, act_max);
                        out[2] = mf_requantize_to_s8(a2, mult[c + 2], shift[c + 2], out_off, act_min, act_max);
                        out[3] = mf_requantize_to_s8(a3, mult[c + 3], shift[c + 3], out_off, act_min, act_max);
                    }
                }
            }
            if (quads < in_c) {
                /* The last channels, one at a time. */
                for (int32_t ox = 0; ox < w->out_w; ++ox) {
                    const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                    int32_t fx0, fx1;
                    valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                    taps t;
                    t.x = x_base + (size_t)(in_x0 + w->dilation_w * fx0) * in_c;
                    t.w = w_base + (size_t)fx0 * in_c;
                    t.rows = rows;
                    t.cols = fx1 - fx0;
                    t.x_col = x_col;
                    t.x_row = x_row;
                    t.w_col = w_col;
                    t.w_row = w_row;
                    for (int32_t c = quads; c < in_c; ++c) {
                        single_output(p, &t, c, c, out_row + (size_t)ox * in_c);
                    }
                }
            }
        }
    }
}

#undef MF_TAP4
#undef MF_TAP4_ASM
#undef MF_ROW3
#undef MF_ROW2

static __attribute__((noinline)) void dm1_any(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output,
                                              int mode)
{
    /* `column`: filter_w == 1, so that cols is 0 or 1. */
    if (p->win.filter_w == 1) {
        if (mode == 0) {
            dm1_body(p, input, output, 1, CLAMP_NONE, 1);
        } else {
            dm1_body(p, input, output, mode != 3, CLAMP_BOTH, 1);
        }
        return;
    }
    switch (mode) {
    case 0: dm1_body(p, input, output, 1, CLAMP_NONE, 0); break;
    case 1: dm1_body(p, input, output, 1, CLAMP_LOW, 0); break;
    case 2: dm1_body(p, input, output, 1, CLAMP_BOTH, 0); break;
    default: dm1_body(p, input, output, 0, CLAMP_BOTH, 0); break;
    }
}

static int dm1_mode(const mf_depthwise_conv_params *p)
{
    if (!all_fast(p)) {
        return 3;
    }
    return p->act_min == -128 && p->act_max == 127 ? 0 : (p->act_max == 127 ? 1 : 2);
}


/* ---- one input channel, depth multiplier above 1: a convolution with the filter transposed --------
 *
 * With a single input channel, output channel oc is a convolution of that channel with column oc of
 * the filter ([filter_h][filter_w][out_c]). Transposed into rows on the stack, the filter goes
 * through the four-pixel matrix product of the convolutions (mf_dsp_rows), with each pixel's
 * field gathered and padded with the input zero point. */

#define MF_SINGLE_FILTER_BYTES 1024  /* transposed filter */
#define MF_SINGLE_FIELD 128          /* taps per field */

static int single_channel(const mf_depthwise_conv_params *p)
{
    const mf_window *w = &p->win;
    const int32_t taps = w->filter_h * w->filter_w;
    return w->in_c == 1 && w->out_c > 1 && taps <= MF_SINGLE_FIELD && taps * w->out_c <= MF_SINGLE_FILTER_BYTES;
}

static inline void fill(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

/* The field of output pixel (oy, ox), [filter_h][filter_w], padded with the zero point. */
static void gather_single(const mf_depthwise_conv_params *p, const int8_t *image, int32_t oy, int32_t ox, int8_t *col)
{
    const mf_window *w = &p->win;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t in_y0 = oy * w->stride_h - w->pad_h, in_x0 = ox * w->stride_w - w->pad_w;
    int32_t fy0, fy1, fx0, fx1;
    valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
    valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
    if (fy0 > 0 || fy1 < w->filter_h || fx0 > 0 || fx1 < w->filter_w) {
        fill(col, pad, w->filter_h * w->filter_w);
    }
    col += fy0 * w->filter_w;
    for (int32_t fy = fy0; fy < fy1; ++fy, col += w->filter_w) {
        const int8_t *row = image + (size_t)(in_y0 + w->dilation_h * fy) * w->in_w;
        if (w->dilation_w == 1) {
            const int8_t *src = row + in_x0 + fx0;
            int8_t *dst = col + fx0;
            int32_t n = fx1 - fx0;
            for (; n >= 4; n -= 4, src += 4, dst += 4) {
                const uint32_t v = mf_load_word(src);
                memcpy(dst, &v, 4);
                __asm__ volatile("" ::: "memory"); /* keeps GCC from making this loop a call to memcpy */
            }
            for (; n > 0; --n) {
                *dst++ = *src++;
            }
        } else {
            for (int32_t fx = fx0; fx < fx1; ++fx) {
                col[fx] = row[in_x0 + w->dilation_w * fx];
            }
        }
    }
}

static __attribute__((noinline)) void single_channel_conv(const mf_depthwise_conv_params *p, const int8_t *input,
                                                          int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t taps = w->filter_h * w->filter_w, out_c = w->out_c;
    int8_t filter[MF_SINGLE_FILTER_BYTES];
    for (int32_t oc = 0; oc < out_c; ++oc) {
        for (int32_t t = 0; t < taps; ++t) {
            filter[oc * taps + t] = p->filter[(size_t)t * out_c + oc];
        }
    }
    mf_dsp_rows rows;
    rows.filter = filter;
    rows.bias = p->bias;
    rows.multiplier = p->multiplier;
    rows.shift = p->shift;
    rows.field = taps;
    rows.count = out_c;
    rows.out_stride = out_c;
    rows.output_offset = p->output_offset;
    rows.act_min = p->act_min;
    rows.act_max = p->act_max;
    rows.mode = mf_dsp_rows_mode(&rows);
    uint32_t stage[2 * MF_SINGLE_FIELD] __attribute__((aligned(8)));
    int8_t column[MF_SINGLE_FIELD];
    const int32_t n_pixels = w->out_h * w->out_w;
    for (int32_t b = 0; b < w->batches; ++b) {
        const int8_t *image = input + (size_t)b * w->in_h * w->in_w;
        int8_t *out = output + (size_t)b * n_pixels * out_c;
        int32_t oy = 0, ox = 0;
        for (int32_t pix = 0; pix < n_pixels; pix += 4) {
            const int32_t pixels = n_pixels - pix < 4 ? n_pixels - pix : 4;
            for (int32_t r = 0; r < pixels; ++r) {
                gather_single(p, image, oy, ox, column);
                mf_dsp_stage_field(stage, r, column, taps, p->input_offset);
                if (++ox == w->out_w) {
                    ox = 0;
                    ++oy;
                }
            }
            mf_dsp_rows_4px(&rows, stage, pixels, out + (size_t)pix * out_c);
        }
    }
}

#endif /* MF_HAVE_DSP */


void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, out_c = w->out_c;
#if MF_HAVE_DSP
    if (single_channel(p)) {
        single_channel_conv(p, input, output);
        return;
    }
    if (p->depth_multiplier == 1) {
        dm1_any(p, input, output, dm1_mode(p));
        return;
    }
#endif
    taps t;
    t.x_col = (size_t)w->dilation_w * in_c;
    t.x_row = (size_t)w->dilation_h * w->in_w * in_c;
    t.w_col = (size_t)out_c;
    t.w_row = (size_t)w->filter_w * out_c;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            int32_t fy0, fy1;
            valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                int32_t fx0, fx1;
                valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                /* With no tap inside the input (rows or cols 0) the loops add nothing: only the bias. */
                t.rows = fy1 - fy0;
                t.cols = fx1 - fx0;
                t.x = input + (((size_t)b * w->in_h + (in_y0 + w->dilation_h * fy0)) * w->in_w +
                               (in_x0 + w->dilation_w * fx0)) * in_c;
                t.w = p->filter + ((size_t)fy0 * w->filter_w + fx0) * out_c;
                pixel(p, &t, output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * out_c);
            }
        }
    }
}
