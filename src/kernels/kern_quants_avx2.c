/* AVX2 + FMA + F16C kernels (this file is compiled with -mavx2 -mfma
 * -mf16c and only called when kern_init() found those features).
 *
 * Dot products keep ggml's structure: integer products summed inside each
 * block (maddubs/madd), block scales applied in float with FMA into 8-lane
 * accumulators, one horizontal sum at the end. They differ from the generic
 * kernels only in float summation order (tests/kernels checks the named
 * tolerance). The activation converters are bit-identical to the generic
 * ones. Each loop is a SIMD body followed by a scalar tail. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_impl.h"

/* ---------------- helpers ---------------- */

static inline float hsum_f32_8(__m256 x)
{
	__m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

static inline int hsum_i32_8(__m256i a)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
	s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x55));
	return _mm_cvtsi128_si32(s);
}

static inline float f16_load(const kern_f16 *h)
{
	return _cvtsh_ss(*h);
}

/* 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..15, high in 16..31. */
static inline __m256i nibbles_32(const uint8_t *p)
{
	const __m128i tmp = _mm_loadu_si128((const __m128i *)p);
	const __m256i b = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes: 0xFF where the bit is set. */
static inline __m256i bits_32(const uint8_t *p)
{
	uint32_t x32;
	memcpy(&x32, p, sizeof(x32));
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
					       0x0101010101010101LL, 0x0000000000000000LL);
	const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
	const __m256i mask = _mm256_set1_epi64x(0x8040201008040201LL);
	return _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
}

/* Sum of signed x*y products in pairs of 4 bytes -> 8 int32. */
static inline __m256i dot_i8_i32(__m256i x, __m256i y)
{
	const __m256i ax = _mm256_sign_epi8(x, x);
	const __m256i sy = _mm256_sign_epi8(y, x);
	const __m256i p16 = _mm256_maddubs_epi16(ax, sy);
	return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Unsigned x (< 128) times signed y, in pairs -> 16 int16. */
static inline __m256i dot_u8_i16(__m256i ux, __m256i y)
{
	return _mm256_maddubs_epi16(ux, y);
}

/* ---------------- plain types ---------------- */

static void vec_dot_f32_f32(int64_t n, float *s, const void *vx, const void *vy)
{
	const float *x = vx, *y = vy;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
		a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
		a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
	float sum = hsum_f32_8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	for (; i < n; i++)
		sum += x[i] * y[i];
	*s = sum;
}

static inline __m256 load_f16x8(const kern_f16 *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static void vec_dot_f16_f16(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_f16 *x = vx, *y = vy;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), a0);
		a1 = _mm256_fmadd_ps(load_f16x8(x + i + 8), load_f16x8(y + i + 8), a1);
		a2 = _mm256_fmadd_ps(load_f16x8(x + i + 16), load_f16x8(y + i + 16), a2);
		a3 = _mm256_fmadd_ps(load_f16x8(x + i + 24), load_f16x8(y + i + 24), a3);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), a0);
	float sum = hsum_f32_8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	for (; i < n; i++)
		sum += kern_f16_to_f32(x[i]) * kern_f16_to_f32(y[i]);
	*s = sum;
}

static inline __m256 load_bf16x8(const kern_bf16 *p)
{
	const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
	return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static void vec_dot_bf16_bf16(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_bf16 *x = vx, *y = vy;
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_fmadd_ps(load_bf16x8(x + i), load_bf16x8(y + i), a0);
		a1 = _mm256_fmadd_ps(load_bf16x8(x + i + 8), load_bf16x8(y + i + 8), a1);
		a2 = _mm256_fmadd_ps(load_bf16x8(x + i + 16), load_bf16x8(y + i + 16), a2);
		a3 = _mm256_fmadd_ps(load_bf16x8(x + i + 24), load_bf16x8(y + i + 24), a3);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(load_bf16x8(x + i), load_bf16x8(y + i), a0);
	float sum = hsum_f32_8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	for (; i < n; i++)
		sum += kern_bf16_to_f32(x[i]) * kern_bf16_to_f32(y[i]);
	*s = sum;
}

static void to_f32_f16(const void *vx, float *y, int64_t n)
{
	const kern_f16 *x = vx;
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, load_f16x8(x + i));
	for (; i < n; i++)
		y[i] = kern_f16_to_f32(x[i]);
}

