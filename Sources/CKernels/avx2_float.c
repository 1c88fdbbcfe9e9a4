// AVX2 + FMA + F16C float kernels: f32, f16 (vcvtph2ps) and bf16 (widened to f32), FMA accumulation.
//
// Every output is one dot product: a single ymm accumulator per (i, j) in which lane l sums, in K
// order, the products of the elements e with e % 8 == l (the K tail zero-padded), then hsum8's fixed
// reduction tree. The register tile only decides how many such dot products run side by side, never
// how one is computed, so out[i][j] is bit-identical whatever T, N, tile position or path produced it.
//
// Paths: T == 1 reads W directly (f16/bf16 widened in the loop), one row against RN1 weight rows.
// T > 1 walks each panel of RN weight rows in K chunks of KC (partial accumulators kept between
// chunks); for T > RM the panel is first widened to f32 (exact) into per-thread scratch, and bf16 X
// once, so the widening is not repeated for every row tile.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define FKI static inline __attribute__((always_inline)) FK_TARGET_AVX2

enum { T_F32, T_F16, T_BF16 };
enum { RM = 4, RN = 3, RN1 = 6 };  // GEMM tile 4x3 (12 accumulators of 16 registers); GEMV 1x6
#ifndef FK_KC_AVX2
#define FK_KC_AVX2 512
#endif
enum { MB = 256 };                 // rows of X per GEMM pass (multiple of RM)
enum { KC = FK_KC_AVX2 };          // K chunk of the GEMM path (multiple of 8)

static _Thread_local float *scratch_ptr;  // per-thread, grows, never shrinks
static _Thread_local size_t scratch_cap;

static float *scratch(size_t floats) {
    if (floats <= scratch_cap) return scratch_ptr;
    size_t cap = floats + floats / 4 + 1024;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) return NULL;
    free(scratch_ptr);
    scratch_ptr = p;
    scratch_cap = cap;
    return scratch_ptr;
}

