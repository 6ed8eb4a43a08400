/* Writing the console protocol's JSON lines without printf: small, and the same on every C
 * library. Each call writes straight to the console through the port. */
#ifndef MCUFORGE_JSON_WRITER_H
#define MCUFORGE_JSON_WRITER_H

#include <stddef.h>
#include <stdint.h>

void json_text(const char *text);
/* A string value: quotes added, and quotes, backslashes and control characters escaped. */
void json_string(const char *text);
void json_u64(uint64_t value);
void json_i64(int64_t value);
/* A signed count, or null when negative ("the platform cannot tell"). */
void json_count_or_null(int64_t value);
/* A float with six decimals (enough for a score; NaN and infinities as null). */
void json_f32(float value);
/* Bytes as lowercase hex, two digits each. */
void json_hex(const void *data, uint32_t n);

#endif
