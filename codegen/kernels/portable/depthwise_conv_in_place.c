/* DEPTHWISE_CONV_2D in place, one output row at a time from a window of input rows
 * (see conv_in_place.h). */
#include "conv_in_place.h"
#include "mf_row_window.h"

void mf_depthwise_conv_s8_in_place(const mf_depthwise_conv_params *p, int8_t *data, int8_t *scratch)
{
    const size_t in_image = (size_t)p->win.in_h * p->win.in_w * p->win.in_c;
    const size_t out_image = (size_t)p->win.out_h * p->win.out_w * p->win.out_c;
    const size_t out_row = (size_t)p->win.out_w * p->win.out_c;
    for (int32_t b = 0; b < p->win.batches; ++b) {
        const int8_t *image = data + (size_t)b * in_image;
        int8_t *out = data + (size_t)b * out_image;
        mf_row_window w = {0, 0};
        mf_depthwise_conv_params row = *p;
        for (int32_t oy = 0; oy < p->win.out_h; ++oy) {
            mf_row_geometry(&p->win, oy, &w, scratch, image, &row.win);
            mf_depthwise_conv_s8(&row, scratch, out + (size_t)oy * out_row);
        }
    }
}
