/* AVX-512 (F/BW/VL/DQ + VNNI + BF16) kernels, only called when kern_init()
 * found all of those features. Only where they clearly pay over AVX2 on the
 * machines we measured (bench/kernels.c, AMD EPYC with AVX-512):
 *  - BF16 dots through vdpbf16ps (as ggml does on such CPUs): ~2x AVX2.
 * Tried and dropped because they measured no faster than AVX2 there:
 * 512-bit F32/F16 dots (load bound) and Q4_0/Q8_0 dots with vpdpbusd on
 * 256- and 512-bit registers (bound by the per-block f16 scale handling and
 * the 34-byte block stride, not by the integer multiply). Everything else
 * keeps the AVX2 entries. */
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

static void vec_dot_bf16_bf16(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_bf16 *x = vx, *y = vy;
	__m512 a0 = _mm512_setzero_ps(), a1 = a0;
	int64_t i = 0;
	for (; i + 64 <= n; i += 64) {
		a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(x + i),
				      (__m512bh)_mm512_loadu_si512(y + i));
		a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(x + i + 32),
				      (__m512bh)_mm512_loadu_si512(y + i + 32));
	}
	for (; i + 32 <= n; i += 32)
		a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(x + i),
				      (__m512bh)_mm512_loadu_si512(y + i));
	float sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
	for (; i < n; i++)
		sum += kern_bf16_to_f32(x[i]) * kern_bf16_to_f32(y[i]);
	*s = sum;
}

void kern_dispatch_avx512(struct kern_dispatch *d)
{
	d->traits[ML_DTYPE_BF16].vec_dot = vec_dot_bf16_bf16;
}
