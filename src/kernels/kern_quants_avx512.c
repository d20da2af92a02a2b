/* AVX-512 (F/BW/VL/DQ + VNNI + BF16) kernels, called only when kern_init()
 * found all of those features. The hook exists so AVX-512 variants slot into
 * the one dispatch table; at present it overrides nothing, because nothing
 * we tried clearly paid on the AMD EPYC (Zen 4) we measured with
 * bench/kernels.c:
 *  - 512-bit F32/F16 dots: same GB/s as AVX2 (load bound);
 *  - Q4_0/Q8_0 dots with vpdpbusd, 2 blocks per 512-bit register or 1 per
 *    256-bit register: no faster than AVX2 (bound by the per-block f16
 *    scales and the 34-byte block stride, not by the integer multiply);
 *  - BF16 dots with vdpbf16ps: 2x AVX2 in GB/s, but the model's hidden
 *    states then drift from llama.cpp's reference by 4e-3 (vs 1e-6 with the
 *    AVX2 FMA kernel, which multiplies exactly and accumulates in f32), so
 *    fidelity wins.
 * Returns the number of table entries it replaced. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels/kern_impl.h"

int kern_dispatch_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_dispatch_avx512(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
