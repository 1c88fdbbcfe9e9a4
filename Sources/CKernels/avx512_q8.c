// q8 kernels for AVX-512 F + BW (every function carries FK_TARGET_AVX512; the file builds with
// default flags). One zmm covers two 32-blocks. AVX-512 has no vpsignb, so the sign of x moves onto
// w with a mask: |x| (vpabsb) as unsigned bytes times (x < 0 ? -w : w) (vpmovb2m + masked vpsubb) as
// signed bytes through vpmaddubsw (no saturation: |q| <= 127), pairs widened to int32 (vpmaddwd).
//
// Numerics, shared bit for bit with fk_avx2_matmul_q8 and fk_avx512_vnni_matmul_q8, so out[i][j] is
// the same whatever the tile, T, N, or which of the three x86 families runs:
//   8 f32 lanes per (i, j); L_b = the 8 lanes of block b, lane l = exact int32 sum of the block's
//   products 4l .. 4l+3, converted to f32; P_b = f32(wscale[b]) * xscale[b] (one f32 product).
//   For each pair of blocks (2c, 2c+1) in order: acc = acc + fma(L_2c+1, P_2c+1, L_2c * P_2c)
//   (a lone last block: acc = acc + L_2c * P_2c). out = ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
// Implementation: the integer dot runs on a zmm (blocks 2c, 2c+1), is converted as one zmm, and its
// two 256-bit halves are scaled by P broadcast from a small table computed 16 blocks at a time (one
// zmm multiply per (i, j) per 16 blocks). Broadcasting P instead of expanding two scales to 8 lanes
// each and multiplying per chunk roughly doubled the tile throughput on Zen 4, where vpdpbusd and
// FMA share ports. The add at the end keeps the loop-carried chain at one add per 64 values (two
// chained FMAs capped a lone row, the T = 1 case, at ~30 GB/s from L2; this reaches ~42).
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>

#define A5 FK_TARGET_AVX512 static inline __attribute__((always_inline))

A5 float q8a5_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // l + l+4
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                           // + l+2
    s = _mm_add_ss(s, _mm_movehdup_ps(s));                                            // + l+1
    return _mm_cvtss_f32(s);
}

/// round half away from zero (exact for |v| < 2^23) of v, clamped to [-127, 127].
A5 __m512 q8a5_round(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 d = _mm512_sub_ps(v, t);
    t = _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(d, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, one);
    t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(d, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), t, one);
    t = _mm512_min_ps(t, _mm512_set1_ps(127.0f));
    return _mm512_max_ps(t, _mm512_set1_ps(-127.0f));
}

/// Same values as fk_naive_quantize_rows_q8: scale = max|x| / 127, q = roundf(x / scale) (a true
/// division, ties away from zero), so every x86 family and the portable one quantize identically.
FK_TARGET_AVX512
void fk_avx512_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    for (size_t i = 0; i < t; i++) {
        const float *xr = x + i * ldx;
        for (size_t b = 0; b < blocks; b++) {
            size_t lo = b * FK_Q8_BLOCK, len = lo + FK_Q8_BLOCK <= k ? FK_Q8_BLOCK : k - lo;
            uint32_t m = len == 32 ? 0xFFFFFFFFu : (1u << len) - 1;
            __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)m, xr + lo);
            __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), xr + lo + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            float scale = amax / 127.0f;
            int8_t *q = rows.q + (i * blocks + b) * FK_Q8_BLOCK;
            int32_t sum = 0;
            if (scale > 0) {
                __m512 sv = _mm512_set1_ps(scale);
                __m512i i0 = _mm512_cvttps_epi32(q8a5_round(_mm512_div_ps(v0, sv)));
                __m512i i1 = _mm512_cvttps_epi32(q8a5_round(_mm512_div_ps(v1, sv)));
                sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
                _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(i0));
                _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(i1));
            } else {
                _mm256_storeu_si256((__m256i *)q, _mm256_setzero_si256());
            }
            rows.scale[i * blocks + b] = scale;
            rows.sum[i * blocks + b] = sum;
        }
    }
}

