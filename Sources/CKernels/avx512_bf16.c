// AVX-512-BF16: round_bf16 through vcvtneps2bf16, matmul_bf16 through vdpbf16ps.
//
// Every output is one dot product: a single zmm accumulator per (i, j); each vdpbf16ps adds to lane l
// the products of the element pair (32c + 2l, 32c + 2l + 1) of chunk c, chunks in K order (the K tail
// through a masked load, zeros elsewhere), then hsum16's fixed reduction tree. The register tile only
// decides how many such dot products run side by side, so out[i][j] is bit-identical whatever T, N,
// or tile position produced it (batch invariance). Inputs and weights are read as they are (no
// widening, no packing); the GEMM path walks K in chunks so a weight panel chunk stays in L1.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define FKI static inline __attribute__((always_inline)) FK_TARGET_AVX512_BF16

enum { RM = 4, RN = 6, RN1 = 8 };  // GEMM tile 4x6 (24 accumulators); GEMV (one row) 1x8
#ifndef FK_KC_BF16
#define FK_KC_BF16 1024
#endif
enum { MB = 256 };                 // rows of X per GEMM pass (multiple of RM)
enum { KC = FK_KC_BF16 };          // K chunk of the GEMM path (multiple of 32)

static _Thread_local __m512 *scratch_ptr;  // per-thread scratch of the GEMM path; grows, never shrinks
static _Thread_local size_t scratch_cap;

FK_TARGET_AVX512_BF16 static __m512 *scratch(size_t vectors) {
    if (vectors <= scratch_cap) return scratch_ptr;
    size_t cap = vectors + vectors / 4 + 16;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap * sizeof(__m512)) != 0) return NULL;
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

FKI __m512bh load32(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512(p); }
FKI __m512bh load32m(const uint16_t *p, __mmask32 m) { return (__m512bh)_mm512_maskz_loadu_epi16(m, p); }

