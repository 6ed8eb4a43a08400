/* Geometry of a sliding window (convolution or pooling) over an NHWC tensor. */
#ifndef MF_WINDOW_H
#define MF_WINDOW_H

#include <stdint.h>

typedef struct {
    int32_t batches;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;        /* padding before the first row / column */
} mf_window;

#endif /* MF_WINDOW_H */