enum {
    Q8A5_MR = 4, Q8A5_MN = 4,  // register tile: activation rows x weight rows
    Q8A5_G = 16,               // blocks per scale-product table
    Q8A5_PREFETCH = 16384,     // T = 1: weight bytes prefetched ahead of the one streamed row
};

/// Chunk c (blocks 2c, 2c+1) of an RM x RN tile; pointers at the chunk, p = this chunk's scale
/// products in the table. tail: the last chunk, wbytes (< 64) weight bytes, `two`: it has 2 blocks.
A5 void q8a5_chunk(const int RM, const int RN, __m256 acc[Q8A5_MR][Q8A5_MN], const int8_t *xq, size_t xstride,
                   const int8_t *wq, size_t k, float (*P)[Q8A5_MN][Q8A5_G], size_t p, const int tail,
                   size_t wbytes, const int two) {
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i w[Q8A5_MN];
    // One weight row alone (T = 1) streams at the read limit only with a software prefetch far ahead.
    if (RN == 1 && !tail) _mm_prefetch((const char *)wq + Q8A5_PREFETCH, _MM_HINT_T1);
    _Pragma("unroll")
    for (int j = 0; j < RN; j++)
        w[j] = tail ? _mm512_maskz_loadu_epi8(~0ull >> (64 - wbytes), wq + j * k) : _mm512_loadu_si512(wq + j * k);
    _Pragma("unroll")
    for (int i = 0; i < RM; i++) {
        __m512i xv = tail && !two ? _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(xq + i * xstride)))
                                  : _mm512_loadu_si512(xq + i * xstride);
        __mmask64 neg = _mm512_movepi8_mask(xv);
        __m512i ax = _mm512_abs_epi8(xv);
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) {
            __m512i sw = _mm512_mask_sub_epi8(w[j], neg, _mm512_setzero_si512(), w[j]);
            __m512 f = _mm512_cvtepi32_ps(_mm512_madd_epi16(_mm512_maddubs_epi16(ax, sw), ones));
            // c = lanes(2c) * P(2c) [+ lanes(2c+1) * P(2c+1), fused]; acc += c
            __m256 c2 = _mm256_mul_ps(_mm512_castps512_ps256(f), _mm256_set1_ps(P[i][j][p]));
            if (!tail || two) c2 = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm256_set1_ps(P[i][j][p + 1]), c2);
            acc[i][j] = _mm256_add_ps(acc[i][j], c2);
        }
    }
}

A5 void q8a5_tile(const int RM, const int RN, float *out, size_t ldo, const int8_t *xq, const float *xs,
                  const int8_t *wq, const uint16_t *ws, size_t blocks, size_t k) {
    __m256 acc[Q8A5_MR][Q8A5_MN];
    float P[Q8A5_MR][Q8A5_MN][Q8A5_G] __attribute__((aligned(64)));
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    size_t xstride = blocks * FK_Q8_BLOCK, chunks = k / 64;  // chunks of two whole blocks
    for (size_t g = 0; g < blocks; g += Q8A5_G) {
        size_t nb = blocks - g < Q8A5_G ? blocks - g : Q8A5_G;
        __mmask16 m = (__mmask16)(nb == 16 ? 0xFFFF : (1u << nb) - 1);
        __m512 wsf[Q8A5_MN];
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) wsf[j] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, ws + j * blocks + g));
        _Pragma("unroll")
        for (int i = 0; i < RM; i++) {
            __m512 xsf = _mm512_maskz_loadu_ps(m, xs + i * blocks + g);
            _Pragma("unroll")
            for (int j = 0; j < RN; j++) _mm512_store_ps(P[i][j], _mm512_mul_ps(wsf[j], xsf));
        }
        size_t c0 = g / 2, c1 = c0 + Q8A5_G / 2 < chunks ? c0 + Q8A5_G / 2 : chunks;
        for (size_t c = c0; c < c1; c++)
            q8a5_chunk(RM, RN, acc, xq + c * 64, xstride, wq + c * 64, k, P, 2 * (c - c0), 0, 64, 1);
        if (c1 < c0 + Q8A5_G / 2 && 2 * c1 < blocks)  // the last chunk: 1 or 2 blocks, short
            q8a5_chunk(RM, RN, acc, xq + c1 * 64, xstride, wq + c1 * 64, k, P, 2 * (c1 - c0), 1, k - c1 * 64,
                       blocks - 2 * c1 == 2);
    }
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) out[i * ldo + j] = q8a5_hsum8(acc[i][j]);
}

