// The naive twins: every op as plain loops with double accumulation, the reference each variant is
// tested against (Tests/FlamingoCoreTests/KernelVariantTests.swift). Written for clarity, not speed.
#include "kernels_internal.h"
#include <math.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }

void fk_naive_round_bf16(uint16_t *dst, const float *src, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if (isnan(src[i])) { dst[i] = (uint16_t)((u >> 16) | 0x40); continue; }
        u += 0x7FFFu + ((u >> 16) & 1);
        dst[i] = (uint16_t)(u >> 16);
    }
}

void fk_naive_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k) {
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t e = 0; e < k; e++) s += (double)x[i * ldx + e] * (double)w[j * k + e];
            out[i * ldo + j] = (float)s;
        }
}

void fk_naive_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) {
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t e = 0; e < k; e++) s += (double)x[i * ldx + e] * (double)fk_f16_to_f32(w[j * k + e]);
            out[i * ldo + j] = (float)s;
        }
}

void fk_naive_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) {
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t e = 0; e < k; e++) s += (double)bf16_to_f32(x[i * ldx + e]) * (double)bf16_to_f32(w[j * k + e]);
            out[i * ldo + j] = (float)s;
        }
}

void fk_naive_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    for (size_t i = 0; i < t; i++)
        for (size_t b = 0; b < blocks; b++) {
            size_t lo = b * FK_Q8_BLOCK, hi = lo + FK_Q8_BLOCK < k ? lo + FK_Q8_BLOCK : k;
            float amax = 0;
            for (size_t e = lo; e < hi; e++) amax = fmaxf(amax, fabsf(x[i * ldx + e]));
            float scale = amax / 127.0f;
            int8_t *q = rows.q + (i * blocks + b) * FK_Q8_BLOCK;
            int32_t sum = 0;
            for (size_t e = 0; e < FK_Q8_BLOCK; e++) {
                int v = 0;
                if (lo + e < hi && scale > 0) v = (int)roundf(x[i * ldx + lo + e] / scale);
                q[e] = (int8_t)v;
                sum += v;
            }
            rows.scale[i * blocks + b] = scale;
            rows.sum[i * blocks + b] = sum;
        }
}

void fk_naive_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    for (size_t i = 0; i < t; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t b = 0; b < blocks; b++) {
                size_t lo = b * FK_Q8_BLOCK, len = lo + FK_Q8_BLOCK < k ? FK_Q8_BLOCK : k - lo;
                int32_t dot = 0;
                for (size_t e = 0; e < len; e++) dot += (int32_t)x.q[(i * blocks + b) * FK_Q8_BLOCK + e] * (int32_t)wq[j * k + lo + e];
                s += (double)fk_f16_to_f32(wscale[j * blocks + b]) * (double)x.scale[i * blocks + b] * (double)dot;
            }
            out[i * ldo + j] = (float)s;
        }
}

int fk_quantize_weight_row_q8(int8_t *q, uint16_t *scale, const float *w, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    for (size_t b = 0; b < blocks; b++) {
        size_t lo = b * FK_Q8_BLOCK, hi = lo + FK_Q8_BLOCK < k ? lo + FK_Q8_BLOCK : k;
        float amax = 0;
        for (size_t e = lo; e < hi; e++) {
            if (!isfinite(w[e])) return -1;
            amax = fmaxf(amax, fabsf(w[e]));
        }
        uint16_t s = fk_f32_to_f16(amax / 127.0f);
        if ((s & 0x7C00) == 0x7C00) return -1;
        scale[b] = s;
        float d = fk_f16_to_f32(s);
        for (size_t e = lo; e < hi; e++) {
            float v = d > 0 ? roundf(w[e] / d) : 0;
            q[e] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
    }
    return 0;
}