/* F16C rounds to nearest even and quiets NaNs like kern_f32_to_f16. */
static void from_f32_f16(const float *x, void *vy, int64_t n)
{
	kern_f16 *y = vy;
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		y[i] = kern_f32_to_f16(x[i]);
}

static void to_f32_bf16(const void *vx, float *y, int64_t n)
{
	const kern_bf16 *x = vx;
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, load_bf16x8(x + i));
	for (; i < n; i++)
		y[i] = kern_bf16_to_f32(x[i]);
}

/* Same integer rounding as kern_f32_to_bf16 (round half to even, NaN quieted). */
static void from_f32_bf16(const float *x, void *vy, int64_t n)
{
	kern_bf16 *y = vy;
	int64_t i = 0;
	const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
	const __m256i inf = _mm256_set1_epi32(0x7f800000);
	for (; i + 8 <= n; i += 8) {
		const __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
		const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
		__m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
		r = _mm256_srli_epi32(r, 16);
		const __m256i nanv = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
		const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
		r = _mm256_blendv_epi8(r, nanv, is_nan);
		r = _mm256_and_si256(r, _mm256_set1_epi32(0xffff));
		/* pack 8 x u32 (all <= 0xffff) to u16; packus works per 128-bit lane */
		const __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
		_mm_storeu_si128((__m128i *)(y + i), _mm_packus_epi32(lo, hi));
	}
	for (; i < n; i++)
		y[i] = kern_f32_to_bf16(x[i]);
}

/* ---------------- activation quantizers (bit-identical to generic) ---------------- */

/* A macro, not a variable: clang requires an integer constant expression. */
#define ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* One 32-float block -> 32 int8 (id = 127/amax, round half to even); returns
 * d = amax/127 and the int32 lanes' sum in *sum. */
static inline float q8_block_avx2(const float *x, int8_t *qs, int *sum)
{
	__m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
	__m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 m = _mm256_andnot_ps(sign, v0);
	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v1));
	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
	m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
	__m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
	m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
	const float amax = _mm_cvtss_f32(m4);
	const float d = amax / 127.f;
	const float id = amax != 0.0f ? 127.f / amax : 0.0f;
	const __m256 mul = _mm256_set1_ps(id);
	__m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), ROUND_NEAREST));
	__m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), ROUND_NEAREST));
	__m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), ROUND_NEAREST));
	__m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), ROUND_NEAREST));
	if (sum)
		*sum = hsum_i32_8(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
	i0 = _mm256_packs_epi32(i0, i1);
	i2 = _mm256_packs_epi32(i2, i3);
	i0 = _mm256_packs_epi16(i0, i2);
	i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)qs, i0);
	return d;
}

static void quantize_act_q8_0(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_0 *y = vy;
	for (int64_t i = 0; i < n / KERN_QK8_0; i++) {
		const float d = q8_block_avx2(x + i * 32, y[i].qs, NULL);
		y[i].d = kern_f32_to_f16(d);
	}
}

static void quantize_act_q8_1(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_1 *y = vy;
	for (int64_t i = 0; i < n / KERN_QK8_1; i++) {
		int sum;
		const float d = q8_block_avx2(x + i * 32, y[i].qs, &sum);
		y[i].d = kern_f32_to_f16(d);
		y[i].s = kern_f32_to_f16(d * (float)sum);
	}
}