#define Q8A5_TILE_FN(RM, RN) \
    FK_TARGET_AVX512 __attribute__((noinline)) static void q8a5_tile_##RM##x##RN( \
        float *out, size_t ldo, const int8_t *xq, const float *xs, const int8_t *wq, const uint16_t *ws, \
        size_t blocks, size_t k) { q8a5_tile(RM, RN, out, ldo, xq, xs, wq, ws, blocks, k); }
Q8A5_TILE_FN(1, 1) Q8A5_TILE_FN(1, 2) Q8A5_TILE_FN(1, 3) Q8A5_TILE_FN(1, 4)
Q8A5_TILE_FN(2, 1) Q8A5_TILE_FN(2, 2) Q8A5_TILE_FN(2, 3) Q8A5_TILE_FN(2, 4)
Q8A5_TILE_FN(3, 1) Q8A5_TILE_FN(3, 2) Q8A5_TILE_FN(3, 3) Q8A5_TILE_FN(3, 4)
Q8A5_TILE_FN(4, 1) Q8A5_TILE_FN(4, 2) Q8A5_TILE_FN(4, 3) Q8A5_TILE_FN(4, 4)

typedef void (*q8a5_tile_fn)(float *, size_t, const int8_t *, const float *, const int8_t *, const uint16_t *,
                             size_t, size_t);
static const q8a5_tile_fn q8a5_tiles[Q8A5_MR][Q8A5_MN] = {
    {q8a5_tile_1x1, q8a5_tile_1x2, q8a5_tile_1x3, q8a5_tile_1x4},
    {q8a5_tile_2x1, q8a5_tile_2x2, q8a5_tile_2x3, q8a5_tile_2x4},
    {q8a5_tile_3x1, q8a5_tile_3x2, q8a5_tile_3x3, q8a5_tile_3x4},
    {q8a5_tile_4x1, q8a5_tile_4x2, q8a5_tile_4x3, q8a5_tile_4x4},
};

/// T > 1: tiles of up to 4 activation rows x 4 weight rows; each weight tile (4 rows) stays in L1
/// while all activation rows pass over it. T = 1 (decode): one weight row at a time, so the weights
/// are read as one sequential stream (4 interleaved row streams read ~30% slower on Zen 4).
FK_TARGET_AVX512
void fk_avx512_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale,
                         size_t t, size_t n, size_t k) {
    size_t blocks = fk_q8_blocks(k), mn = t == 1 ? 1 : Q8A5_MN;
    for (size_t j0 = 0; j0 < n; j0 += mn) {
        size_t rn = n - j0 < mn ? n - j0 : mn;
        for (size_t i0 = 0; i0 < t; i0 += Q8A5_MR) {
            size_t rm = t - i0 < Q8A5_MR ? t - i0 : Q8A5_MR;
            q8a5_tiles[rm - 1][rn - 1](out + i0 * ldo + j0, ldo, x.q + i0 * blocks * FK_Q8_BLOCK, x.scale + i0 * blocks,
                                       wq + j0 * k, wscale + j0 * blocks, blocks, k);
        }
    }
}
#endif
