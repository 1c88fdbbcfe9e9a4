// q8 kernels for AVX2 + FMA + F16C (every function carries FK_TARGET_AVX2; the file builds with
// default flags). Integer block dots as llama.cpp's ggml_vec_dot_q8_0_q8_0: |x| (vpsignb x,x) as
// unsigned bytes times sign(x)·w as signed bytes (vpmaddubsw, no saturation since |q| <= 127),
// pairs widened to 8 int32 lanes (vpmaddwd with ones).
//
// Numerics, shared bit for bit with fk_avx512_matmul_q8 and fk_avx512_vnni_matmul_q8 (avx512_q8.c),
// so out[i][j] is the same whatever the tile, T, N, or which of the three x86 families runs:
//   8 f32 lanes per (i, j); L_b = the 8 lanes of block b, lane l = exact int32 sum of the block's
//   products 4l .. 4l+3, converted to f32; P_b = f32(wscale[b]) * xscale[b] (one f32 product).
//   For each pair of blocks (2c, 2c+1) in order: acc = acc + fma(L_2c+1, P_2c+1, L_2c * P_2c)
//   (a lone last block: acc = acc + L_2c * P_2c). out = ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
// P comes from a small table computed 8 blocks at a time and is broadcast from memory (a load, no
// shuffle); llamafile's tinyBLAS_Q0_AVX multiplies the two scales per block and pair instead.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <string.h>

#define A2 FK_TARGET_AVX2 static inline __attribute__((always_inline))

A2 float q8a2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // l + l+4
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                           // + l+2
    s = _mm_add_ss(s, _mm_movehdup_ps(s));                                            // + l+1
    return _mm_cvtss_f32(s);
}

/// round half away from zero (exact for |v| < 2^23) of v, clamped to [-127, 127].
A2 __m256 q8a2_round(__m256 v) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 d = _mm256_sub_ps(v, t);
    t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(d, half, _CMP_GE_OQ), one));
    t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(d, _mm256_sub_ps(_mm256_setzero_ps(), half), _CMP_LE_OQ), one));
    t = _mm256_min_ps(t, _mm256_set1_ps(127.0f));
    return _mm256_max_ps(t, _mm256_set1_ps(-127.0f));
}

FK_TARGET_AVX2
void fk_avx2_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) {
    size_t blocks = fk_q8_blocks(k);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (size_t i = 0; i < t; i++) {
        const float *xr = x + i * ldx;
        for (size_t b = 0; b < blocks; b++) {
            size_t lo = b * FK_Q8_BLOCK;
            const float *src = xr + lo;
            float pad[FK_Q8_BLOCK];
            if (lo + FK_Q8_BLOCK > k) {
                memset(pad, 0, sizeof pad);
                memcpy(pad, src, (k - lo) * sizeof(float));
                src = pad;
            }
            __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
            __m256 v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24);
            __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                     _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float scale = amax / 127.0f;
            int8_t *q = rows.q + (i * blocks + b) * FK_Q8_BLOCK;
            int32_t sum = 0;
            if (scale > 0) {
                __m256 sv = _mm256_set1_ps(scale);
                __m256i i0 = _mm256_cvttps_epi32(q8a2_round(_mm256_div_ps(v0, sv)));
                __m256i i1 = _mm256_cvttps_epi32(q8a2_round(_mm256_div_ps(v1, sv)));
                __m256i i2 = _mm256_cvttps_epi32(q8a2_round(_mm256_div_ps(v2, sv)));
                __m256i i3 = _mm256_cvttps_epi32(q8a2_round(_mm256_div_ps(v3, sv)));
                __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
                sum = _mm_cvtsi128_si32(s4);
                // packs interleave 128-bit lanes: [i0lo i1lo i2lo i3lo | i0hi i1hi i2hi i3hi] per dword
                __m256i p16a = _mm256_packs_epi32(i0, i1), p16b = _mm256_packs_epi32(i2, i3);
                __m256i p8 = _mm256_packs_epi16(p16a, p16b);
                p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256((__m256i *)q, p8);
            } else {
                _mm256_storeu_si256((__m256i *)q, _mm256_setzero_si256());
            }
            rows.scale[i * blocks + b] = scale;
            rows.sum[i * blocks + b] = sum;
        }
    }
}

enum {
    Q8A2_MR = 3, Q8A2_MN = 4,  // register tile: activation rows x weight rows
    Q8A2_G = 8,                // blocks per scale-product table (even: block pairs never straddle)
    Q8A2_PREFETCH = 16384,     // T = 1: weight bytes prefetched ahead of the one streamed row
};

/// Weight block b of row w (a zero-padded copy for the short last block: never read past the row).
A2 __m256i q8a2_wblock(const int8_t *w, size_t b, size_t full, size_t k) {
    if (b < full) return _mm256_loadu_si256((const __m256i *)(w + b * FK_Q8_BLOCK));
    int8_t pad[FK_Q8_BLOCK] = {0};
    memcpy(pad, w + b * FK_Q8_BLOCK, k - b * FK_Q8_BLOCK);
    return _mm256_loadu_si256((const __m256i *)pad);
}

/// The 8 int32 lanes of one block dot, as f32 (exact).
A2 __m256 q8a2_lanes(__m256i ax, __m256i xv, __m256i w) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, xv)), _mm256_set1_epi16(1)));
}

