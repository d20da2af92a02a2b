/* AVX512 tile kernels (struct kern_tile) for F32, F16 and BF16 weights.
 * Compiled with the AVX512 flags of the Makefile; called by kern_init()
 * only when the CPU has them. */
#include "kernels/kern_impl.h"

int kern_tiles_f16_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