// rm X rows against rn W rows over elements [e0, e1) of K (e0 a multiple of 32; only the last chunk,
// e1 == k, may end in a masked partial step). accin == NULL: start from zero; accout == NULL: reduce
// into out, else keep the partial accumulators there for the next chunk.
FKI void tile(int rm, int rn, float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w,
              size_t ldw, size_t e0, size_t e1, const __m512 *accin, __m512 *accout) {
    __m512 acc[RM][RN1];
    FK_UNROLL for (int i = 0; i < rm; i++)
        FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = accin ? accin[i * RN1 + j] : _mm512_setzero_ps();
    size_t e = e0;
    for (; e + 32 <= e1; e += 32) {
        __m512bh wv[RN1];
        FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load32(w + j * ldw + e);
        FK_UNROLL for (int i = 0; i < rm; i++) {
            __m512bh xv = load32(x + i * ldx + e);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
        }
    }
    if (e < e1) {
        __mmask32 m = (__mmask32)((1ull << (e1 - e)) - 1);
        __m512bh wv[RN1];
        FK_UNROLL for (int j = 0; j < rn; j++) wv[j] = load32m(w + j * ldw + e, m);
        FK_UNROLL for (int i = 0; i < rm; i++) {
            __m512bh xv = load32m(x + i * ldx + e, m);
            FK_UNROLL for (int j = 0; j < rn; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
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

// One activation row against RN1 weight rows (the full tile of the GEMV), each weight line
// prefetched one tile ahead: while this tile's rows stream, the next tile's rows (the next RN1 * k
// values, contiguous) are fetched at the same position. Same accumulation as tile(1, RN1, ...).
FKI void gemv_tile(float *out, const uint16_t *x, const uint16_t *w, size_t k) {
    __m512 acc[RN1];
    FK_UNROLL for (int j = 0; j < RN1; j++) acc[j] = _mm512_setzero_ps();
    const uint16_t *ahead = w + RN1 * k;
    size_t e = 0;
    for (; e + 32 <= k; e += 32) {
        __m512bh xv = load32(x + e);
        FK_UNROLL for (int j = 0; j < RN1; j++) {
            _mm_prefetch((const char *)(ahead + j * k + e), _MM_HINT_T1);
            acc[j] = _mm512_dpbf16_ps(acc[j], xv, load32(w + j * k + e));
        }
    }
    if (e < k) {
        __mmask32 m = (__mmask32)((1ull << (k - e)) - 1);
        __m512bh xv = load32m(x + e, m);
        FK_UNROLL for (int j = 0; j < RN1; j++) acc[j] = _mm512_dpbf16_ps(acc[j], xv, load32m(w + j * k + e, m));
    }
    FK_UNROLL for (int j = 0; j < RN1; j++) out[j] = hsum16(acc[j]);
}

#define TILE_CASE(r, c) case (r) * 16 + (c): tile(r, c, out, ldo, x, ldx, w, ldw, e0, e1, ai, ao); break;
#define TILE_ROW(r) TILE_CASE(r, 1) TILE_CASE(r, 2) TILE_CASE(r, 3) TILE_CASE(r, 4) TILE_CASE(r, 5) TILE_CASE(r, 6)

FKI void tile_any(int rm, int rn, float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w,
                  size_t ldw, size_t e0, size_t e1, const __m512 *ai, __m512 *ao) {
    switch (rm * 16 + rn) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
        TILE_CASE(1, 7) TILE_CASE(1, 8)
        default: break;
    }
}

FKI void matmul_rows(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n,
                     size_t k) {
    if (k == 0) {
        for (size_t i = 0; i < t; i++) memset(out + i * ldo, 0, n * sizeof(float));
        return;
    }
    if (t == 1) {  // GEMV: stream RN1 weight rows at once, full K in registers
        size_t j = 0;
        for (; j + RN1 <= n; j += RN1) gemv_tile(out + j, x, w + j * k, k);
        if (j < n) tile_any(1, (int)(n - j), out + j, ldo, x, ldx, w + j * k, k, 0, k, NULL, NULL);
        return;
    }
    // GEMM: for each panel of RN weight rows, K in chunks of KC so the panel chunk stays in L1 while
    // every row tile passes over it; partial accumulators of all row tiles wait in accs between
    // chunks (bitwise the same as one pass over K). With more than one row tile the panel is first
    // copied with a padded row stride (strides that are multiples of 4 KiB put all rows in the same
    // L1 sets).
    int packed = t > RM;
    size_t lp = (k + 31) / 32 * 32 + 32;
    size_t tiles = (t + RM - 1) / RM;
    size_t accv = k > KC ? tiles * RM * RN1 : 0;
    size_t need = accv + (packed ? (RN * lp * 2 + 63) / 64 : 0);
    __m512 *buf = need ? scratch(need) : NULL;
    if (!buf) {  // K in one chunk and nothing to pack, or no memory: full K per tile, straight from the inputs
        for (size_t j = 0; j < n; j += RN)
            for (size_t i = 0; i < t; i += RM)
                tile_any((int)(t - i < RM ? t - i : RM), (int)(n - j < RN ? n - j : RN), out + i * ldo + j, ldo,
                         x + i * ldx, ldx, w + j * k, k, 0, k, NULL, NULL);
        return;
    }
    __m512 *accs = buf;
    uint16_t *panel = (uint16_t *)(buf + accv);
    for (size_t j = 0; j < n; j += RN) {
        int rn = (int)(n - j < RN ? n - j : RN);
        const uint16_t *wp = w + j * k;
        size_t ldw = k;
        if (packed) {
            for (int r = 0; r < rn; r++) memcpy(panel + r * lp, wp + r * k, k * 2);
            wp = panel, ldw = lp;
        }
        for (size_t e0 = 0; e0 < k; e0 += KC) {
            size_t e1 = k - e0 > KC ? e0 + KC : k;
            for (size_t i = 0, ti = 0; i < t; i += RM, ti++) {
                int rm = (int)(t - i < RM ? t - i : RM);
                __m512 *a = accs + ti * RM * RN1;
                tile_any(rm, rn, out + i * ldo + j, ldo, x + i * ldx, ldx, wp, ldw, e0, e1,
                         e0 ? a : NULL, e1 < k ? a : NULL);
            }
        }
    }
}

// Rows in blocks of MB, so the scratch of partial accumulators stays bounded for long prompts.
FK_TARGET_AVX512_BF16 void fk_avx512_bf16_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx,
                                                      const uint16_t *w, size_t t, size_t n, size_t k) {
    if (t == 0 || n == 0) return;
    for (size_t i0 = 0; i0 < t; i0 += MB) matmul_rows(out + i0 * ldo, ldo, x + i0 * ldx, ldx, w, t - i0 < MB ? t - i0 : MB, n, k);
}

FK_TARGET_AVX512_BF16 void fk_avx512_bf16_round_bf16(uint16_t *dst, const float *src, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < count) {
        __mmask16 m = (__mmask16)((1u << (count - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
    }
}
#endif
