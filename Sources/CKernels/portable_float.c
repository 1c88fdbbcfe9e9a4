// Portable float kernels: plain C (no intrinsics, no target attributes) written so the compiler can
// vectorise it for the baseline target (x86-64 SSE2, aarch64 NEON).
//
// Every output is one dot product with VL lanes: lane l sums, in K order, the products of the
// elements e with e % VL == l (the K tail zero-padded), then hsum's fixed reduction tree. The
// register tile (up to RM x RN dot products side by side) and the K chunking never change how one
// dot product is computed, so out[i][j] is bit-identical whatever T, N, or tile position produced it
// (batch invariance). Each product-accumulate is written as one `acc += x * w` expression, so the
// compiler treats every one alike (fused on aarch64 under the default -ffp-contract=on, separate
// multiply and add on SSE2).
//
// f16 and bf16 weights are widened exactly to f32, a chunk of KC elements of a panel of weight rows
// at a time, into a stack buffer reused by every row tile; bf16 activations likewise per row tile.
#include "kernels_internal.h"
#include <string.h>

#define FKI static inline __attribute__((always_inline))

enum { VL = 4 };                   // lanes of one accumulator (one SSE / NEON register)
enum { RM = 4, RN = 3, RN1 = 8 };  // GEMM tile 4x3 (12 accumulators); GEMV 1x8
enum { KC = 256 };                 // K chunk (multiple of VL)
enum { MB = 64 };                  // rows of X whose partial accumulators wait on the stack
enum { T_F32, T_F16, T_BF16 };

static inline uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

FKI float bf16_to_f32(uint16_t b) { return float_of((uint32_t)b << 16); }

// Exact IEEE half -> float (same values as fk_f16_to_f32), branch-free so loops over it vectorise.
FKI float f16_to_f32(uint16_t h) {
    uint32_t a = h & 0x7FFFu, sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t normal = (a << 13) + 0x38000000u;                     // rebias exponent 15 -> 127
    uint32_t special = (a << 13) | 0x7F800000u;                    // inf, NaN (payload kept)
    uint32_t sub = bits_of((float)a * 5.9604644775390625e-8f);     // a * 2^-24, exact
    uint32_t r = a >= 0x7C00u ? special : a >= 0x0400u ? normal : sub;
    return float_of(r | sign);
}

FKI float hsum(const float a[VL]) { return (a[0] + a[1]) + (a[2] + a[3]); }

// Accumulates rm X rows against rn W rows (f32, row strides ldx, ldw) over elements [0, len) into
// acc. len is a multiple of VL except in the last chunk of K, whose partial step is zero-padded.
// rm and rn are constants at every call site (the switch below): the loops unroll and the local
// copy of acc stays in registers.
FKI void tile(int rm, int rn, const float *x, size_t ldx, const float *w, size_t ldw, size_t len,
              float acc[RM][RN1][VL]) {
    float a[RM][RN1][VL];
    FK_UNROLL for (int i = 0; i < rm; i++)
        FK_UNROLL for (int j = 0; j < rn; j++)
            FK_UNROLL for (int l = 0; l < VL; l++) a[i][j][l] = acc[i][j][l];
    size_t e = 0;
    for (; e + VL <= len; e += VL) {
        FK_UNROLL for (int i = 0; i < rm; i++) {
            float xv[VL];
            FK_UNROLL for (int l = 0; l < VL; l++) xv[l] = x[i * ldx + e + l];
            FK_UNROLL for (int j = 0; j < rn; j++)
                FK_UNROLL for (int l = 0; l < VL; l++) a[i][j][l] += xv[l] * w[j * ldw + e + l];
        }
    }
    if (e < len) {
        size_t r = len - e;
        float wv[RN1][VL], xv[VL];
        FK_UNROLL for (int j = 0; j < rn; j++)
            FK_UNROLL for (int l = 0; l < VL; l++) wv[j][l] = (size_t)l < r ? w[j * ldw + e + l] : 0.0f;
        FK_UNROLL for (int i = 0; i < rm; i++) {
            FK_UNROLL for (int l = 0; l < VL; l++) xv[l] = (size_t)l < r ? x[i * ldx + e + l] : 0.0f;
            FK_UNROLL for (int j = 0; j < rn; j++)
                FK_UNROLL for (int l = 0; l < VL; l++) a[i][j][l] += xv[l] * wv[j][l];
        }
    }
    FK_UNROLL for (int i = 0; i < rm; i++)
        FK_UNROLL for (int j = 0; j < rn; j++)
            FK_UNROLL for (int l = 0; l < VL; l++) acc[i][j][l] = a[i][j][l];
}

#define TILE_CASE(r, c) case (r) * 16 + (c): tile(r, c, x, ldx, w, ldw, len, acc); break;
#define TILE_ROW(r) TILE_CASE(r, 1) TILE_CASE(r, 2) TILE_CASE(r, 3)

