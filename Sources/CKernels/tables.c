// One table per instruction family. KernelTable.swift picks, per weight dtype, the best table the
// CPU can run (or the one FLAMINGO_KERNELS names).
#include "kernels_internal.h"

#define FK_TABLE(f) { #f, fk_##f##_round_bf16, fk_##f##_matmul_f32, fk_##f##_matmul_f16, \
                      fk_##f##_matmul_bf16, fk_##f##_quantize_rows_q8, fk_##f##_matmul_q8, \
                      fk_##f##_activate, fk_##f##_softmax }

const fk_kernels fk_naive = FK_TABLE(naive);
const fk_kernels fk_portable = FK_TABLE(portable);

#if defined(__x86_64__)
const fk_kernels fk_avx2 = FK_TABLE(avx2);
const fk_kernels fk_avx512 = FK_TABLE(avx512);
const fk_kernels fk_avx512_bf16 = {
    "avx512_bf16", fk_avx512_bf16_round_bf16, fk_avx512_matmul_f32, fk_avx512_matmul_f16,
    fk_avx512_bf16_matmul_bf16, fk_avx512_quantize_rows_q8, fk_avx512_matmul_q8,
    fk_avx512_activate, fk_avx512_softmax,
};
const fk_kernels fk_avx512_vnni = {
    "avx512_vnni", fk_avx512_round_bf16, fk_avx512_matmul_f32, fk_avx512_matmul_f16,
    fk_avx512_matmul_bf16, fk_avx512_quantize_rows_q8, fk_avx512_vnni_matmul_q8,
    fk_avx512_activate, fk_avx512_softmax,
};
#endif
