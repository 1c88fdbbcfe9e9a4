// q8 kernels in plain C for the baseline target (x86-64 SSE2, aarch64 NEON): no intrinsics, no
// target attributes; the compiler vectorises the fixed-length integer block dots.
//
// Numerics (fixed, so out[i][j] depends on X row i and W row j only, whatever the tile):
//   acc = 0; for each block b in order: acc = acc + (wscale[b] * xscale[b]) * (float)dot_b
// with dot_b the exact int32 block dot. The product and the sum are separate statements and
// FP_CONTRACT is off, so no build fuses them differently in different tiles.
#include "kernels_internal.h"
#include <string.h>

#pragma STDC FP_CONTRACT OFF

static inline float pq8_float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/// Exact f16 -> f32 without branches on the common path (same values as fk_f16_to_f32).
static inline float pq8_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = h & 0x7C00u, m = h & 0x3FFu;
    float mag;
    if (e == 0) mag = (float)m * 5.9604644775390625e-8f;                       // zero, subnormal
    else if (e == 0x7C00u) mag = pq8_float_of(0x7F800000u | (m << 13));        // inf, NaN
    else mag = pq8_float_of(((uint32_t)(h & 0x7FFFu) << 13) + (112u << 23));   // normal
    float r = mag;
    uint32_t u;
    memcpy(&u, &r, 4);
    return pq8_float_of(u | sign);
}

/// round-half-away-from-zero (== roundf) of v for |v| < 2^23, NaN -> 0, clamped to [-127, 127].
static inline int32_t pq8_round_q(float v) {
    v = v == v ? v : 0.0f;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    int32_t t = (int32_t)v;              // truncation
    float d = v - (float)t;              // exact
    return t + (d >= 0.5f) - (d <= -0.5f);
}

void fk_portable_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    for (size_t i = 0; i < t; i++) {
        const float *xr = x + i * ldx;
        for (size_t b = 0; b < blocks; b++) {
            size_t lo = b * FK_Q8_BLOCK, len = lo + FK_Q8_BLOCK <= k ? FK_Q8_BLOCK : k - lo;
            float v[FK_Q8_BLOCK];
            for (size_t e = 0; e < FK_Q8_BLOCK; e++) v[e] = 0.0f;
            memcpy(v, xr + lo, len * sizeof(float));
            float amax = 0.0f;
            for (size_t e = 0; e < FK_Q8_BLOCK; e++) {
                float a = v[e] < 0 ? -v[e] : v[e];
                amax = a > amax ? a : amax;
            }
            float scale = amax / 127.0f;
            int8_t *q = rows.q + (i * blocks + b) * FK_Q8_BLOCK;
            int32_t sum = 0;
            if (scale > 0) {
                for (size_t e = 0; e < FK_Q8_BLOCK; e++) {
                    int32_t r = pq8_round_q(v[e] / scale);
                    q[e] = (int8_t)r;
                    sum += r;
                }
            } else {
                memset(q, 0, FK_Q8_BLOCK);
            }
            rows.scale[i * blocks + b] = scale;
            rows.sum[i * blocks + b] = sum;
        }
    }
}

/// Exact int32 dot of one 32-block. |a*b| <= 127*127 fits int16, which lets SSE2 use pmullw on
/// half as many widened lanes (aarch64 gets smull/saddl either way).
static inline int32_t pq8_dot32(const int8_t *a, const int8_t *b) {
    int16_t p[FK_Q8_BLOCK];
    for (int e = 0; e < FK_Q8_BLOCK; e++) p[e] = (int16_t)((int16_t)a[e] * (int16_t)b[e]);
    int32_t s = 0;
    for (int e = 0; e < FK_Q8_BLOCK; e++) s += p[e];
    return s;
}

static inline int32_t pq8_dot_n(const int8_t *a, const int8_t *b, size_t len) {
    int32_t s = 0;
    for (size_t e = 0; e < len; e++) s += (int32_t)a[e] * (int32_t)b[e];
    return s;
}

enum { PQ8_RM = 4, PQ8_RN = 4, PQ8_SB = 64 /* weight scales converted per pass */ };

void fk_portable_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale,
                           size_t t, size_t n, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    size_t full = k / FK_Q8_BLOCK;                     // blocks of 32 whole weight values
    size_t tail = k - full * FK_Q8_BLOCK;              // length of the short last block (0: none)
    for (size_t j0 = 0; j0 < n; j0 += PQ8_RN) {
        size_t rn = n - j0 < PQ8_RN ? n - j0 : PQ8_RN;
        for (size_t i0 = 0; i0 < t; i0 += PQ8_RM) {
            size_t rm = t - i0 < PQ8_RM ? t - i0 : PQ8_RM;
            float acc[PQ8_RM][PQ8_RN] = {{0}};
            for (size_t b0 = 0; b0 < blocks; b0 += PQ8_SB) {
                size_t nb = blocks - b0 < PQ8_SB ? blocks - b0 : PQ8_SB;
                float ws[PQ8_RN][PQ8_SB];
                for (size_t jj = 0; jj < rn; jj++)
                    for (size_t b = 0; b < nb; b++) ws[jj][b] = pq8_h2f(wscale[(j0 + jj) * blocks + b0 + b]);
                for (size_t b = b0; b < b0 + nb; b++) {
                    int is_tail = b == full;  // only the last block can be short
                    for (size_t ii = 0; ii < rm; ii++) {
                        const int8_t *xb = x.q + ((i0 + ii) * blocks + b) * FK_Q8_BLOCK;
                        float xs = x.scale[(i0 + ii) * blocks + b];
                        for (size_t jj = 0; jj < rn; jj++) {
                            const int8_t *wb = wq + (j0 + jj) * k + b * FK_Q8_BLOCK;
                            int32_t dot = is_tail ? pq8_dot_n(xb, wb, tail) : pq8_dot32(xb, wb);
                            float d = ws[jj][b - b0] * xs;
                            float p = d * (float)dot;
                            acc[ii][jj] = acc[ii][jj] + p;
                        }
                    }
                }
            }
            for (size_t ii = 0; ii < rm; ii++)
                for (size_t jj = 0; jj < rn; jj++) out[(i0 + ii) * ldo + j0 + jj] = acc[ii][jj];
        }
    }
}
