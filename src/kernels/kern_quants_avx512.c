/* AVX-512 (F/BW/VL/DQ/VNNI/BF16) kernels, only called when kern_init()
 * found all of those features. */
#include <immintrin.h>

#include "kernels/kern_impl.h"

void kern_dispatch_avx512(struct kern_dispatch *d)
{
	(void)d;
}
