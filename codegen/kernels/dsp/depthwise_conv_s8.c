/* DEPTHWISE_CONV_2D, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * Channels are neighbours in both the input and the filter, so one word holds four channels of a
 * tap: SXTB16/SXTAB16 widen them to int16 pairs and SMLABB/SMLATT add each product to its own
 * channel's sum (mf_dsp.h). With a depth multiplier above 1, the outputs of one input channel are the
 * neighbours instead, and the one input value multiplies four filter values at a time. The tap range
 * that lands inside the input is worked out once per output pixel, not tested tap by tap. */
#include <stddef.h>

#include "depthwise_conv_s8.h"
#include "mf_dsp.h"
#include "mf_quant.h"

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

void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, out_c = w->out_c;
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
