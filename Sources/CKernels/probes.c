// Machine probes (flamingo_probes.h): a read loop and multiply-accumulate throughput loops, one per
// instruction the kernel families are built on, each compiled for its own target.
#include "flamingo_probes.h"
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static float read_portable(const void *p, size_t bytes) {
    const float *f = p;
    float acc[16] = {0};
    for (size_t i = 0; i < bytes / 4; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += f[i + l];
    float s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

#if defined(__x86_64__)
FK_TARGET_AVX2 static float read_avx2(const void *p, size_t bytes) {
    const float *f = p;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t n = bytes / 4, i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(f + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(f + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(f + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(f + i + 24));
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(f + i));
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

FK_TARGET_AVX512 static float read_avx512(const void *p, size_t bytes) {
    const float *f = p;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t n = bytes / 4, i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(f + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(f + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(f + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(f + i + 48));
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_add_ps(a0, _mm512_loadu_ps(f + i));
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

float fk_probe_read(const void *p, size_t bytes, int level) {
#if defined(__x86_64__)
    if (level >= 2) return read_avx512(p, bytes);
    if (level == 1) return read_avx2(p, bytes);
#endif
    (void)level;
    return read_portable(p, bytes);
}

int fk_probe_peak_ops(fk_peak_instruction which) {
    switch (which) {
    case FK_PEAK_FMA_F32_SSE: return 8;
    case FK_PEAK_FMA_F32_AVX2: return 16;
    case FK_PEAK_FMA_F32_AVX512: return 32;
    case FK_PEAK_DPBF16_AVX512: return 64;
    case FK_PEAK_MADDUBS_AVX2: return 64;
    case FK_PEAK_MADDUBS_AVX512: return 128;
    case FK_PEAK_DPBUSD_AVX512: return 128;
    default: return 0;
    }
}

// 16 independent accumulators: enough to cover latency x throughput of every instruction here.
#define PEAK_LOOP(T, init, step, fold) \
    T a[16];                                          \
    for (int l = 0; l < 16; l++) a[l] = init;         \
    for (size_t it = 0; it < iterations; it++) {      \
        FK_UNROLL for (int l = 0; l < 16; l++) a[l] = step(a[l]); \
    }                                                 \
    float s = 0;                                      \
    for (int l = 0; l < 16; l++) s += fold(a[l]);     \
    return s;

static float peak_sse(size_t iterations) {
    // Baseline x86-64 has no FMA: a multiply and an add per lane, what the portable kernels emit.
    typedef float v4 __attribute__((vector_size(16)));
    v4 x = {1.0001f, 1.0002f, 1.0003f, 1.0004f}, y = {0.9999f, 0.9998f, 0.9997f, 0.9996f};
    __asm__("" : "+x"(x), "+x"(y));
#define SSE_STEP(v) ((v) * x + y)
#define SSE_FOLD(v) ((v)[0] + (v)[1] + (v)[2] + (v)[3])
    PEAK_LOOP(v4, y, SSE_STEP, SSE_FOLD)
}

#if defined(__x86_64__)
FK_TARGET_AVX2 static float fold256(__m256 v) {
    float o[8];
    _mm256_storeu_ps(o, v);
    return o[0] + o[7];
}
FK_TARGET_AVX2 static float peak_fma_avx2(size_t iterations) {
    __m256 x = _mm256_set1_ps(1.0001f), y = _mm256_set1_ps(0.9999f);
    __asm__("" : "+x"(x), "+x"(y));
#define FMA2_STEP(v) _mm256_fmadd_ps(x, v, y)
    PEAK_LOOP(__m256, y, FMA2_STEP, fold256)
}
FK_TARGET_AVX2 static float peak_maddubs_avx2(size_t iterations) {
    __m256i x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(-2);
    __asm__("" : "+x"(x), "+x"(y));
#define MADD2_STEP(v) _mm256_maddubs_epi16(v, y)
#define MADD2_FOLD(v) (float)_mm256_extract_epi32(v, 0)
    PEAK_LOOP(__m256i, x, MADD2_STEP, MADD2_FOLD)
}
FK_TARGET_AVX512 static float peak_fma_avx512(size_t iterations) {
    __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    __asm__("" : "+v"(x), "+v"(y));
#define FMA5_STEP(v) _mm512_fmadd_ps(x, v, y)
    PEAK_LOOP(__m512, y, FMA5_STEP, _mm512_reduce_add_ps)
}
FK_TARGET_AVX512 static float peak_maddubs_avx512(size_t iterations) {
    __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    __asm__("" : "+v"(x), "+v"(y));
#define MADD5_STEP(v) _mm512_maddubs_epi16(v, y)
#define MADD5_FOLD(v) (float)_mm512_reduce_add_epi32(v)
    PEAK_LOOP(__m512i, x, MADD5_STEP, MADD5_FOLD)
}
FK_TARGET_AVX512_BF16 static float peak_dpbf16(size_t iterations) {
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3f81);
    __asm__("" : "+v"(x), "+v"(y));
#define DPBF_STEP(v) _mm512_dpbf16_ps(v, x, y)
    PEAK_LOOP(__m512, _mm512_setzero_ps(), DPBF_STEP, _mm512_reduce_add_ps)
}
FK_TARGET_AVX512_VNNI static float peak_dpbusd(size_t iterations) {
    __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    __asm__("" : "+v"(x), "+v"(y));
#define DPBUSD_STEP(v) _mm512_dpbusd_epi32(v, x, y)
#define DPBUSD_FOLD(v) (float)_mm512_reduce_add_epi32(v)
    PEAK_LOOP(__m512i, _mm512_setzero_si512(), DPBUSD_STEP, DPBUSD_FOLD)
}
#endif

float fk_probe_peak(fk_peak_instruction which, size_t iterations) {
    switch (which) {
    case FK_PEAK_FMA_F32_SSE: return peak_sse(iterations);
#if defined(__x86_64__)
    case FK_PEAK_FMA_F32_AVX2: return peak_fma_avx2(iterations);
    case FK_PEAK_FMA_F32_AVX512: return peak_fma_avx512(iterations);
    case FK_PEAK_DPBF16_AVX512: return peak_dpbf16(iterations);
    case FK_PEAK_MADDUBS_AVX2: return peak_maddubs_avx2(iterations);
    case FK_PEAK_MADDUBS_AVX512: return peak_maddubs_avx512(iterations);
    case FK_PEAK_DPBUSD_AVX512: return peak_dpbusd(iterations);
#endif
    default: return 0;
    }
}