static void tile_any(int rm, int rn, const float *x, size_t ldx, const float *w, size_t ldw, size_t len,
                     float acc[RM][RN1][VL]) {
    switch (rm * 16 + rn) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
        TILE_CASE(1, 4) TILE_CASE(1, 5) TILE_CASE(1, 6) TILE_CASE(1, 7) TILE_CASE(1, 8)
        default: break;
    }
}

// Widens `rows` rows of len elements (stride ld) to f32 rows of stride KC.
FKI void widen(int ty, float *dst, const uint16_t *src, size_t ld, size_t rows, size_t len) {
    for (size_t r = 0; r < rows; r++) {
        float *d = dst + r * KC;
        const uint16_t *s = src + r * ld;
        if (ty == T_F16) {
#if defined(__aarch64__)
            const __fp16 *h = (const __fp16 *)(const void *)s;  // fcvtl: exact widening
            for (size_t e = 0; e < len; e++) d[e] = (float)h[e];
#else
            for (size_t e = 0; e < len; e++) d[e] = f16_to_f32(s[e]);
#endif
        }
        else
            for (size_t e = 0; e < len; e++) d[e] = bf16_to_f32(s[e]);
    }
}

// out[T, N] = X · Wᵀ with X of type xt (f32 or bf16) and W of type wt. Loop order: panels of rn
// weight rows; blocks of up to MB rows of X; K in chunks of KC (the weight chunk widened once per
// block into wbuf); row tiles of RM over the block, their partial accumulators in accs.
FKI void matmul(int xt, int wt, float *out, size_t ldo, const void *xv, size_t ldx, const void *wvoid,
                size_t t, size_t n, size_t k) {
    const size_t ws = wt == T_F32 ? 4 : 2, xs = xt == T_F32 ? 4 : 2;
    const int pn = t == 1 ? RN1 : RN;  // panel height
    float wbuf[RN1 * KC], xbuf[RM * KC];
    float accs[MB / RM][RM][RN1][VL];
    for (size_t j = 0; j < n; j += (size_t)pn) {
        int rn = (int)(n - j < (size_t)pn ? n - j : (size_t)pn);
        const char *wp = (const char *)wvoid + j * k * ws;
        for (size_t i0 = 0; i0 < t; i0 += MB) {
            size_t mb = t - i0 < MB ? t - i0 : MB;
            size_t tiles = (mb + RM - 1) / RM;
            memset(accs, 0, tiles * sizeof accs[0]);
            for (size_t e0 = 0; e0 < k || e0 == 0; e0 += KC) {
                size_t len = k - e0 < KC ? k - e0 : KC;
                const float *w = (const float *)wp + e0;
                size_t ldw = k;
                if (wt != T_F32) {
                    widen(wt, wbuf, (const uint16_t *)wp + e0, k, (size_t)rn, len);
                    w = wbuf, ldw = KC;
                }
                for (size_t ti = 0; ti < tiles; ti++) {
                    size_t i = i0 + ti * RM;
                    int rm = (int)(t - i < RM ? t - i : RM);
                    const float *x = (const float *)((const char *)xv + i * ldx * xs) + e0;
                    size_t lx = ldx;
                    if (xt != T_F32) {
                        widen(xt, xbuf, (const uint16_t *)xv + i * ldx + e0, ldx, (size_t)rm, len);
                        x = xbuf, lx = KC;
                    }
                    tile_any(rm, rn, x, lx, w, ldw, len, accs[ti]);
                }
                if (k == 0) break;
            }
            for (size_t ti = 0; ti < tiles; ti++) {
                size_t i = i0 + ti * RM;
                int rm = (int)(t - i < RM ? t - i : RM);
                for (int a = 0; a < rm; a++)
                    for (int b = 0; b < rn; b++) out[(i + a) * ldo + j + b] = hsum(accs[ti][a][b]);
            }
        }
    }
}

void fk_portable_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F32, out, ldo, x, ldx, w, t, n, k);
}

void fk_portable_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F16, out, ldo, x, ldx, w, t, n, k);
}

void fk_portable_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) {
    matmul(T_BF16, T_BF16, out, ldo, x, ldx, w, t, n, k);
}

// Round to nearest even on the dropped 16 bits; NaN -> (bits >> 16) | 0x40 (quiet), as fk_naive.
void fk_portable_round_bf16(uint16_t *dst, const float *src, size_t count) {
    for (size_t i = 0; i < count; i++) {
        float f = src[i];
        uint32_t u = bits_of(f);
        uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        uint32_t q = (u >> 16) | 0x40u;
        dst[i] = (uint16_t)(f != f ? q : r);
    }
}
