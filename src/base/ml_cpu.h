/* CPU feature detection (cpuid + xgetbv on x86-64) and core counts. The
 * features are detected once, on first use, and never change afterwards. */
#ifndef ML_CPU_H
#define ML_CPU_H

#include <stdbool.h>

struct ml_cpu_features {
	/* x86-64; each flag is set only if the OS also saves the registers it
	 * needs (XCR0 checked through xgetbv). All false on other machines. */
	bool sse3, ssse3, avx, avx2, fma, f16c;
	bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16;
	bool avx_vnni;
	/* AArch64 (reserved for the NEON kernels) */
	bool neon, dotprod;
};

/* The features of this machine (a static object; never NULL). */
const struct ml_cpu_features *ml_cpu_features(void);

/* Space-separated names of the detected features, e.g. "avx2 fma f16c". */
const char *ml_cpu_feature_string(void);

/* Logical CPUs this process may run on (>= 1). */
int ml_cpu_count_logical(void);

/* Physical cores (distinct core/package pairs among the CPUs this process
 * may run on), falling back to the logical count when sysfs is missing. */
int ml_cpu_count_physical(void);

#endif
