#ifndef FLAMINGO_PROBES_H
#define FLAMINGO_PROBES_H
// Machine probes: what the hardware allows, measured in the same run as a benchmark so kernel
// speeds can be read as a fraction of it (MachineLimits, `scripts/bench/kernels`). Not used for
// inference. Each probe is single-threaded; callers run one per compute thread.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Sums `bytes` bytes (a multiple of 64) as floats with independent vector accumulators, the widest
/// loads the CPU has (level 0 portable C, 1 AVX2, 2 AVX-512). Returns the sum, so the loads stay.
float fk_probe_read(const void *p, size_t bytes, int level);

/// Instructions whose throughput a probe measures: the multiply-accumulate each kernel family's
/// inner loop is built on.
typedef enum {
    FK_PEAK_FMA_F32_SSE = 0,   // mulps + addps, 4 lanes (portable baseline):      8 flops
    FK_PEAK_FMA_F32_AVX2,      // vfmadd231ps ymm:                               16 flops
    FK_PEAK_FMA_F32_AVX512,    // vfmadd231ps zmm:                               32 flops
    FK_PEAK_DPBF16_AVX512,     // vdpbf16ps zmm (32 bf16 products):              64 flops
    FK_PEAK_MADDUBS_AVX2,      // vpmaddubsw ymm (32 int8 products):             64 ops
    FK_PEAK_MADDUBS_AVX512,    // vpmaddubsw zmm (64 int8 products):            128 ops
    FK_PEAK_DPBUSD_AVX512,     // vpdpbusd zmm (64 int8 products, accumulated): 128 ops
    FK_PEAK_COUNT
} fk_peak_instruction;

/// Floating-point (or integer) operations one instruction of `which` does, counting a product and
/// its accumulation as two.
int fk_probe_peak_ops(fk_peak_instruction which);

/// Runs `iterations` x 16 independent instructions of `which` (the CPU must have them).
/// Returns a value derived from the accumulators so the work stays.
float fk_probe_peak(fk_peak_instruction which, size_t iterations);

#ifdef __cplusplus
}
#endif
#endif
