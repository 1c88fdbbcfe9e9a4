// Elementwise math (activations, softmax) for the portable family and the naive twins.
//
// portable: libm's erff/expf/tanhf per element, the formulas FlamingoCore's Activation documents.
// naive:    the same formulas in double precision: the reference the vector variants are tested
//           against (their polynomials are accurate to a few ulp of float).
#include "kernels_internal.h"
#include <math.h>

static inline float act_f(float x, int act) {
    switch (act) {
    case FK_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case FK_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case FK_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case FK_ACT_SILU: return x / (1.0f + expf(-x));
    case FK_ACT_RELU: return x > 0 ? x : (x == x ? 0.0f : x);
    case FK_ACT_RELU2: { float r = x > 0 ? x : (x == x ? 0.0f : x); return r * r; }
    default: return x;
    }
}

void fk_portable_activate(float *v, const float *u, size_t n, int act) {
    if (u) for (size_t i = 0; i < n; i++) v[i] = act_f(v[i], act) * u[i];
    else for (size_t i = 0; i < n; i++) v[i] = act_f(v[i], act);
}

void fk_portable_softmax(float *v, size_t n, float scale) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) { v[i] *= scale; m = v[i] > m ? v[i] : m; }
    float s = 0;
    for (size_t i = 0; i < n; i++) { float e = expf(v[i] - m); v[i] = e; s += e; }
    float inv = 1.0f / s;
    for (size_t i = 0; i < n; i++) v[i] *= inv;
}

static inline double act_d(double x, int act) {
    switch (act) {
    case FK_ACT_GELU: return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
    case FK_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case FK_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case FK_ACT_SILU: return x / (1.0 + exp(-x));
    case FK_ACT_RELU: return x > 0 ? x : (x == x ? 0.0 : x);
    case FK_ACT_RELU2: { double r = x > 0 ? x : (x == x ? 0.0 : x); return r * r; }
    default: return x;
    }
}

void fk_naive_activate(float *v, const float *u, size_t n, int act) {
    for (size_t i = 0; i < n; i++) v[i] = (float)(act_d(v[i], act) * (u ? (double)u[i] : 1.0));
}

void fk_naive_softmax(float *v, size_t n, float scale) {
    double m = -INFINITY;
    for (size_t i = 0; i < n; i++) { double x = (double)v[i] * scale; m = x > m ? x : m; }
    double s = 0;
    for (size_t i = 0; i < n; i++) s += exp((double)v[i] * scale - m);
    for (size_t i = 0; i < n; i++) v[i] = (float)(exp((double)v[i] * scale - m) / s);
}
