// q8 matmul for AVX-512-VNNI (every function carries FK_TARGET_AVX512_VNNI; the file builds with
// default flags). One zmm covers two 32-blocks. vpdpbusd multiplies unsigned by signed bytes, so the
// weights are flipped to unsigned, w ^ 0x80 = w + 128, and each int32 lane starts at -128 * (sum of
// its 4 x values), itself one vpdpbusd of 0x80 bytes with x per x chunk, shared by the tile's weight
// rows:  sum (w + 128) * x - 128 * sum x = sum w * x, exact in int32 (vpdpbusd does not saturate).
// (fk_q8_rows.sum would allow one correction per block instead, -16 * sum in each of its 8 lanes; the
// per-lane correction costs the same 2 ops per x chunk and leaves every lane at its true partial dot,
// which is what makes the results identical to the other x86 families.)
//
// Numerics, shared bit for bit with fk_avx2_matmul_q8 and fk_avx512_matmul_q8 (see avx512_q8.c):
//   8 f32 lanes per (i, j); L_b = the 8 lanes of block b, lane l = exact int32 sum of the block's
//   products 4l .. 4l+3, converted to f32; P_b = f32(wscale[b]) * xscale[b] (one f32 product).
//   For each pair of blocks (2c, 2c+1) in order: acc = acc + fma(L_2c+1, P_2c+1, L_2c * P_2c)
//   (a lone last block: acc = acc + L_2c * P_2c). out = ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
// Tiling, the P table and the T = 1 row streaming as in avx512_q8.c.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>

#define V5 FK_TARGET_AVX512_VNNI static inline __attribute__((always_inline))

V5 float q8v5_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // l + l+4
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                           // + l+2
    s = _mm_add_ss(s, _mm_movehdup_ps(s));                                            // + l+1
    return _mm_cvtss_f32(s);
}

enum {
    Q8V5_MR = 4, Q8V5_MN = 4,  // register tile: activation rows x weight rows
    Q8V5_G = 16,               // blocks per scale-product table
    Q8V5_PREFETCH = 16384,     // T = 1: weight bytes prefetched ahead of the one streamed row
};

/// Chunk c (blocks 2c, 2c+1) of an RM x RN tile; pointers at the chunk, p = this chunk's scale
/// products in the table. tail: the last chunk, wbytes (< 64) weight bytes, `two`: it has 2 blocks.
V5 void q8v5_chunk(const int RM, const int RN, __m256 acc[Q8V5_MR][Q8V5_MN], const int8_t *xq, size_t xstride,
                   const __m512i *xcorr, const int8_t *wq, size_t k, float (*P)[Q8V5_MN][Q8V5_G], size_t p,
                   const int tail, size_t wbytes, const int two) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i w[Q8V5_MN];
    // One weight row alone (T = 1) streams at the read limit only with a software prefetch far ahead.
    if (RN == 1 && !tail) _mm_prefetch((const char *)wq + Q8V5_PREFETCH, _MM_HINT_T1);
    _Pragma("unroll")
    for (int j = 0; j < RN; j++)
        w[j] = _mm512_xor_si512(flip, tail ? _mm512_maskz_loadu_epi8(~0ull >> (64 - wbytes), wq + j * k)  // w + 128
                                           : _mm512_loadu_si512(wq + j * k));                  // (0x80 past k: x is 0)
    _Pragma("unroll")
    for (int i = 0; i < RM; i++) {
        __m512i xv = tail && !two ? _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(xq + i * xstride)))
                                  : _mm512_loadu_si512(xq + i * xstride);
        __m512i corr = xcorr ? _mm512_load_si512(xcorr)  // RM = 1: precomputed for the row
                             : _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, xv));
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) {
            __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, w[j], xv));
            // c = lanes(2c) * P(2c) [+ lanes(2c+1) * P(2c+1), fused]; acc += c
            __m256 c2 = _mm256_mul_ps(_mm512_castps512_ps256(f), _mm256_set1_ps(P[i][j][p]));
            if (!tail || two) c2 = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm256_set1_ps(P[i][j][p + 1]), c2);
            acc[i][j] = _mm256_add_ps(acc[i][j], c2);
        }
    }
}

