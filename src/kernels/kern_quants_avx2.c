/* AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; only
 * called when kern_init() found those features). */
#include <immintrin.h>

#include "kernels/kern_impl.h"

void kern_dispatch_avx2(struct kern_dispatch *d)
{
	(void)d;
}