static void quantize_act_q8_K(const float *x, void *vy, int64_t n)
{
	struct kern_block_q8_K *y = vy;
	const __m256 sign = _mm256_set1_ps(-0.0f);
	for (int64_t i = 0; i < n / KERN_QK_K; i++, x += KERN_QK_K) {
		__m256 m = _mm256_setzero_ps();
		for (int j = 0; j < KERN_QK_K; j += 8)
			m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
		__m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		const float amax = _mm_cvtss_f32(m4);
		if (amax == 0.0f) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		/* the signed value of the first element with the largest magnitude */
		const __m256 vamax = _mm256_set1_ps(amax);
		float max = 0;
		for (int j = 0; j < KERN_QK_K; j += 8) {
			const __m256 v = _mm256_loadu_ps(x + j);
			int mask = _mm256_movemask_ps(
				_mm256_cmp_ps(_mm256_andnot_ps(sign, v), vamax, _CMP_EQ_OQ));
			if (mask) {
				max = x[j + __builtin_ctz((unsigned)mask)];
				break;
			}
		}
		const float iscale = -127.f / max;
		const __m256 mul = _mm256_set1_ps(iscale);
			const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
		for (int j = 0; j < KERN_QK_K; j += 32) {
			__m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), mul), ROUND_NEAREST));
			__m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), mul), ROUND_NEAREST));
			__m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 16), mul), ROUND_NEAREST));
			__m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 24), mul), ROUND_NEAREST));
			/* MIN(127, v): values are >= -127 by construction */
			const __m256i c127 = _mm256_set1_epi32(127);
			i0 = _mm256_min_epi32(i0, c127);
			i1 = _mm256_min_epi32(i1, c127);
			i2 = _mm256_min_epi32(i2, c127);
			i3 = _mm256_min_epi32(i3, c127);
			/* bsums of the two groups of 16 */
			y[i].bsums[j / 16] = (int16_t)hsum_i32_8(_mm256_add_epi32(i0, i1));
			y[i].bsums[j / 16 + 1] = (int16_t)hsum_i32_8(_mm256_add_epi32(i2, i3));
			i0 = _mm256_packs_epi32(i0, i1);
			i2 = _mm256_packs_epi32(i2, i3);
			i0 = _mm256_packs_epi16(i0, i2);
			_mm256_storeu_si256((__m256i *)(y[i].qs + j), _mm256_permutevar8x32_epi32(i0, perm));
		}
		y[i].d = 1 / iscale;
	}
}

/* ---------------- 32-element blocks ---------------- */

/* The 32-element formats apply one float scale per block, so the FMA into
 * the accumulator is a dependency chain of one FMA latency per block; for
 * Q4_1/Q5_0/Q5_1 four accumulators over four blocks per iteration hide it.
 * TERM(i, acc) returns acc plus block i's contribution. */
#define DOT_BLOCKS_4(NB, TERM)                                                             \
	__m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;          \
	int64_t i = 0;                                                                    \
	for (; i + 4 <= (NB); i += 4) {                                                   \
		acc0 = TERM(i, acc0);                                                     \
		acc1 = TERM(i + 1, acc1);                                                 \
		acc2 = TERM(i + 2, acc2);                                                 \
		acc3 = TERM(i + 3, acc3);                                                 \
	}                                                                                 \
	for (; i < (NB); i++)                                                             \
		acc0 = TERM(i, acc0);                                                     \
	const float dot_sum = hsum_f32_8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)))

static inline __m256 term_q4_0(const struct kern_block_q4_0 *x, const struct kern_block_q8_0 *y,
			       __m256 acc)
{
	const __m256 d = _mm256_set1_ps(f16_load(&x->d) * f16_load(&y->d));
	const __m256i qx = _mm256_sub_epi8(nibbles_32(x->qs), _mm256_set1_epi8(8));
	const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i32(qx, qy)), acc);
}

/* Q4_0 and Q8_0 keep one accumulator per output so that the 4-token
 * variants below (used by kern_matmul for batches) compute every output with
 * exactly the same operations: a token's result does not depend on the
 * batch it came in. */
static void vec_dot_q4_0_q8_0(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	__m256 acc = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++)
		acc = term_q4_0(&x[i], &y[i], acc);
	*s = hsum_f32_8(acc);
}

/* s[k] = dot(x, y + k * y_row) for k < 4, each bit-identical to vec_dot_q4_0_q8_0. */
static void vec_dot_x4_q4_0_q8_0(int64_t n, float *s, const void *vx, const void *vy, size_t y_row)
{
	const struct kern_block_q4_0 *x = vx;
	const struct kern_block_q8_0 *y[4];
	for (int k = 0; k < 4; k++)
		y[k] = (const struct kern_block_q8_0 *)((const char *)vy + k * y_row);
	const int64_t nb = n / KERN_QK8_0;
	__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
	for (int64_t i = 0; i < nb; i++) {
		const float dx = f16_load(&x[i].d);
		const __m256i qx = _mm256_sub_epi8(nibbles_32(x[i].qs), _mm256_set1_epi8(8));
		const __m256i ax = _mm256_sign_epi8(qx, qx);
		for (int k = 0; k < 4; k++) {
			const __m256 d = _mm256_set1_ps(dx * f16_load(&y[k][i].d));
			const __m256i qy = _mm256_loadu_si256((const __m256i *)y[k][i].qs);
			const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx));
			const __m256i p = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
			acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[k]);
		}
	}
	for (int k = 0; k < 4; k++)
		s[k] = hsum_f32_8(acc[k]);
}

