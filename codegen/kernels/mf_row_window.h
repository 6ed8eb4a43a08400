/* The row-by-row driver behind in-place convolution (see conv_in_place.h).
 *
 * Output row oy of a convolution with vertical stride 1 reads input rows oy - pad_h onwards, and
 * lands on bytes of input rows oy and above (an output row is no larger than an input row). So once
 * output rows up to oy + pad_h have been computed, nothing reads the input rows under output row oy
 * any more, and it can be written. Each output row is computed straight from the unmodified input
 * rows of the tensor into one of pad_h + 1 row slots of scratch, and written back pad_h rows later:
 * one copy of each output row, and a scratch of pad_h + 1 output rows (mf_in_place_scratch_rows). */
#ifndef MF_ROW_WINDOW_H
#define MF_ROW_WINDOW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mf_mve.h"
#include "mf_window.h"

/* How many output rows the scratch holds: the delay of pad_h rows, and the row being computed.
 * codegen/aot_ops/conv_common.py plans the same figure. */
static inline int32_t mf_in_place_scratch_rows(const mf_window *w)
{
    return w->pad_h + 1 < w->out_h ? w->pad_h + 1 : w->out_h;
}

/* memcpy for the row copies: newlib-nano's is a byte loop behind a call. */
static inline void mf_copy_bytes(int8_t *dst, const int8_t *src, size_t n)
{
#if MF_HAVE_MVE
    mf_mve_copy_bytes(dst, src, (int32_t)n);
#else
    /* Words through memcpy of four bytes: single loads and stores where unaligned access is
     * allowed (Cortex-M3 and up), byte copies elsewhere. */
    for (; n >= 8; n -= 8, src += 8, dst += 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + 4, &b, 4);
    }
    for (; n > 0; --n) {
        *dst++ = *src++;
    }
#endif
}

/* Computes output rows [oy, oy + 1) of `full` from `image` (whose unmodified input rows it may
 * read) into `out`, with `row` the window geometry of that one row and `in` its first input row. */
typedef void (*mf_row_kernel)(const void *params, const mf_window *row, const int8_t *in, int8_t *out);

/* Runs `kernel` one output row at a time over every batch, writing the output over the input. */
static inline void mf_rows_in_place(const mf_window *full, const void *params, mf_row_kernel kernel, int8_t *data,
                                    int8_t *scratch)
{
    const size_t in_row = (size_t)full->in_w * (size_t)full->in_c;
    const size_t out_row = (size_t)full->out_w * (size_t)full->out_c;
    const size_t in_image = (size_t)full->in_h * in_row;
    const size_t out_image = (size_t)full->out_h * out_row;
    const int32_t slots = mf_in_place_scratch_rows(full);
    const int32_t span = (full->filter_h - 1) * full->dilation_h + 1;
    mf_window row = *full;
    row.batches = 1;
    row.out_h = 1;
    for (int32_t b = 0; b < full->batches; ++b) {
        const int8_t *image = data + (size_t)b * in_image;
        int8_t *out = data + (size_t)b * out_image;
        int32_t slot = 0;
        for (int32_t oy = 0; oy < full->out_h; ++oy) {
            /* The input rows [lo, hi] that output row oy reads. */
            const int32_t top = oy - full->pad_h;
            const int32_t lo = top < 0 ? 0 : top;
            const int32_t hi = top + span - 1 < full->in_h - 1 ? top + span - 1 : full->in_h - 1;
            row.in_h = hi >= lo ? hi - lo + 1 : 0;
            row.pad_h = lo - top;
            kernel(params, &row, image + (size_t)lo * in_row, scratch + (size_t)slot * out_row);
            if (++slot == slots) {
                slot = 0;
            }
            /* The slot computed `slots - 1` rows ago (now `slot`) can go to its place. */
            const int32_t done = oy - (slots - 1);
            if (done >= 0) {
                mf_copy_bytes(out + (size_t)done * out_row, scratch + (size_t)slot * out_row, out_row);
            }
        }
        /* The last slots - 1 rows, oldest first. */
        for (int32_t oy = full->out_h - (slots - 1); oy < full->out_h; ++oy) {
            mf_copy_bytes(out + (size_t)oy * out_row, scratch + (size_t)(oy % slots) * out_row, out_row);
        }
    }
}

#endif /* MF_ROW_WINDOW_H */
