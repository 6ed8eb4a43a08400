/* CONCATENATION, int8: portable C99. TFLM's int8 concatenation copies bytes without
 * requantizing; mcuforge only accepts models in which that is exact (equal quantization). */
#include <stddef.h>
#include <string.h>

#include "concatenation_s8.h"

void mf_concatenation_s8(const int8_t *input, int8_t *output, int32_t outer, int32_t row_bytes,
                         int32_t output_row_bytes)
{
    for (int32_t o = 0; o < outer; ++o) {
        memcpy(output + (size_t)o * (size_t)output_row_bytes, input + (size_t)o * (size_t)row_bytes,
               (size_t)row_bytes);
    }
}
