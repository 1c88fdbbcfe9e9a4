#ifndef FLAMINGO_CBLAS_SHIM_H
#define FLAMINGO_CBLAS_SHIM_H
#include <cblas.h>
// OpenBLAS exports these; Debian's cblas.h declares them, re-declared here for older headers.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
#endif
