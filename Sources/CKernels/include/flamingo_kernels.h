#ifndef FLAMINGO_KERNELS_H
#define FLAMINGO_KERNELS_H
// Hot micro-kernels of flamingo-cluster, one table of function pointers per instruction family.
// Each family lives in its own files, every function compiled with __attribute__((target(...))), so
// the package builds with default flags and the binary runs on any x86-64 (or aarch64, where only
// the portable and naive tables exist). FlamingoCore/Kernels/KernelTable.swift picks one table per
// weight dtype from the CPU's features, once, at start-up (FLAMINGO_KERNELS forces a level).
//
// Legend (every matmul):   out[T, N] = X[T, K] · W[N, K]ᵀ
//   W   weights in PyTorch nn.Linear layout: N rows of K contiguous elements (row stride K).
//   X   T activation rows, row stride ldx elements (bf16: uint16 elements; q8: see below).
//   out T rows, row stride ldo floats; out[i*ldo + j] is written (not accumulated) for i < T, j < N.
// Kernels are single-threaded: callers split N into fixed blocks over threads, so results never
// depend on the thread count.
//
// Batch invariance (required of every variant): out[i][j] is a function of X row i and W row j only,
// bit for bit: the same whatever T, N, ldx, ldo, or where (i, j) falls in a register tile. (Each
// output is one dot product with a fixed lane layout over K and a fixed final reduction.) This is
// what makes a token's logits independent of which other sequences share its microbatch.
//
// Numerics by weight dtype:
//   f32 weights:  f32 activations, f32 accumulation.
//   f16 weights:  f32 activations, weights widened exactly to f32, f32 accumulation.
//   bf16 weights: activations rounded to bf16 first (round_bf16: round-to-nearest-even, as PyTorch;
//                 NaN stays NaN), products exact in f32, f32 accumulation (AVX-512-BF16 dot
//                 instructions where the CPU has them, widening elsewhere). As torch bf16 and
//                 llama.cpp do.
//   q8 weights:   block-quantized, FK_Q8_BLOCK values per block along K (the last block of a row
//                 may be short when K % 32 != 0). Weight row j: int8 values wq[j*K .. j*K+K),
//                 f16 scales wscale[j*B .. j*B+B) with B = fk_q8_blocks(K). Value = q * scale.
//                 Activations quantized per block on the fly (quantize_rows_q8), integer dot per
//                 block, then sum over blocks of (wscale[b] * xscale[b]) * dot_b in f32.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FK_Q8_BLOCK 32

/// Blocks of FK_Q8_BLOCK per row of k values (the last may be short).
static inline size_t fk_q8_blocks(size_t k) { return (k + FK_Q8_BLOCK - 1) / FK_Q8_BLOCK; }

/// Activation rows quantized for q8 weights. Row i of K values occupies B = fk_q8_blocks(K) blocks:
///   q[i*B*32 .. (i+1)*B*32)   int8, each block's values; a short last block is zero-padded to 32
///   scale[i*B .. (i+1)*B)     f32, max|x| / 127 of the block (0 for an all-zero block)
///   sum[i*B .. (i+1)*B)       int32, sum of the block's 32 int8 values (for unsigned-offset dots)
/// q = x / scale rounded to the nearest integer, so |q| <= 127. Variants may compute x * (1 / scale)
/// and break ties their own way: q may differ by 1 between variants, never more.
typedef struct {
    int8_t *q;
    float *scale;
    int32_t *sum;
} fk_q8_rows;

/// Activations of `activate` (FlamingoCore's Activation names the same formulas).
enum {
    FK_ACT_GELU = 0,        // 0.5·x·(1 + erf(x/√2))
    FK_ACT_GELU_TANH = 1,   // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    FK_ACT_QUICK_GELU = 2,  // x·σ(1.702·x)
    FK_ACT_SILU = 3,        // x·σ(x)
    FK_ACT_RELU = 4,        // max(x, 0)
    FK_ACT_RELU2 = 5,       // max(x, 0)²
};