static inline __m256 term_q4_1(const struct kern_block_q4_1 *x, const struct kern_block_q8_1 *y,
			       __m256 acc)
{
	const __m256 d = _mm256_set1_ps(f16_load(&x->d) * f16_load(&y->d));
	const __m256i qx = nibbles_32(x->qs);
	const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
	const __m256i p = _mm256_madd_epi16(dot_u8_i16(qx, qy), _mm256_set1_epi16(1));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

static void vec_dot_q4_1_q8_1(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_1 *x = vx;
	const struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	float summs = 0;
	for (int64_t k = 0; k < nb; k++)
		summs += f16_load(&x[k].m) * f16_load(&y[k].s);
#define TERM(k, a) term_q4_1(&x[k], &y[k], a)
	DOT_BLOCKS_4(nb, TERM);
#undef TERM
	*s = dot_sum + summs;
}

static inline __m256 term_q5_0(const struct kern_block_q5_0 *x, const struct kern_block_q8_0 *y,
			       __m256 acc)
{
	const __m256 d = _mm256_set1_ps(f16_load(&x->d) * f16_load(&y->d));
	/* 5th bit clear: value - 16, i.e. set the top nibble (two's complement) */
	const __m256i hi = _mm256_andnot_si256(bits_32(x->qh), _mm256_set1_epi8((char)0xF0));
	const __m256i qx = _mm256_or_si256(nibbles_32(x->qs), hi);
	const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i32(qx, qy)), acc);
}

static void vec_dot_q5_0_q8_0(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
#define TERM(k, a) term_q5_0(&x[k], &y[k], a)
	DOT_BLOCKS_4(n / KERN_QK8_0, TERM);
#undef TERM
	*s = dot_sum;
}

static inline __m256 term_q5_1(const struct kern_block_q5_1 *x, const struct kern_block_q8_1 *y,
			       __m256 acc)
{
	const __m256 d = _mm256_set1_ps(f16_load(&x->d) * f16_load(&y->d));
	const __m256i qx = _mm256_or_si256(nibbles_32(x->qs),
					   _mm256_and_si256(bits_32(x->qh), _mm256_set1_epi8(0x10)));
	const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
	const __m256i p = _mm256_madd_epi16(dot_u8_i16(qx, qy), _mm256_set1_epi16(1));
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

static void vec_dot_q5_1_q8_1(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_1 *x = vx;
	const struct kern_block_q8_1 *y = vy;
	const int64_t nb = n / KERN_QK8_1;
	float summs = 0;
	for (int64_t k = 0; k < nb; k++)
		summs += f16_load(&x[k].m) * f16_load(&y[k].s);
#define TERM(k, a) term_q5_1(&x[k], &y[k], a)
	DOT_BLOCKS_4(nb, TERM);
#undef TERM
	*s = dot_sum + summs;
}

static inline __m256 term_q8_0(const struct kern_block_q8_0 *x, const struct kern_block_q8_0 *y,
			       __m256 acc)
{
	const __m256 d = _mm256_set1_ps(f16_load(&x->d) * f16_load(&y->d));
	const __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
	const __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
	return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i32(qx, qy)), acc);
}

static void vec_dot_q8_0_q8_0(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q8_0 *x = vx;
	const struct kern_block_q8_0 *y = vy;
	const int64_t nb = n / KERN_QK8_0;
	__m256 acc = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++)
		acc = term_q8_0(&x[i], &y[i], acc);
	*s = hsum_f32_8(acc);
}

static void vec_dot_x4_q8_0_q8_0(int64_t n, float *s, const void *vx, const void *vy, size_t y_row)
{
	const struct kern_block_q8_0 *x = vx;
	const struct kern_block_q8_0 *y[4];
	for (int k = 0; k < 4; k++)
		y[k] = (const struct kern_block_q8_0 *)((const char *)vy + k * y_row);
	const int64_t nb = n / KERN_QK8_0;
	__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
	for (int64_t i = 0; i < nb; i++) {
		const float dx = f16_load(&x[i].d);
		const __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
		const __m256i ax = _mm256_sign_epi8(qx, qx);
		for (int k = 0; k < 4; k++) {
			const __m256 d = _mm256_set1_ps(dx * f16_load(&y[k][i].d));
			const __m256i qy = _mm256_loadu_si256((const __m256i *)y[k][i].qs);
			const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx));
			const __m256i p = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
			acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[k]);
		}
	}
	for (int k = 0; k < 4; k++)
		s[k] = hsum_f32_8(acc[k]);
}

