#ifndef FLAMINGO_FUZZ_DRIVER_H
#define FLAMINGO_FUZZ_DRIVER_H
/*
 * libFuzzer's driver, when the binary has it. scripts/fuzz links the fuzz targets with
 * -sanitize=fuzzer, which brings libFuzzer and its LLVMFuzzerRunDriver; a normal build does not,
 * and the weak reference below is then null. So one source builds both ways with no #if.
 */
#include <stddef.h>
#include <stdint.h>

typedef int (*flamingo_fuzz_callback)(const uint8_t *data, size_t size);

/// 1 when libFuzzer is linked into this binary.
int flamingo_fuzz_driver_available(void);

/// Runs libFuzzer on `callback` with the command line (libFuzzer's flags, corpus directories).
/// Only when `flamingo_fuzz_driver_available()`.
int flamingo_fuzz_run_driver(int *argc, char ***argv, flamingo_fuzz_callback callback);

/// Replay without libFuzzer: names `path` on stderr if the process dies of a signal (a trap,
/// a fault, an abort) while this input runs, then lets the previous handler (Swift's backtracer)
/// go on. NULL: no input is running.
void flamingo_fuzz_set_current_input(const char *path);

#endif
