// IEEE 754 half precision <-> float in plain C (exact widening, round-to-nearest-even narrowing).
#include "flamingo_kernels.h"
#include <string.h>

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    if (exponent == 0x1F) return float_of(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
    if (exponent == 0) {
        // zero or subnormal: value = mantissa * 2^-24, exact in f32
        float v = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t fk_f32_to_f16(float f) {
    uint32_t u = bits_of(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return sign | 0x7C00 | (a > 0x7F800000u ? 0x200 : 0);  // inf, quiet NaN
    if (a >= 0x477FF000u) return sign | 0x7C00;                                  // rounds past 65504
    if (a < 0x38800000u) {
        // result is subnormal or zero: round a * 2^24 to an integer, nearest even
        float scaled = float_of(a) * 16777216.0f;  // exact: a power-of-two scale of a small value
        uint32_t m = (uint32_t)scaled;
        float rest = scaled - (float)m;
        if (rest > 0.5f || (rest == 0.5f && (m & 1))) m++;
        return sign | (uint16_t)m;
    }
    uint32_t rounded = a + 0x0FFFu + ((a >> 13) & 1);  // round to nearest even on the dropped 13 bits
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}