/* ---------------- K-quants ---------------- */

/* Broadcast two int16 scales: lanes 0..7 = a (bytes 0..15), 8..15 = b. */
static inline __m256i scale_pair(int a, int b)
{
	return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

/* sum_j bsums[j] * w[j] over 16 groups, w given as 16 int16 */
static inline __m256i bsums_dot(const int16_t *bsums, __m256i w16)
{
	return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), w16);
}

static void vec_dot_q2_K_q8_K(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q2_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	__m256 acc = _mm256_setzero_ps();
	float summ = 0;
	const __m256i m3 = _mm256_set1_epi8(3);
	for (int64_t i = 0; i < nb; i++) {
		const float dall = y[i].d * f16_load(&x[i].d);
		const float dmin = y[i].d * f16_load(&x[i].dmin);
		const uint8_t *sc = x[i].scales;
		const __m128i sc8 = _mm_loadu_si128((const __m128i *)sc);
		const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0xF)));
		summ += dmin * (float)hsum_i32_8(bsums_dot(y[i].bsums, mins16));
		const uint8_t *q2 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		__m256i sumi = _mm256_setzero_si256();
		int is = 0;
		for (int k = 0; k < 2; k++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)q2);
			for (int shift = 0; shift < 8; shift += 2) {
				const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, shift), m3);
				const __m256i qy = _mm256_loadu_si256((const __m256i *)q8);
				const __m256i p = dot_u8_i16(q, qy);
				sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc[is] & 0xF, sc[is + 1] & 0xF)));
				is += 2;
				q8 += 32;
			}
			q2 += 32;
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(dall), _mm256_cvtepi32_ps(sumi), acc);
	}
	*s = hsum_f32_8(acc) - summ;
}

static void vec_dot_q3_K_q8_K(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q3_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	__m256 acc = _mm256_setzero_ps();
	const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
	int8_t scales[16];
	int16_t sc16[16];
	for (int64_t i = 0; i < nb; i++) {
		kern_q3_K_scales(x[i].scales, scales);
		for (int j = 0; j < 16; j++)
			sc16[j] = (int16_t)(scales[j] - 32);
		const __m256i w16 = _mm256_loadu_si256((const __m256i *)sc16);
		/* values are (u - 4) with u in 0..7: subtract 4 * sum(q8) per group */
		__m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(),
						_mm256_slli_epi32(bsums_dot(y[i].bsums, w16), 2));
		const __m256i hbits = _mm256_loadu_si256((const __m256i *)x[i].hmask);
		const uint8_t *q3 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		int is = 0, bit = 0;
		for (int k = 0; k < 2; k++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)q3);
			for (int shift = 0; shift < 8; shift += 2) {
				const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, shift), m3);
				const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hbits, bit), m1);
				const __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
				const __m256i qy = _mm256_loadu_si256((const __m256i *)q8);
				const __m256i p = dot_u8_i16(u, qy);
				sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc16[is], sc16[is + 1])));
				is += 2;
				bit++;
				q8 += 32;
			}
			q3 += 32;
		}
		const float d = f16_load(&x[i].d) * y[i].d;
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
	}
	*s = hsum_f32_8(acc);
}

/* Q4_K/Q5_K packed 6-bit scales -> 8 scale bytes (sc) and 8 min bytes (mn). */
static inline void k4_scales(const uint8_t *packed, uint8_t sc[8], uint8_t mn[8])
{
	const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
	uint32_t u[4];
	memcpy(u, packed, 12);
	u[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
	const uint32_t uaux = u[1] & kmask1;
	u[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
	u[2] = uaux;
	u[0] &= kmask1;
	memcpy(sc, &u[0], 8);
	memcpy(mn, &u[2], 8);
}

static inline __m256i mins_x2_16(const uint8_t mn[8])
{
	/* each min repeated for its two groups of 16 */
	uint64_t m64;
	memcpy(&m64, mn, 8);
	const __m128i m = _mm_cvtsi64_si128((long long)m64);
	return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
}

static void vec_dot_q4_K_q8_K(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q4_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	__m256 acc = _mm256_setzero_ps();
	float summ = 0;
	const __m256i m4 = _mm256_set1_epi8(0xF);
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		k4_scales(x[i].scales, sc, mn);
		const float d = f16_load(&x[i].d) * y[i].d;
		const float dmin = f16_load(&x[i].dmin) * y[i].d;
		summ += dmin * (float)hsum_i32_8(bsums_dot(y[i].bsums, mins_x2_16(mn)));
		const uint8_t *q4 = x[i].qs;
		const int8_t *q8 = y[i].qs;
		__m256i sumi = _mm256_setzero_si256();
		for (int j = 0; j < 4; j++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)q4);
			const __m256i lo = _mm256_and_si256(bits, m4);
			const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
			const __m256i plo = dot_u8_i16(lo, _mm256_loadu_si256((const __m256i *)q8));
			const __m256i phi = dot_u8_i16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * j])));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * j + 1])));
			q4 += 32;
			q8 += 64;
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
	}
	*s = hsum_f32_8(acc) - summ;
}

