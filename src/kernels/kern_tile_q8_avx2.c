/* AVX2 tile kernels (struct kern_tile) for Q8_0 and Q4_0 weights against Q8_0 activations.
 * Compiled with the AVX2 flags of the Makefile; called by kern_init()
 * only when the CPU has them. */
#include "kernels/kern_impl.h"

int kern_tiles_q8_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
