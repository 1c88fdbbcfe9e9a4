// Elementwise math (activations, softmax) with AVX2 + FMA: 8 floats per step, the tail through a
// stack copy. The same formulas as math_avx512.c (see there); 2^n is built in the exponent field
// as 2^(n/2) · 2^(n - n/2), so overflow to inf and underflow to zero or a denormal stay correct.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define FKI static inline __attribute__((always_inline)) FK_TARGET_AVX2

FKI __m256 pow2i8(__m256i n) {  // 2^n for |n| <= 126
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

FKI __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));  // NaN kept
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, pow2i8(n1)), pow2i8(_mm256_sub_epi32(ni, n1)));
    // A NaN input: n converts to INT_MIN, but p is NaN and so is y. Keep it explicitly anyway.
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

FKI __m256 one_plus_erf8(__m256 z) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    __m256 q = _mm256_mul_ps(_mm256_mul_ps(p, t), exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a))));
    __m256 negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), q), q, negative);
}

FKI __m256 act8(__m256 x, int act) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    switch (act) {
    case FK_ACT_GELU:
        return _mm256_mul_ps(_mm256_mul_ps(half, x), one_plus_erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f))));
    case FK_ACT_GELU_TANH: {
        __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x));
        __m256 e = exp8(_mm256_add_ps(u, u));
        __m256 opt = _mm256_sub_ps(_mm256_set1_ps(2.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)));
        return _mm256_mul_ps(_mm256_mul_ps(half, x), opt);
    }
    case FK_ACT_QUICK_GELU:
        return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)))));
    case FK_ACT_SILU:
        return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, x))));
    case FK_ACT_RELU:
        return _mm256_max_ps(zero, x);
    case FK_ACT_RELU2: {
        __m256 r = _mm256_max_ps(zero, x);
        return _mm256_mul_ps(r, r);
    }
    default:
        return x;
    }
}

FKI void activate_as(float *v, const float *u, size_t n, int act) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 y = act8(_mm256_loadu_ps(v + i), act);
        if (u) y = _mm256_mul_ps(y, _mm256_loadu_ps(u + i));
        _mm256_storeu_ps(v + i, y);
    }
    if (i < n) {
        float bv[8] = {0}, bu[8] = {0};
        memcpy(bv, v + i, (n - i) * sizeof(float));
        if (u) memcpy(bu, u + i, (n - i) * sizeof(float));
        __m256 y = act8(_mm256_loadu_ps(bv), act);
        if (u) y = _mm256_mul_ps(y, _mm256_loadu_ps(bu));
        _mm256_storeu_ps(bv, y);
        memcpy(v + i, bv, (n - i) * sizeof(float));
    }
}

FK_TARGET_AVX2 void fk_avx2_activate(float *v, const float *u, size_t n, int act) {
    switch (act) {
    case FK_ACT_GELU: activate_as(v, u, n, FK_ACT_GELU); break;
    case FK_ACT_GELU_TANH: activate_as(v, u, n, FK_ACT_GELU_TANH); break;
    case FK_ACT_QUICK_GELU: activate_as(v, u, n, FK_ACT_QUICK_GELU); break;
    case FK_ACT_SILU: activate_as(v, u, n, FK_ACT_SILU); break;
    case FK_ACT_RELU: activate_as(v, u, n, FK_ACT_RELU); break;
    case FK_ACT_RELU2: activate_as(v, u, n, FK_ACT_RELU2); break;
    default: activate_as(v, u, n, -1); break;
    }
}

FKI float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

FKI float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

FK_TARGET_AVX2 void fk_avx2_softmax(float *v, size_t n, float scale) {
    if (n == 0) return;
    const __m256 s = _mm256_set1_ps(scale);
    __m256 mv = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), s);
        _mm256_storeu_ps(v + i, x);
        mv = _mm256_max_ps(mv, x);
    }
    float m = hmax8(mv);
    for (size_t j = i; j < n; j++) { v[j] *= scale; m = v[j] > m ? v[j] : m; }
    const __m256 mm = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(v + i), mm));
        _mm256_storeu_ps(v + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {
        float b[8];
        for (size_t j = 0; j < 8; j++) b[j] = i + j < n ? v[i + j] - m : -INFINITY;
        __m256 e = exp8(_mm256_loadu_ps(b));  // exp(-inf) = 0 for the padding
        _mm256_storeu_ps(b, e);
        for (size_t j = 0; i + j < n; j++) v[i + j] = b[j];
        sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum8(sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_loadu_ps(v + i), inv));
    for (; i < n; i++) v[i] *= _mm256_cvtss_f32(inv);
}
#endif
