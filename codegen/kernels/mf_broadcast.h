/* Numpy-style broadcasting of two operands onto one output, for elementwise kernels.
 *
 * The host computes, per output dimension, how far each input's index moves (0 where that
 * input is broadcast), so the device only adds strides. */
#ifndef MF_BROADCAST_H
#define MF_BROADCAST_H

#include <stdint.h>

#define MF_MAX_DIMS 6

typedef struct {
    int32_t count;                  /* output elements */
    int32_t broadcast;              /* 0: both inputs have the output's shape */
    int32_t ndim;
    int32_t shape[MF_MAX_DIMS];     /* output shape */
    int32_t stride1[MF_MAX_DIMS];   /* input 1 element stride per output dimension */
    int32_t stride2[MF_MAX_DIMS];
} mf_broadcast;

/* Step the output counter by one element and move both input indices accordingly. */
static inline void mf_broadcast_next(const mf_broadcast *bc, int32_t *counter, int32_t *i1, int32_t *i2)
{
    for (int32_t d = bc->ndim - 1; d >= 0; --d) {
        *i1 += bc->stride1[d];
        *i2 += bc->stride2[d];
        if (++counter[d] < bc->shape[d]) {
            return;
        }
        *i1 -= bc->stride1[d] * bc->shape[d];
        *i2 -= bc->stride2[d] * bc->shape[d];
        counter[d] = 0;
    }
}

#endif /* MF_BROADCAST_H */
