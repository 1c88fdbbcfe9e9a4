// Declarations shared by the kernel files and tables.c. One prefix per instruction family:
// fk_<family>_<op>, family in naive, portable, avx2, avx512, avx512_bf16, avx512_vnni.
#ifndef FLAMINGO_KERNELS_INTERNAL_H
#define FLAMINGO_KERNELS_INTERNAL_H
#include "flamingo_kernels.h"

#define FK_DECLARE_FAMILY(f) \
    void fk_##f##_round_bf16(uint16_t *dst, const float *src, size_t count); \
    void fk_##f##_matmul_f32(float *out, size_t ldo, const float *x, size_t ldx, const float *w, size_t t, size_t n, size_t k); \
    void fk_##f##_matmul_f16(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k); \
    void fk_##f##_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k); \
    void fk_##f##_quantize_rows_q8(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k); \
    void fk_##f##_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k); \
    void fk_##f##_activate(float *v, const float *u, size_t n, int act); \
    void fk_##f##_softmax(float *v, size_t n, float scale);

FK_DECLARE_FAMILY(naive)
FK_DECLARE_FAMILY(portable)
#if defined(__x86_64__)
FK_DECLARE_FAMILY(avx2)
FK_DECLARE_FAMILY(avx512)
// Only the members whose instruction these families add:
void fk_avx512_bf16_round_bf16(uint16_t *dst, const float *src, size_t count);
void fk_avx512_bf16_matmul_bf16(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w, size_t t, size_t n, size_t k);
void fk_avx512_vnni_matmul_q8(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale, size_t t, size_t n, size_t k);
#endif

// Full unrolling of the loops over a register tile, so its accumulators live in registers.
#if defined(__clang__)
#define FK_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define FK_UNROLL _Pragma("GCC unroll 16")
#else
#define FK_UNROLL
#endif

// Target attribute strings, one place.
#define FK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define FK_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
#define FK_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

#endif
