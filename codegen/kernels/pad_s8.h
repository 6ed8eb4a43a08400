/* PAD and PADV2 (int8): parameters and entry point. */
#ifndef MF_PAD_S8_H
#define MF_PAD_S8_H

#include <stdint.h>

#define MF_PAD_DIMS 5

/* The shape is given in MF_PAD_DIMS dimensions, outermost first (missing outer ones have size 1
 * and no padding); neighbouring dimensions are merged where the inner one is not padded. */
typedef struct {
    int32_t input_size[MF_PAD_DIMS];
    int32_t before[MF_PAD_DIMS];   /* padding elements in front of the input, per dimension */
    int32_t after[MF_PAD_DIMS];    /* padding elements behind it */
    int8_t value;                  /* the fill, already quantized */
} mf_pad_params;

void mf_pad_s8(const mf_pad_params *p, const int8_t *input, int8_t *output);

#endif /* MF_PAD_S8_H */
