/* OpenMP when the build has it, one thread otherwise: lets the kernels compile either way. */
#ifndef MIREG_OMP_H
#define MIREG_OMP_H
#ifdef _OPENMP
#include <omp.h>
static inline int mireg_max_threads(void) { return omp_get_max_threads(); }
static inline int mireg_have_openmp(void) { return 1; }
#else
static inline int mireg_max_threads(void) { return 1; }
static inline int mireg_have_openmp(void) { return 0; }
#endif
#endif
