#include "json_writer.h"

#include "port.h"

static const char nibbles[] = "0123456789abcdef";

void json_text(const char *text)
{
    size_t n = 0;
    while (text[n] != '\0') {
        n++;
    }
    port_console_write(text, n);
}

void json_string(const char *text)
{
    port_console_write("\"", 1);
    for (const char *p = text; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char escaped[2] = {'\\', (char)c};
            port_console_write(escaped, 2);
        } else if (c < 0x20u) {
            char escaped[6] = {'\\', 'u', '0', '0', nibbles[c >> 4], nibbles[c & 0x0fu]};
            port_console_write(escaped, sizeof escaped);
        } else {
            port_console_write((const char *)p, 1);
        }
    }
    port_console_write("\"", 1);
}

void json_u64(uint64_t value)
{
    char digits[20];
    size_t pos = sizeof digits;
    do {
        digits[--pos] = (char)('0' + (unsigned)(value % 10u));
        value /= 10u;
    } while (value != 0u);
    port_console_write(&digits[pos], sizeof digits - pos);
}

void json_i64(int64_t value)
{
    if (value < 0) {
        port_console_write("-", 1);
        json_u64((uint64_t)0 - (uint64_t)value);
    } else {
        json_u64((uint64_t)value);
    }
}

void json_count_or_null(int64_t value)
{
    if (value < 0) {
        json_text("null");
    } else {
        json_u64((uint64_t)value);
    }
}

void json_f32(float value)
{
    if (value != value || value > 3.4e38f || value < -3.4e38f) {
        json_text("null");
        return;
    }
    if (value < 0.0f) {
        port_console_write("-", 1);
        value = -value;
    }
    /* Six decimals, rounded; the integer part as a 64-bit count (far beyond any score). */
    double scaled = (double)value * 1e6 + 0.5;
    if (scaled >= 1.8e19) {
        json_text("1e13");
        return;
    }
    uint64_t micro = (uint64_t)scaled;
    json_u64(micro / 1000000u);
    char fraction[7] = {'.'};
    uint32_t rest = (uint32_t)(micro % 1000000u);
    for (int i = 6; i >= 1; i--) {
        fraction[i] = (char)('0' + rest % 10u);
        rest /= 10u;
    }
    port_console_write(fraction, sizeof fraction);
}

void json_hex(const void *data, uint32_t n)
{
    const uint8_t *bytes = (const uint8_t *)data;
    char chunk[64];
    size_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        chunk[used++] = nibbles[bytes[i] >> 4];
        chunk[used++] = nibbles[bytes[i] & 0x0fu];
        if (used == sizeof chunk) {
            port_console_write(chunk, used);
            used = 0;
        }
    }
    port_console_write(chunk, used);
}
