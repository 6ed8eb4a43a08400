/* CONV_2D in place, Helium family: 1x1 convolutions run straight over their input (the kernel
 * stages each block of pixels before it writes their outputs); the others one output row at a
 * time through scratch (see conv_in_place.h and mf_row_window.h). */
#include "conv_in_place.h"
#include "mf_row_window.h"

static void conv_row(const void *params, const mf_window *row, const int8_t *in, int8_t *out)
{
    mf_conv_params p = *(const mf_conv_params *)params;
    p.win = *row;
    mf_conv_s8(&p, in, out);
}

void mf_conv_s8_in_place(const mf_conv_params *p, int8_t *data, int8_t *scratch)
{
    if (mf_conv_s8_runs_in_place(p)) {
        mf_conv_s8(p, data, data);
        return;
    }
    mf_rows_in_place(&p->win, p, conv_row, data, scratch);
}
