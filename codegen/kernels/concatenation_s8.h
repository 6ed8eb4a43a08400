/* CONCATENATION (int8): entry point. All inputs share the output's scale and zero point, so
 * concatenating is copying bytes; the generated code calls this once per input. */
#ifndef MF_CONCATENATION_S8_H
#define MF_CONCATENATION_S8_H

#include <stdint.h>

/* Copies `outer` rows of `row_bytes` bytes, read back to back from `input`, into rows that are
 * `output_row_bytes` apart starting at `output` (which points at this input's place in row 0). */
void mf_concatenation_s8(const int8_t *input, int8_t *output, int32_t outer, int32_t row_bytes,
                         int32_t output_row_bytes);

#endif /* MF_CONCATENATION_S8_H */
