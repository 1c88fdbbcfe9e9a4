// Elementwise math (activations, softmax) with AVX-512F: 16 floats per step, the tail through masks.
//
// exp: Cody-Waite range reduction x = n·ln2 + r (|r| <= ln2/2), Cephes' degree-6 polynomial for
// e^r (about 1 ulp), then vscalefps for 2^n, which rounds overflow to inf and underflow to zero
// or a denormal correctly. x is first clamped to [-104, 89] with NaN kept.
// erf (GELU): Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (as PyTorch's vectorised erf), written
// as erfc for negative arguments so GELU's negative tail has no cancellation.
#if defined(__x86_64__)
#include "kernels_internal.h"
#include <immintrin.h>
#include <math.h>

#define FKI static inline __attribute__((always_inline)) FK_TARGET_AVX512

FKI __m512 exp16(__m512 x) {
    // max(lo, x) and min(hi, .) return their second operand when it is NaN: NaN goes through.
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// 1 + erf(z), without cancellation for z < 0.
FKI __m512 one_plus_erf16(__m512 z) {
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    __m512 q = _mm512_mul_ps(_mm512_mul_ps(p, t), exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a))));
    __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(2.0f), q), q);
}

FKI __m512 act16(__m512 x, int act) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    switch (act) {
    case FK_ACT_GELU:
        return _mm512_mul_ps(_mm512_mul_ps(half, x), one_plus_erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f))));
    case FK_ACT_GELU_TANH: {
        // 1 + tanh(u) = 2 - 2 / (1 + e^(2u))
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x));
        __m512 e = exp16(_mm512_add_ps(u, u));
        __m512 opt = _mm512_sub_ps(_mm512_set1_ps(2.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(one, e)));
        return _mm512_mul_ps(_mm512_mul_ps(half, x), opt);
    }
    case FK_ACT_QUICK_GELU:
        return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)))));
    case FK_ACT_SILU:
        return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, x))));
    case FK_ACT_RELU:
        return _mm512_max_ps(zero, x);
    case FK_ACT_RELU2: {
        __m512 r = _mm512_max_ps(zero, x);
        return _mm512_mul_ps(r, r);
    }
    default:
        return x;
    }
}

FKI void activate_as(float *v, const float *u, size_t n, int act) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 y = act16(_mm512_loadu_ps(v + i), act);
        if (u) y = _mm512_mul_ps(y, _mm512_loadu_ps(u + i));
        _mm512_storeu_ps(v + i, y);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 y = act16(_mm512_maskz_loadu_ps(m, v + i), act);
        if (u) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(v + i, m, y);
    }
}

// One loop per activation, so `act` is a constant inside each.
FK_TARGET_AVX512 void fk_avx512_activate(float *v, const float *u, size_t n, int act) {
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

FK_TARGET_AVX512 void fk_avx512_softmax(float *v, size_t n, float scale) {
    if (n == 0) return;
    const __m512 s = _mm512_set1_ps(scale);
    __m512 mv = _mm512_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_mul_ps(_mm512_loadu_ps(v + i), s);
        _mm512_storeu_ps(v + i, x);
        mv = _mm512_max_ps(mv, x);
    }
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (i < n) {
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, v + i), s);
        _mm512_mask_storeu_ps(v + i, tail, x);
        mv = _mm512_mask_max_ps(mv, tail, mv, x);
    }
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    __m512 sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(v + i), m));
        _mm512_storeu_ps(v + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, v + i), m));
        _mm512_mask_storeu_ps(v + i, tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, _mm512_mul_ps(_mm512_loadu_ps(v + i), inv));
    if (i < n) _mm512_mask_storeu_ps(v + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, v + i), inv));
}
#endif
