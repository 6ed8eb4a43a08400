/* DEPTHWISE_CONV_2D in place, one output row at a time (see conv_in_place.h and mf_row_window.h). */
#include "conv_in_place.h"
#include "mf_row_window.h"

static void depthwise_row(const void *params, const mf_window *row, const int8_t *in, int8_t *out)
{
    mf_depthwise_conv_params p = *(const mf_depthwise_conv_params *)params;
    p.win = *row;
    mf_depthwise_conv_s8(&p, in, out);
}

void mf_depthwise_conv_s8_in_place(const mf_depthwise_conv_params *p, int8_t *data, int8_t *scratch)
{
    mf_rows_in_place(&p->win, p, depthwise_row, data, scratch);
}