FKI float hsum8(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

FKI size_t esize(int ty) { return ty == T_F32 ? 4 : 2; }

// 8 elements at p (type ty) as f32.
FKI __m256 load8(int ty, const void *p) {
    if (ty == T_F32) return _mm256_loadu_ps(p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (ty == T_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Lanes l < r set (r < 8).
FKI __m256i tail_mask(size_t r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first r (< 8) elements at p, zeros elsewhere.
FKI __m256 load8_part(int ty, const void *p, size_t r) {
    if (ty == T_F32) return _mm256_maskload_ps(p, tail_mask(r));
    uint16_t tmp[8] = {0};
    memcpy(tmp, p, r * 2);
    return load8(ty, tmp);
}

// rm X rows against rn W rows over elements [e0, e1) of K (e0 a multiple of 8; only the last chunk,
// e1 == k, may end in a partial step). accin == NULL: start from zero; accout == NULL: reduce into
// out, else keep the partial accumulators there for the next chunk. rm, rn, xt, wt are constants at
// every call site (the switch below), so the loops unroll and acc stays in registers.
FKI void tile(int xt, int wt, int rm, int rn, float *out, size_t ldo, const void *x, size_t ldx,
              const void *w, size_t ldw, size_t e0, size_t e1, const __m256 *accin, __m256 *accout) {
    const char *xb = x, *wb = w;
    const size_t xs = esize(xt), ws = esize(wt);
    __m256 acc[RM][RN1];
    FK_UNROLL for (int i = 0; i < rm; i++)
        FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = accin ? accin[i * RN1 + j] : _mm256_setzero_ps();
    size_t e = e0;
    if (rm == 1) {  // GEMV: load each weight vector right before its FMA (fewer live registers)
        for (; e + 8 <= e1; e += 8) {
            __m256 xv = load8(xt, xb + e * xs);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[0][j] = _mm256_fmadd_ps(xv, load8(wt, wb + (j * ldw + e) * ws), acc[0][j]);
        }
    } else {
        for (; e + 8 <= e1; e += 8) {
            __m256 wv[RN1];
            FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load8(wt, wb + (j * ldw + e) * ws);
            FK_UNROLL for (int i = 0; i < rm; i++) {
                __m256 xv = load8(xt, xb + (i * ldx + e) * xs);
                FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
    }
    if (e < e1) {
        size_t r = e1 - e;
        __m256 wv[RN1];
        FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load8_part(wt, wb + (j * ldw + e) * ws, r);
        FK_UNROLL for (int i = 0; i < rm; i++) {
            __m256 xv = load8_part(xt, xb + (i * ldx + e) * xs, r);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (accout) {
        FK_UNROLL for (int i = 0; i < rm; i++)
            FK_UNROLL for (int j = 0; j < rn; j++) accout[i * RN1 + j] = acc[i][j];
    } else {
        FK_UNROLL for (int i = 0; i < rm; i++)
            FK_UNROLL for (int j = 0; j < rn; j++) out[i * ldo + j] = hsum8(acc[i][j]);
    }
}

#define TILE_CASE(r, c) case (r) * 16 + (c): tile(xt, wt, r, c, out, ldo, x, ldx, w, ldw, e0, e1, ai, ao); break;
#define TILE_ROW(r) TILE_CASE(r, 1) TILE_CASE(r, 2) TILE_CASE(r, 3)

FKI void tile_any(int xt, int wt, int rm, int rn, float *out, size_t ldo, const void *x, size_t ldx,
                  const void *w, size_t ldw, size_t e0, size_t e1, const __m256 *ai, __m256 *ao) {
    switch (rm * 16 + rn) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
        TILE_CASE(1, 4) TILE_CASE(1, 5) TILE_CASE(1, 6)
        default: break;
    }
}

// Widens (or copies) `rows` rows of k elements (type ty, stride ld) to f32 rows of stride ldd.
FKI void widen_rows(int ty, float *dst, const void *src, size_t ld, size_t rows, size_t k, size_t ldd) {
    const char *s = src;
    const size_t es = esize(ty);
    for (size_t r = 0; r < rows; r++) {
        size_t e = 0;
        for (; e + 8 <= k; e += 8) _mm256_storeu_ps(dst + r * ldd + e, load8(ty, s + (r * ld + e) * es));
        if (e < k) _mm256_maskstore_ps(dst + r * ldd + e, tail_mask(k - e), load8_part(ty, s + (r * ld + e) * es, k - e));
    }
}

FKI void matmul_rows(int xt, int wt, float *out, size_t ldo, const void *x, size_t ldx, const void *w,
                     size_t t, size_t n, size_t k) {
    const size_t xs = esize(xt), ws = esize(wt);
    if (k == 0) {
        for (size_t i = 0; i < t; i++) memset(out + i * ldo, 0, n * sizeof(float));
        return;
    }
    if (t == 1) {
        size_t j = 0;
        for (; j + RN1 <= n; j += RN1)
            tile(xt, wt, 1, RN1, out + j, ldo, x, ldx, (const char *)w + j * k * ws, k, 0, k, NULL, NULL);
        if (j < n) tile_any(xt, wt, 1, (int)(n - j), out + j, ldo, x, ldx, (const char *)w + j * k * ws, k, 0, k, NULL, NULL);
        return;
    }
    // GEMM: for each panel of RN weight rows, K in chunks of KC so the panel chunk stays in L1 while
    // every row tile passes over it; partial accumulators of all row tiles wait in accs between
    // chunks (bitwise the same as one pass over K). With more than one row tile the panel is first
    // copied (f32) or widened (f16, bf16) into scratch with a padded row stride (strides that are
    // multiples of 4 KiB put all rows in the same L1 sets), and bf16 X widened once the same way.
    int packed = t > RM;
    size_t lp = (k + 7) / 8 * 8 + 8;
    size_t tiles = (t + RM - 1) / RM;
    size_t accfloats = k > KC ? tiles * RM * RN1 * 8 : 0;
    size_t need = accfloats + (packed ? RN * lp : 0) + (packed && xt != T_F32 ? t * lp : 0);
    float *buf = need ? scratch(need) : NULL;
    if (!buf) {  // K in one chunk and nothing to pack, or no memory: full K per tile, straight from the inputs
        for (size_t j = 0; j < n; j += RN)
            for (size_t i = 0; i < t; i += RM)
                tile_any(xt, wt, (int)(t - i < RM ? t - i : RM), (int)(n - j < RN ? n - j : RN), out + i * ldo + j, ldo,
                         (const char *)x + i * ldx * xs, ldx, (const char *)w + j * k * ws, k, 0, k, NULL, NULL);
        return;
    }
    __m256 *accs = (__m256 *)buf;
    float *panel = buf + accfloats;
    const void *xp = x;
    size_t xld = ldx;
    if (packed && xt != T_F32) {
        float *xw = panel + RN * lp;
        widen_rows(xt, xw, x, ldx, t, k, lp);
        xp = xw, xld = lp;
    }
    const size_t xps = packed ? 4 : xs;
    for (size_t j = 0; j < n; j += RN) {
        int rn = (int)(n - j < RN ? n - j : RN);
        const void *wp = (const char *)w + j * k * ws;
        size_t ldw = k;
        if (packed) {
            widen_rows(wt, panel, wp, k, (size_t)rn, k, lp);
            wp = panel, ldw = lp;
        }
        for (size_t e0 = 0; e0 < k; e0 += KC) {
            size_t e1 = k - e0 > KC ? e0 + KC : k;
            for (size_t i = 0, ti = 0; i < t; i += RM, ti++) {
                int rm = (int)(t - i < RM ? t - i : RM);
                const void *xi = (const char *)xp + i * xld * xps;
                __m256 *ai = e0 ? accs + ti * RM * RN1 : NULL, *ao = e1 < k ? accs + ti * RM * RN1 : NULL;
                if (packed) tile_any(T_F32, T_F32, rm, rn, out + i * ldo + j, ldo, xi, xld, wp, ldw, e0, e1, ai, ao);
                else tile_any(xt, wt, rm, rn, out + i * ldo + j, ldo, xi, xld, wp, ldw, e0, e1, ai, ao);
            }
        }
    }
}

// Rows in blocks of MB, so scratch (widened X, partial accumulators) stays bounded for long prompts.
FKI void matmul(int xt, int wt, float *out, size_t ldo, const void *x, size_t ldx, const void *w,
                size_t t, size_t n, size_t k) {
    if (t == 0 || n == 0) return;
    for (size_t i0 = 0; i0 < t; i0 += MB) matmul_rows(xt, wt, out + i0 * ldo, ldo, (const char *)x + i0 * ldx * esize(xt), ldx, w, t - i0 < MB ? t - i0 : MB, n, k);
}

FK_TARGET_AVX2 void fk_avx2_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w,
                                       size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F32, out, ldo, x, ldx, w, t, n, k);
}

FK_TARGET_AVX2 void fk_avx2_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w,
                                       size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F16, out, ldo, x, ldx, w, t, n, k);
}

FK_TARGET_AVX2 void fk_avx2_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w,
                                        size_t t, size_t n, size_t k) {
    matmul(T_BF16, T_BF16, out, ldo, x, ldx, w, t, n, k);
}

// Round to nearest even on the dropped 16 bits; NaN -> (bits >> 16) | 0x40 (quiet), as fk_naive.
FKI __m256i round8(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(r, q, nan);  // 8 values < 65536 in 32-bit lanes
}

FK_TARGET_AVX2 void fk_avx2_round_bf16(uint16_t *dst, const float *src, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m256i a = round8(_mm256_loadu_ps(src + i)), b = round8(_mm256_loadu_ps(src + i + 8));
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < count; i += 8) {
        size_t r = count - i < 8 ? count - i : 8;
        float tmp[8] = {0};
        memcpy(tmp, src + i, r * 4);
        __m256i a = round8(_mm256_loadu_ps(tmp));
        __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        uint16_t o[8];
        _mm_storeu_si128((__m128i *)o, p);
        memcpy(dst + i, o, r * 2);
    }
}
#endif
