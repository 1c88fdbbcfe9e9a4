// TEMPORARY scaffolding while the kernels are written: weak definitions that forward to the naive
// twins, overridden by the real (strong) definitions in the family files. Delete when every family is done.
#include "kernels_internal.h"

__attribute__((weak)) void fk_portable_round_bf16(uint16_t *dst, const float *src, size_t count) { fk_naive_round_bf16(dst, src, count); }
__attribute__((weak)) void fk_portable_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f32(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_portable_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_portable_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_bf16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_portable_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) { fk_naive_quantize_rows_q8(rows, x, ldx, t, k); }
__attribute__((weak)) void fk_portable_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k) { fk_naive_matmul_q8(out, ldo, x, wq, wscale, t, n, k); }
#if defined(__x86_64__)
__attribute__((weak)) void fk_avx2_round_bf16(uint16_t *dst, const float *src, size_t count) { fk_naive_round_bf16(dst, src, count); }
__attribute__((weak)) void fk_avx2_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f32(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx2_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx2_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_bf16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx2_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) { fk_naive_quantize_rows_q8(rows, x, ldx, t, k); }
__attribute__((weak)) void fk_avx2_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k) { fk_naive_matmul_q8(out, ldo, x, wq, wscale, t, n, k); }
#endif
#if defined(__x86_64__)
__attribute__((weak)) void fk_avx512_round_bf16(uint16_t *dst, const float *src, size_t count) { fk_naive_round_bf16(dst, src, count); }
__attribute__((weak)) void fk_avx512_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f32(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx512_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_f16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx512_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_bf16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx512_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k) { fk_naive_quantize_rows_q8(rows, x, ldx, t, k); }
__attribute__((weak)) void fk_avx512_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k) { fk_naive_matmul_q8(out, ldo, x, wq, wscale, t, n, k); }
#endif
#if defined(__x86_64__)
__attribute__((weak)) void fk_avx512_bf16_round_bf16(uint16_t *dst, const float *src, size_t count) { fk_naive_round_bf16(dst, src, count); }
__attribute__((weak)) void fk_avx512_bf16_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k) { fk_naive_matmul_bf16(out, ldo, x, ldx, w, t, n, k); }
__attribute__((weak)) void fk_avx512_vnni_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k) { fk_naive_matmul_q8(out, ldo, x, wq, wscale, t, n, k); }
#endif