static void vec_dot_q5_K_q8_K(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q5_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	__m256 acc = _mm256_setzero_ps();
	float summ = 0;
	const __m256i m4 = _mm256_set1_epi8(0xF), m1 = _mm256_set1_epi8(1);
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		k4_scales(x[i].scales, sc, mn);
		const float d = f16_load(&x[i].d) * y[i].d;
		const float dmin = f16_load(&x[i].dmin) * y[i].d;
		summ += dmin * (float)hsum_i32_8(bsums_dot(y[i].bsums, mins_x2_16(mn)));
		const uint8_t *ql = x[i].qs;
		const int8_t *q8 = y[i].qs;
		const __m256i hbits = _mm256_loadu_si256((const __m256i *)x[i].qh);
		__m256i sumi = _mm256_setzero_si256();
		for (int j = 0; j < 4; j++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)ql);
			const __m256i hlo = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), m1);
			const __m256i hhi = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), m1);
			const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_slli_epi16(hlo, 4));
			const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
							   _mm256_slli_epi16(hhi, 4));
			const __m256i plo = dot_u8_i16(lo, _mm256_loadu_si256((const __m256i *)q8));
			const __m256i phi = dot_u8_i16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * j])));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * j + 1])));
			ql += 32;
			q8 += 64;
		}
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
	}
	*s = hsum_f32_8(acc) - summ;
}

static void vec_dot_q6_K_q8_K(int64_t n, float *s, const void *vx, const void *vy)
{
	const struct kern_block_q6_K *x = vx;
	const struct kern_block_q8_K *y = vy;
	const int64_t nb = n / KERN_QK_K;
	__m256 acc = _mm256_setzero_ps();
	const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3);
	for (int64_t i = 0; i < nb; i++) {
		const int8_t *sc = x[i].scales;
		const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
		/* values are (u - 32), u in 0..63: subtract 32 * sum(q8) per group */
		__m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(),
						_mm256_slli_epi32(bsums_dot(y[i].bsums, w16), 5));
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		const int8_t *q8 = y[i].qs;
		for (int k = 0; k < 2; k++) {
			const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
			const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
			const __m256i u1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
							   _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
			const __m256i u2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
							   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
			const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
							   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
			const __m256i u4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
							   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
			const __m256i p1 = dot_u8_i16(u1, _mm256_loadu_si256((const __m256i *)q8));
			const __m256i p2 = dot_u8_i16(u2, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
			const __m256i p3 = dot_u8_i16(u3, _mm256_loadu_si256((const __m256i *)(q8 + 64)));
			const __m256i p4 = dot_u8_i16(u4, _mm256_loadu_si256((const __m256i *)(q8 + 96)));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, scale_pair(sc[0], sc[1])));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, scale_pair(sc[2], sc[3])));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p3, scale_pair(sc[4], sc[5])));
			sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p4, scale_pair(sc[6], sc[7])));
			ql += 64;
			qh += 32;
			q8 += 128;
			sc += 8;
		}
		const float d = f16_load(&x[i].d) * y[i].d;
		acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
	}
	*s = hsum_f32_8(acc);
}

/* 4-token variants of the K-quant dots: the weight block is unpacked once
 * and used for four activation rows; every output sees exactly the
 * operations of the 1-token kernel above. */