V5 void q8v5_tile(const int RM, const int RN, float *out, size_t ldo, const int8_t *xq, const float *xs,
                  const __m512i *xcorr, const int8_t *wq, const uint16_t *ws, size_t blocks, size_t k) {
    __m256 acc[Q8V5_MR][Q8V5_MN];
    float P[Q8V5_MR][Q8V5_MN][Q8V5_G] __attribute__((aligned(64)));
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    size_t xstride = blocks * FK_Q8_BLOCK, chunks = k / 64;  // chunks of two whole blocks
    for (size_t g = 0; g < blocks; g += Q8V5_G) {
        size_t nb = blocks - g < Q8V5_G ? blocks - g : Q8V5_G;
        __mmask16 m = (__mmask16)(nb == 16 ? 0xFFFF : (1u << nb) - 1);
        __m512 wsf[Q8V5_MN];
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) wsf[j] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, ws + j * blocks + g));
        _Pragma("unroll")
        for (int i = 0; i < RM; i++) {
            __m512 xsf = _mm512_maskz_loadu_ps(m, xs + i * blocks + g);
            _Pragma("unroll")
            for (int j = 0; j < RN; j++) _mm512_store_ps(P[i][j], _mm512_mul_ps(wsf[j], xsf));
        }
        size_t c0 = g / 2, c1 = c0 + Q8V5_G / 2 < chunks ? c0 + Q8V5_G / 2 : chunks;
        for (size_t c = c0; c < c1; c++)
            q8v5_chunk(RM, RN, acc, xq + c * 64, xstride, xcorr ? xcorr + c : 0, wq + c * 64, k, P, 2 * (c - c0), 0, 64, 1);
        if (c1 < c0 + Q8V5_G / 2 && 2 * c1 < blocks)  // the last chunk: 1 or 2 blocks, short
            q8v5_chunk(RM, RN, acc, xq + c1 * 64, xstride, xcorr ? xcorr + c1 : 0, wq + c1 * 64, k, P, 2 * (c1 - c0), 1,
                       k - c1 * 64, blocks - 2 * c1 == 2);
    }
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) out[i * ldo + j] = q8v5_hsum8(acc[i][j]);
}

#define Q8V5_TILE_FN(RM, RN) \
    FK_TARGET_AVX512_VNNI __attribute__((noinline)) static void q8v5_tile_##RM##x##RN( \
        float *out, size_t ldo, const int8_t *xq, const float *xs, const int8_t *wq, const uint16_t *ws, \
        size_t blocks, size_t k) { q8v5_tile(RM, RN, out, ldo, xq, xs, 0, wq, ws, blocks, k); }
Q8V5_TILE_FN(1, 1) Q8V5_TILE_FN(1, 2) Q8V5_TILE_FN(1, 3) Q8V5_TILE_FN(1, 4)
Q8V5_TILE_FN(2, 1) Q8V5_TILE_FN(2, 2) Q8V5_TILE_FN(2, 3) Q8V5_TILE_FN(2, 4)
Q8V5_TILE_FN(3, 1) Q8V5_TILE_FN(3, 2) Q8V5_TILE_FN(3, 3) Q8V5_TILE_FN(3, 4)
Q8V5_TILE_FN(4, 1) Q8V5_TILE_FN(4, 2) Q8V5_TILE_FN(4, 3) Q8V5_TILE_FN(4, 4)

/// T = 1: one weight row at a time against the one activation row, whose per-lane corrections
/// (-128 * sum of each lane's 4 x values, per 64-byte chunk) are computed once per call, not per row.
FK_TARGET_AVX512_VNNI __attribute__((noinline)) static void q8v5_rows_1(float *out, const int8_t *xq, const float *xs,
                                                                       const int8_t *wq, const uint16_t *ws,
                                                                       size_t n, size_t blocks, size_t k) {
    size_t chunks = (blocks + 1) / 2;
    __m512i xcorr[chunks] __attribute__((aligned(64)));
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (size_t c = 0; c < chunks; c++) {
        __m512i xv = 2 * c + 1 < blocks ? _mm512_loadu_si512(xq + c * 64)
                                        : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(xq + c * 64)));
        xcorr[c] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, xv));
    }
    for (size_t j = 0; j < n; j++) q8v5_tile(1, 1, out + j, 1, xq, xs, xcorr, wq + j * k, ws + j * blocks, blocks, k);
}

typedef void (*q8v5_tile_fn)(float *, size_t, const int8_t *, const float *, const int8_t *, const uint16_t *,
                             size_t, size_t);
static const q8v5_tile_fn q8v5_tiles[Q8V5_MR][Q8V5_MN] = {
    {q8v5_tile_1x1, q8v5_tile_1x2, q8v5_tile_1x3, q8v5_tile_1x4},
    {q8v5_tile_2x1, q8v5_tile_2x2, q8v5_tile_2x3, q8v5_tile_2x4},
    {q8v5_tile_3x1, q8v5_tile_3x2, q8v5_tile_3x3, q8v5_tile_3x4},
    {q8v5_tile_4x1, q8v5_tile_4x2, q8v5_tile_4x3, q8v5_tile_4x4},
};

/// Tiles as fk_avx512_matmul_q8: up to 4 x 4, one weight row at a time when T = 1.
FK_TARGET_AVX512_VNNI
void fk_avx512_vnni_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale,
                         size_t t, size_t n, size_t k) {
    const size_t blocks = fk_q8_blocks(k), mn = Q8V5_MN;
    if (t == 1) {
        q8v5_rows_1(out, x.q, x.scale, wq, wscale, n, blocks, k);
        return;
    }
    for (size_t j0 = 0; j0 < n; j0 += mn) {
        size_t rn = n - j0 < mn ? n - j0 : mn;
        for (size_t i0 = 0; i0 < t; i0 += Q8V5_MR) {
            size_t rm = t - i0 < Q8V5_MR ? t - i0 : Q8V5_MR;
            q8v5_tiles[rm - 1][rn - 1](out + i0 * ldo + j0, ldo, x.q + i0 * blocks * FK_Q8_BLOCK, x.scale + i0 * blocks,
                                       wq + j0 * k, wscale + j0 * blocks, blocks, k);
        }
    }
}
#endif
