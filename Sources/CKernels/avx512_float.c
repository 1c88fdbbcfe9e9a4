// AVX-512 F/BW/VL/DQ float kernels: f32, f16 (vcvtph2ps) and bf16 (widened to f32), FMA accumulation.
//
// Every output is one dot product: a single zmm accumulator per (i, j) in which lane l sums, in K
// order, the products of the elements e with e % 16 == l (the K tail through a masked load, zeros
// elsewhere), then hsum16's fixed reduction tree. The register tile (up to RM x RN pairs) only
// decides how many such dot products run side by side, never how one is computed, so out[i][j]
// is bit-identical whatever T, N, tile position, or path (direct or packed) produced it.
//
// Paths: small T reads W directly (f16/bf16 widened in the loop); larger T first widens a panel of
// RN weight rows to f32 (exact) into per-thread scratch and reuses it for every row tile, and for
// bf16 widens X once. Widening is exact, so both paths feed the same values to the same FMAs.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define FKI static inline __attribute__((always_inline)) FK_TARGET_AVX512

enum { T_F32, T_F16, T_BF16 };
enum { RM = 4, RN = 6, RN1 = 8 };  // GEMM tile 4x6 (24 accumulators); GEMV (one row) 1x8
#ifndef FK_KC
#define FK_KC 256
#endif
enum { MB = 256 };                 // rows of X per GEMM pass (multiple of RM)
enum { KC = FK_KC };               // K chunk of the GEMM path (multiple of 16)

// Per-thread scratch (kernels run on several threads at once); grows, never shrinks.
static _Thread_local float *scratch_ptr;
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