/// One RM x RN register tile over all of K. x rows i0.., weight rows j0.. (already offset).
A2 void q8a2_tile(const int RM, const int RN, float *out, size_t ldo, const int8_t *xq, const float *xs,
                  const int8_t *wq, const uint16_t *ws, size_t blocks, size_t k) {
    __m256 acc[Q8A2_MR][Q8A2_MN];
    float P[Q8A2_MR][Q8A2_MN][Q8A2_G] __attribute__((aligned(32)));
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    size_t full = k / FK_Q8_BLOCK;
    for (size_t g = 0; g < blocks; g += Q8A2_G) {
        size_t nb = blocks - g < Q8A2_G ? blocks - g : Q8A2_G;
        __m256 wsf[Q8A2_MN];
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) {
            uint16_t pad[Q8A2_G] = {0};
            const uint16_t *src = ws + j * blocks + g;
            if (nb < Q8A2_G) { memcpy(pad, src, nb * 2); src = pad; }
            wsf[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src));
        }
        _Pragma("unroll")
        for (int i = 0; i < RM; i++) {
            float pad[Q8A2_G] = {0};
            const float *src = xs + i * blocks + g;
            if (nb < Q8A2_G) { memcpy(pad, src, nb * 4); src = pad; }
            __m256 xsf = _mm256_loadu_ps(src);
            _Pragma("unroll")
            for (int j = 0; j < RN; j++) _mm256_store_ps(P[i][j], _mm256_mul_ps(wsf[j], xsf));
        }
        for (size_t b = g; b < g + nb; b += 2) {  // block pairs (2c, 2c+1), as one zmm chunk on AVX-512
            int two = b + 1 < g + nb;
            if (RN == 1 && b + 1 < full) _mm_prefetch((const char *)(wq + b * FK_Q8_BLOCK) + Q8A2_PREFETCH, _MM_HINT_T1);
            __m256i w0[Q8A2_MN], w1[Q8A2_MN];
            _Pragma("unroll")
            for (int j = 0; j < RN; j++) {
                w0[j] = q8a2_wblock(wq + j * k, b, full, k);
                w1[j] = two ? q8a2_wblock(wq + j * k, b + 1, full, k) : _mm256_setzero_si256();
            }
            _Pragma("unroll")
            for (int i = 0; i < RM; i++) {
                const int8_t *xp = xq + (i * blocks + b) * FK_Q8_BLOCK;
                __m256i x0 = _mm256_loadu_si256((const __m256i *)xp), ax0 = _mm256_sign_epi8(x0, x0);
                __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)(xp + FK_Q8_BLOCK)) : _mm256_setzero_si256();
                __m256i ax1 = _mm256_sign_epi8(x1, x1);
                _Pragma("unroll")
                for (int j = 0; j < RN; j++) {
                    __m256 c2 = _mm256_mul_ps(q8a2_lanes(ax0, x0, w0[j]), _mm256_set1_ps(P[i][j][b - g]));
                    if (two) c2 = _mm256_fmadd_ps(q8a2_lanes(ax1, x1, w1[j]), _mm256_set1_ps(P[i][j][b - g + 1]), c2);
                    acc[i][j] = _mm256_add_ps(acc[i][j], c2);
                }
            }
        }
    }
    _Pragma("unroll")
    for (int i = 0; i < RM; i++)
        _Pragma("unroll")
        for (int j = 0; j < RN; j++) out[i * ldo + j] = q8a2_hsum(acc[i][j]);
}

#define Q8A2_TILE_FN(RM, RN) \
    FK_TARGET_AVX2 __attribute__((noinline)) static void q8a2_tile_##RM##x##RN( \
        float *out, size_t ldo, const int8_t *xq, const float *xs, const int8_t *wq, const uint16_t *ws, \
        size_t blocks, size_t k) { q8a2_tile(RM, RN, out, ldo, xq, xs, wq, ws, blocks, k); }
Q8A2_TILE_FN(1, 1) Q8A2_TILE_FN(1, 2) Q8A2_TILE_FN(1, 3) Q8A2_TILE_FN(1, 4)
Q8A2_TILE_FN(2, 1) Q8A2_TILE_FN(2, 2) Q8A2_TILE_FN(2, 3) Q8A2_TILE_FN(2, 4)
Q8A2_TILE_FN(3, 1) Q8A2_TILE_FN(3, 2) Q8A2_TILE_FN(3, 3) Q8A2_TILE_FN(3, 4)

typedef void (*q8a2_tile_fn)(float *, size_t, const int8_t *, const float *, const int8_t *, const uint16_t *,
                             size_t, size_t);
static const q8a2_tile_fn q8a2_tiles[Q8A2_MR][Q8A2_MN] = {
    {q8a2_tile_1x1, q8a2_tile_1x2, q8a2_tile_1x3, q8a2_tile_1x4},
    {q8a2_tile_2x1, q8a2_tile_2x2, q8a2_tile_2x3, q8a2_tile_2x4},
    {q8a2_tile_3x1, q8a2_tile_3x2, q8a2_tile_3x3, q8a2_tile_3x4},
};

FK_TARGET_AVX2
void fk_avx2_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale,
                       size_t t, size_t n, size_t k) {
    size_t blocks = fk_q8_blocks(k), mn = t == 1 ? 1 : Q8A2_MN;  // T = 1: one sequential weight stream
    for (size_t j0 = 0; j0 < n; j0 += mn) {
        size_t rn = n - j0 < mn ? n - j0 : mn;
        for (size_t i0 = 0; i0 < t; i0 += Q8A2_MR) {
            size_t rm = t - i0 < Q8A2_MR ? t - i0 : Q8A2_MR;
            q8a2_tiles[rm - 1][rn - 1](out + i0 * ldo + j0, ldo, x.q + i0 * blocks * FK_Q8_BLOCK,
                                       x.scale + i0 * blocks, wq + j0 * k, wscale + j0 * blocks, blocks, k);
        }
    }
}
#endif
