/* The sliding window of input rows behind in-place convolution (see conv_in_place.h). */
#ifndef MF_ROW_WINDOW_H
#define MF_ROW_WINDOW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mf_window.h"

typedef struct {
    int32_t first_row;   /* input row held in scratch row 0 */
    int32_t rows;        /* rows held */
} mf_row_window;

/* Bring the window to input rows [lo, hi], dropping rows above and appending rows below.
 * Appended rows are read from `image`, where they are still unmodified. */
static inline void mf_slide_window(mf_row_window *w, int8_t *scratch, const int8_t *image, size_t row_bytes, int32_t lo, int32_t hi)
{
    if (w->rows > 0 && lo > w->first_row) {
        int32_t drop = lo - w->first_row;
        if (drop > w->rows) {
            drop = w->rows;
        }
        memmove(scratch, scratch + (size_t)drop * row_bytes, (size_t)(w->rows - drop) * row_bytes);
        w->rows -= drop;
        w->first_row += drop;
    }
    if (w->rows == 0) {
        w->first_row = lo;
    }
    while (w->first_row + w->rows <= hi) {
        const int32_t row = w->first_row + w->rows;
        memcpy(scratch + (size_t)w->rows * row_bytes, image + (size_t)row * row_bytes, row_bytes);
        w->rows++;
    }
}

/* For output row `oy`: the window of input rows it reads, and the window geometry that makes the
 * ordinary kernel produce exactly that one row. */
static inline void mf_row_geometry(const mf_window *full, int32_t oy, mf_row_window *w, int8_t *scratch, const int8_t *image,
                         mf_window *row)
{
    const int32_t top = oy * full->stride_h - full->pad_h;
    const int32_t span = (full->filter_h - 1) * full->dilation_h + 1;
    const int32_t lo = top < 0 ? 0 : top;
    const int32_t hi = top + span - 1 < full->in_h - 1 ? top + span - 1 : full->in_h - 1;
    const size_t row_bytes = (size_t)full->in_w * (size_t)full->in_c;
    mf_slide_window(w, scratch, image, row_bytes, lo, hi);
    *row = *full;
    row->batches = 1;
    row->in_h = w->rows;
    row->out_h = 1;
    row->pad_h = w->first_row - top;
}

#endif /* MF_ROW_WINDOW_H */