typedef struct {
    /// Name of the instruction family, e.g. "avx512_bf16" (shown in `flamingo info`, bench JSON, HELLO).
    const char *name;

    /// dst[i] = bf16(src[i]), round to nearest even (NaN stays a quiet NaN). Hardware variants may
    /// flush denormal inputs to zero (vcvtneps2bf16 does); everything else is exact.
    void (*round_bf16)(uint16_t *dst, const float *src, size_t count);

    void (*matmul_f32)(float *out, size_t ldo, const float *x, size_t ldx, const float *w,
                       size_t t, size_t n, size_t k);
    void (*matmul_f16)(float *out, size_t ldo, const float *x, size_t ldx, const uint16_t *w,
                       size_t t, size_t n, size_t k);
    /// x: bf16 activations (already rounded by round_bf16).
    void (*matmul_bf16)(float *out, size_t ldo, const uint16_t *x, size_t ldx, const uint16_t *w,
                        size_t t, size_t n, size_t k);

    /// Quantizes t rows of k floats (row stride ldx) into `rows` (layout above; rows contiguous).
    void (*quantize_rows_q8)(fk_q8_rows rows, const float *x, size_t ldx, size_t t, size_t k);
    /// x: t rows quantized by quantize_rows_q8 for the same k.
    void (*matmul_q8)(float *out, size_t ldo, fk_q8_rows x, const int8_t *wq, const uint16_t *wscale,
                      size_t t, size_t n, size_t k);

    /// v[i] = act(v[i]) · u[i] (u may be NULL: v[i] = act(v[i])) for i < n; act is an FK_ACT_*.
    /// Elementwise, so the result does not depend on n or on where v starts. Vector variants use
    /// polynomials for exp and erf: within a few ulp of float (erf within 1.5e-7), NaN kept.
    void (*activate)(float *v, const float *u, size_t n, int act);
    /// v[0..n) = softmax(scale · v): the row scaled, its max subtracted, exp, divided by the sum.
    /// Variants sum in their own order (a few ulp apart).
    void (*softmax)(float *v, size_t n, float scale);
} fk_kernels;

/// The naive twins: plain loops written for clarity (double accumulation), the reference every
/// variant is tested against. Never used for speed.
extern const fk_kernels fk_naive;
/// Plain C that the compiler may auto-vectorise for the baseline target (x86-64 SSE2, aarch64 NEON).
extern const fk_kernels fk_portable;

#if defined(__x86_64__)
/// AVX2 + FMA + F16C.
extern const fk_kernels fk_avx2;
/// AVX-512 F + BW (+VL, DQ): bf16 by widening, q8 by vpmaddubsw.
extern const fk_kernels fk_avx512;
/// fk_avx512 with bf16 through AVX-512-BF16 (vdpbf16ps) and q8 through AVX-512-VNNI (vpdpbusd):
/// only the members whose instruction the CPU has are taken from here (KernelTable decides).
extern const fk_kernels fk_avx512_bf16;
extern const fk_kernels fk_avx512_vnni;
#endif

/// Quantizes one weight row of k floats to q8: scale[b] = f16(max|w| / 127) per block, then
/// q[i] = round-half-away-from-zero(w[i] / f32(scale[b])) clamped to [-127, 127]. One definition
/// (not per variant), so a quantized checkpoint is the same bytes on every machine. Returns 0, or -1
/// if a value is not finite or a scale overflows f16.
int fk_quantize_weight_row_q8(int8_t *q, uint16_t *scale, const float *w, size_t k);

/// IEEE half <-> float, exact widening and round-to-nearest-even narrowing (portable C).
float fk_f16_to_f32(uint16_t h);
uint16_t fk_f32_to_f16(float f);

/// CRC-32C of `n` bytes continuing `previous` (0 to start), with the SSE4.2 crc32 instruction.
/// Call only on a CPU with SSE4.2 (x86-64); the same value as the portable slicing-by-8.
uint32_t fk_crc32c_sse42(const void *data, size_t n, uint32_t previous);

/// Spin-wait hint (x86 `pause`) for threads polling for work (FlamingoCore's WorkerPool).
static inline void fk_cpu_relax(void) {
#if defined(__x86_64__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __cplusplus
}
#endif
#endif