static void vec_dot_x4_q4_K_q8_K(int64_t n, float *s, const void *vx, const void *vy, size_t y_row)
{
	const struct kern_block_q4_K *x = vx;
	const struct kern_block_q8_K *y[4];
	for (int k = 0; k < 4; k++)
		y[k] = (const struct kern_block_q8_K *)((const char *)vy + k * y_row);
	const int64_t nb = n / KERN_QK_K;
	__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
	float summ[4] = {0, 0, 0, 0};
	const __m256i m4 = _mm256_set1_epi8(0xF);
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		k4_scales(x[i].scales, sc, mn);
		const float xd = f16_load(&x[i].d), xdmin = f16_load(&x[i].dmin);
		const __m256i mins16 = mins_x2_16(mn);
		__m256i sumi[4];
		for (int k = 0; k < 4; k++) {
			summ[k] += xdmin * y[k][i].d * (float)hsum_i32_8(bsums_dot(y[k][i].bsums, mins16));
			sumi[k] = _mm256_setzero_si256();
		}
		const uint8_t *q4 = x[i].qs;
		for (int j = 0; j < 4; j++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)q4);
			const __m256i lo = _mm256_and_si256(bits, m4);
			const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
			const __m256i slo = _mm256_set1_epi16(sc[2 * j]), shi = _mm256_set1_epi16(sc[2 * j + 1]);
			for (int k = 0; k < 4; k++) {
				const int8_t *q8 = y[k][i].qs + 64 * j;
				const __m256i plo = dot_u8_i16(lo, _mm256_loadu_si256((const __m256i *)q8));
				const __m256i phi = dot_u8_i16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
				sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(plo, slo));
				sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(phi, shi));
			}
			q4 += 32;
		}
		for (int k = 0; k < 4; k++)
			acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(xd * y[k][i].d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
	}
	for (int k = 0; k < 4; k++)
		s[k] = hsum_f32_8(acc[k]) - summ[k];
}

static void vec_dot_x4_q5_K_q8_K(int64_t n, float *s, const void *vx, const void *vy, size_t y_row)
{
	const struct kern_block_q5_K *x = vx;
	const struct kern_block_q8_K *y[4];
	for (int k = 0; k < 4; k++)
		y[k] = (const struct kern_block_q8_K *)((const char *)vy + k * y_row);
	const int64_t nb = n / KERN_QK_K;
	__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
	float summ[4] = {0, 0, 0, 0};
	const __m256i m4 = _mm256_set1_epi8(0xF), m1 = _mm256_set1_epi8(1);
	uint8_t sc[8], mn[8];
	for (int64_t i = 0; i < nb; i++) {
		k4_scales(x[i].scales, sc, mn);
		const float xd = f16_load(&x[i].d), xdmin = f16_load(&x[i].dmin);
		const __m256i mins16 = mins_x2_16(mn);
		__m256i sumi[4];
		for (int k = 0; k < 4; k++) {
			summ[k] += xdmin * y[k][i].d * (float)hsum_i32_8(bsums_dot(y[k][i].bsums, mins16));
			sumi[k] = _mm256_setzero_si256();
		}
		const uint8_t *ql = x[i].qs;
		const __m256i hbits = _mm256_loadu_si256((const __m256i *)x[i].qh);
		for (int j = 0; j < 4; j++) {
			const __m256i bits = _mm256_loadu_si256((const __m256i *)ql);
			const __m256i hlo = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), m1);
			const __m256i hhi = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), m1);
			const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_slli_epi16(hlo, 4));
			const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
							   _mm256_slli_epi16(hhi, 4));
			const __m256i slo = _mm256_set1_epi16(sc[2 * j]), shi = _mm256_set1_epi16(sc[2 * j + 1]);
			for (int k = 0; k < 4; k++) {
				const int8_t *q8 = y[k][i].qs + 64 * j;
				const __m256i plo = dot_u8_i16(lo, _mm256_loadu_si256((const __m256i *)q8));
				const __m256i phi = dot_u8_i16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
				sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(plo, slo));
				sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(phi, shi));
			}
			ql += 32;
		}
		for (int k = 0; k < 4; k++)
			acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(xd * y[k][i].d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
	}
	for (int k = 0; k < 4; k++)
		s[k] = hsum_f32_8(acc[k]) - summ[k];
}