FKI float hsum16(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

// 16 elements at p (type ty) as f32; the masked form loads only the first lanes of m (zeros elsewhere).
FKI __m512 load16(int ty, const void *p) {
    if (ty == T_F32) return _mm512_loadu_ps(p);
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (ty == T_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

FKI __m512 load16m(int ty, const void *p, __mmask16 m) {
    if (ty == T_F32) return _mm512_maskz_loadu_ps(m, p);
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (ty == T_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

FKI size_t esize(int ty) { return ty == T_F32 ? 4 : 2; }

// One register tile: dot products of rm X rows with rn W rows over elements [e0, e1) of K. rm, rn,
// xt, wt are constants at every call site (the switches below), so the loops unroll and acc stays in
// registers. Accumulators start at zero (acc == NULL on entry: first chunk) or come from acc; they
// end in acc (more chunks follow) or, if out != NULL, reduced into out. e0 is a multiple of 16; only
// the last chunk (e1 == k) may end with a partial (masked) vector.
FKI void tile(int xt, int wt, int rm, int rn, float *out, size_t ldo, const void *x, size_t ldx,
              const void *w, size_t ldw, size_t e0, size_t e1, __m512 *accin, __m512 *accout) {
    const char *xb = x, *wb = w;
    const size_t xs = esize(xt), ws = esize(wt);
    __m512 acc[RM][RN1];
    FK_UNROLL for (int i = 0; i < rm; i++)
        FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = accin ? accin[i * RN1 + j] : _mm512_setzero_ps();
    size_t e = e0;
    for (; e + 16 <= e1; e += 16) {
        __m512 wv[RN1];
        FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load16(wt, wb + (j * ldw + e) * ws);
        FK_UNROLL for (int i = 0; i < rm; i++) {
            __m512 xv = load16(xt, xb + (i * ldx + e) * xs);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (e < e1) {
        __mmask16 m = (__mmask16)((1u << (e1 - e)) - 1);
        __m512 wv[RN1];
        FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load16m(wt, wb + (j * ldw + e) * ws, m);
        FK_UNROLL for (int i = 0; i < rm; i++) {
            __m512 xv = load16m(xt, xb + (i * ldx + e) * xs, m);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (accout) {
        FK_UNROLL for (int i = 0; i < rm; i++)
            FK_UNROLL for (int j = 0; j < rn; j++) accout[i * RN1 + j] = acc[i][j];
    } else {
        FK_UNROLL for (int i = 0; i < rm; i++)
            FK_UNROLL for (int j = 0; j < rn; j++) out[i * ldo + j] = hsum16(acc[i][j]);
    }
}

#define TILE_CASE(r, c) case (r) * 16 + (c): tile(xt, wt, r, c, out, ldo, x, ldx, w, ldw, e0, e1, ai, ao); break;
#define TILE_ROW(r) TILE_CASE(r, 1) TILE_CASE(r, 2) TILE_CASE(r, 3) TILE_CASE(r, 4) TILE_CASE(r, 5) TILE_CASE(r, 6)

FKI void tile_any(int xt, int wt, int rm, int rn, float *out, size_t ldo, const void *x, size_t ldx,
                  const void *w, size_t ldw, size_t e0, size_t e1, __m512 *ai, __m512 *ao) {
    switch (rm * 16 + rn) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
        TILE_CASE(1, 7) TILE_CASE(1, 8)
        default: break;
    }
}

// Widens (or copies) `rows` rows of k elements (type ty, stride ld) to f32 rows of stride ldd.
FKI void widen_rows(int ty, float *dst, const void *src, size_t ld, size_t rows, size_t k, size_t ldd) {
    const char *s = src;
    const size_t es = esize(ty);
    for (size_t r = 0; r < rows; r++) {
        size_t e = 0;
        for (; e + 16 <= k; e += 16) _mm512_storeu_ps(dst + r * ldd + e, load16(ty, s + (r * ld + e) * es));
        if (e < k) {
            __mmask16 m = (__mmask16)((1u << (k - e)) - 1);
            _mm512_mask_storeu_ps(dst + r * ldd + e, m, load16m(ty, s + (r * ld + e) * es, m));
        }
    }
}

FKI void matmul_rows(int xt, int wt, float *out, size_t ldo, const void *x, size_t ldx, const void *w,
                     size_t t, size_t n, size_t k) {
    const size_t xs = esize(xt), ws = esize(wt);
    if (k == 0) {
        for (size_t i = 0; i < t; i++) memset(out + i * ldo, 0, n * sizeof(float));
        return;
    }
    if (t == 1) {  // GEMV: stream RN1 weight rows at once, full K in registers
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
    size_t lp = (k + 15) / 16 * 16 + 16;
    size_t tiles = (t + RM - 1) / RM;
    size_t accfloats = k > KC ? tiles * RM * RN1 * 16 : 0;
    size_t need = accfloats + (packed ? RN * lp : 0) + (packed && xt != T_F32 ? t * lp : 0);
    float *buf = need ? scratch(need) : NULL;
    if (!buf) {  // K in one chunk and nothing to pack, or no memory: full K per tile, straight from the inputs
        for (size_t j = 0; j < n; j += RN)
            for (size_t i = 0; i < t; i += RM)
                tile_any(xt, wt, (int)(t - i < RM ? t - i : RM), (int)(n - j < RN ? n - j : RN), out + i * ldo + j, ldo,
                         (const char *)x + i * ldx * xs, ldx, (const char *)w + j * k * ws, k, 0, k, NULL, NULL);
        return;
    }
    __m512 *accs = (__m512 *)buf;
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
                __m512 *ai = e0 ? accs + ti * RM * RN1 : NULL, *ao = e1 < k ? accs + ti * RM * RN1 : NULL;
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

FK_TARGET_AVX512 void fk_avx512_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w,
                                           size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F32, out, ldo, x, ldx, w, t, n, k);
}

FK_TARGET_AVX512 void fk_avx512_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w,
                                           size_t t, size_t n, size_t k) {
    matmul(T_F32, T_F16, out, ldo, x, ldx, w, t, n, k);
}

FK_TARGET_AVX512 void fk_avx512_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w,
                                            size_t t, size_t n, size_t k) {
    matmul(T_BF16, T_BF16, out, ldo, x, ldx, w, t, n, k);
}

// Round to nearest even on the dropped 16 bits; NaN -> (bits >> 16) | 0x40 (quiet), as fk_naive.
FKI __m256i round16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

FK_TARGET_AVX512 void fk_avx512_round_bf16(uint16_t *dst, const float *src, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), round16(_mm512_loadu_ps(src + i)));
    if (i < count) {
        __mmask16 m = (__mmask16)((1u << (count - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, round16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}
#endif
