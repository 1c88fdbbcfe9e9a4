// CRC-32C (Castagnoli) with the SSE4.2 crc32 instruction: the frame checksum of the pipeline's
// wire (FlamingoCluster/Wire/CRC32C.swift keeps the portable slicing-by-8 and picks this one
// when the CPU has SSE4.2 and the kernel level is not `portable`).
#include "flamingo_kernels.h"
#include <string.h>
#if defined(__x86_64__)
#include <nmmintrin.h>

// One 8-byte step per instruction: about 8 bytes per 3 cycles (the instruction's latency).
__attribute__((target("sse4.2"))) uint32_t fk_crc32c_sse42(const void *data, size_t n, uint32_t previous) {
    const uint8_t *p = data;
    uint64_t crc = (uint32_t)~previous;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = _mm_crc32_u64(crc, word);
        p += 8;
        n -= 8;
    }
    uint32_t c = (uint32_t)crc;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return ~c;
}
#else
uint32_t fk_crc32c_sse42(const void *data, size_t n, uint32_t previous) {
    (void)data; (void)n;
    return previous;  // never called: the caller checks the CPU first
}
#endif