static void vec_dot_x4_q6_K_q8_K(int64_t n, float *s, const void *vx, const void *vy, size_t y_row)
{
	const struct kern_block_q6_K *x = vx;
	const struct kern_block_q8_K *y[4];
	for (int k = 0; k < 4; k++)
		y[k] = (const struct kern_block_q8_K *)((const char *)vy + k * y_row);
	const int64_t nb = n / KERN_QK_K;
	__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
	const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3);
	for (int64_t i = 0; i < nb; i++) {
		const int8_t *sc = x[i].scales;
		const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
		__m256i sumi[4];
		for (int k = 0; k < 4; k++)
			sumi[k] = _mm256_sub_epi32(_mm256_setzero_si256(),
						   _mm256_slli_epi32(bsums_dot(y[k][i].bsums, w16), 5));
		const uint8_t *ql = x[i].ql, *qh = x[i].qh;
		for (int h = 0; h < 2; h++) {
			const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
			const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
			const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
			__m256i u[4], sp[4];
			u[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
			u[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
					       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
			u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
					       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
			u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
					       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
			for (int g = 0; g < 4; g++)
				sp[g] = scale_pair(sc[2 * g], sc[2 * g + 1]);
			for (int k = 0; k < 4; k++) {
				const int8_t *q8 = y[k][i].qs + 128 * h;
				for (int g = 0; g < 4; g++) {
					const __m256i p = dot_u8_i16(u[g], _mm256_loadu_si256((const __m256i *)(q8 + 32 * g)));
					sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(p, sp[g]));
				}
			}
			ql += 64;
			qh += 32;
			sc += 8;
		}
		const float xd = f16_load(&x[i].d);
		for (int k = 0; k < 4; k++)
			acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(xd * y[k][i].d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
	}
	for (int k = 0; k < 4; k++)
		s[k] = hsum_f32_8(acc[k]);
}

int kern_dispatch_avx2(struct kern_dispatch *d)
{
	struct kern_type_traits *t = d->traits;
	t[ML_DTYPE_F32].vec_dot = vec_dot_f32_f32;
	t[ML_DTYPE_F16].vec_dot = vec_dot_f16_f16;
	t[ML_DTYPE_F16].to_f32 = to_f32_f16;
	t[ML_DTYPE_F16].from_f32 = from_f32_f16;
	t[ML_DTYPE_BF16].vec_dot = vec_dot_bf16_bf16;
	t[ML_DTYPE_BF16].to_f32 = to_f32_bf16;
	t[ML_DTYPE_BF16].from_f32 = from_f32_bf16;
	t[ML_DTYPE_Q4_0].vec_dot = vec_dot_q4_0_q8_0;
	t[ML_DTYPE_Q4_1].vec_dot = vec_dot_q4_1_q8_1;
	t[ML_DTYPE_Q5_0].vec_dot = vec_dot_q5_0_q8_0;
	t[ML_DTYPE_Q5_1].vec_dot = vec_dot_q5_1_q8_1;
	t[ML_DTYPE_Q8_0].vec_dot = vec_dot_q8_0_q8_0;
	t[ML_DTYPE_Q2_K].vec_dot = vec_dot_q2_K_q8_K;
	t[ML_DTYPE_Q3_K].vec_dot = vec_dot_q3_K_q8_K;
	t[ML_DTYPE_Q4_K].vec_dot = vec_dot_q4_K_q8_K;
	t[ML_DTYPE_Q5_K].vec_dot = vec_dot_q5_K_q8_K;
	t[ML_DTYPE_Q6_K].vec_dot = vec_dot_q6_K_q8_K;
	t[ML_DTYPE_Q8_K].from_f32 = quantize_act_q8_K;

	d->act_from_f32[ML_DTYPE_F16] = from_f32_f16;
	d->act_from_f32[ML_DTYPE_BF16] = from_f32_bf16;
	d->act_from_f32[ML_DTYPE_Q8_0] = quantize_act_q8_0;
	d->act_from_f32[ML_DTYPE_Q8_1] = quantize_act_q8_1;
	d->act_from_f32[ML_DTYPE_Q8_K] = quantize_act_q8_K;

	d->vec_dot_x4[ML_DTYPE_Q4_0] = vec_dot_x4_q4_0_q8_0;
	d->vec_dot_x4[ML_DTYPE_Q8_0] = vec_dot_x4_q8_0_q8_0;
	d->vec_dot_x4[ML_DTYPE_Q4_K] = vec_dot_x4_q4_K_q8_K;
	d->vec_dot_x4[ML_DTYPE_Q5_K] = vec_dot_x4_q5_K_q8_K;
	d->vec_dot_x4[ML_DTYPE_Q6_K] = vec_dot_x4_q6_K_q8_K;
	return 28;
}

#else /* not x86: kern.c never calls this; keeps the build portable */
#include "kernels/kern_impl.h"

int kern_dispatch_avx2(struct kern_dispatch *d)
{
	(void)d;
	return 0;
}
#endif
