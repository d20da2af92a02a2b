/* AVX2 + FMA + F16C versions of the forward-pass row operations (see
 * kern_ops.h). This file is compiled with -mavx2 -mfma -mf16c and only
 * called when kern_ops.c found those features.
 *
 * How each differs from the scalar reference (tests/model/test_kern_ops.c
 * checks the named tolerances):
 *   - RMS norm: sum of squares in double like the reference, in another
 *     order (4 double lanes); the scaling is the same per element.
 *   - RoPE, adds, f16 row conversions: the same float operations per
 *     element (no FMA contraction), bit-identical.
 *   - softmax, SwiGLU: a Cephes-style polynomial exp (about 1-2 ulp) instead
 *     of libm's expf; softmax sums in double like the reference.
 *   - attention: FMA dot products (4 cache rows at a time, each reduced
 *     horizontally), the softmax above, and an FMA weighted sum of values
 *     added up over blocks of positions; all query heads of a KV head are
 *     done together so each K and V row is read from memory once.
 * Each loop is a SIMD body followed by a scalar tail. */
#include "kernels/kern_ops.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>
#include <math.h>
#include <stddef.h>

/* ---- helpers ----------------------------------------------------------- */

static inline float hsum8(__m256 x)
{
	__m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
	r = _mm_add_ps(r, _mm_movehl_ps(r, r));
	r = _mm_add_ss(r, _mm_movehdup_ps(r));
	return _mm_cvtss_f32(r);
}

static inline double hsum4d(__m256d x)
{
	__m128d r = _mm_add_pd(_mm256_extractf128_pd(x, 1), _mm256_castpd256_pd128(x));
	r = _mm_add_sd(r, _mm_unpackhi_pd(r, r));
	return _mm_cvtsd_f64(r);
}

/* Four horizontal sums at once: lane i of the result is the sum of x_i. */
static inline __m128 hsum8_x4(__m256 x0, __m256 x1, __m256 x2, __m256 x3)
{
	const __m256 t01 = _mm256_hadd_ps(x0, x1);
	const __m256 t23 = _mm256_hadd_ps(x2, x3);
	const __m256 t = _mm256_hadd_ps(t01, t23); /* [x0 x1 x2 x3 | x0 x1 x2 x3] partial */
	return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* e^x, Cephes' expf polynomial: x = n ln2 + r with |r| <= ln2/2, e^r by a
 * degree-6 polynomial, scaled by 2^n through the exponent bits. Inputs are
 * clamped to [-88.38, 88.38]: below, the result is 0 (or the smallest
 * normals), above it stays finite (~2.4e38); -inf gives 0. */
static inline __m256 exp8(__m256 x)
{
	x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
	x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
	__m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
	fx = _mm256_floor_ps(fx);
	x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
	x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
	const __m256 z = _mm256_mul_ps(x, x);
	__m256 y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, z, x);
	y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
	/* 2^n: n in [-127, 128]; n = -127 gives exponent field 0, i.e. 0 */
	__m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
	n = _mm256_max_epi32(n, _mm256_setzero_si256());
	const __m256i lim = _mm256_set1_epi32(254);
	const __m256i over = _mm256_cmpgt_epi32(n, lim); /* n = 128: 2^127 times 2 */
	n = _mm256_min_epi32(n, lim);
	y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
	return _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_set1_ps(2.0f)), _mm256_castsi256_ps(over));
}

static inline __m256 load8(const void *p, bool f16)
{
	if (f16)
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
	return _mm256_loadu_ps((const float *)p);
}

static inline float load1(const void *p, bool f16)
{
	return f16 ? kern_f16_to_f32(*(const kern_f16 *)p) : *(const float *)p;
}

/* ---- row operations ---------------------------------------------------- */

static void rmsnorm_avx2(float *y, const float *x, const float *w, int64_t n, float eps)
{
	__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		const __m256 v = _mm256_loadu_ps(x + i);
		const __m256 sq = _mm256_mul_ps(v, v); /* float squares, as the reference */
		s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
		s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
	}
	double sum = hsum4d(_mm256_add_pd(s0, s1));
	for (; i < n; i++)
		sum += (double)(x[i] * x[i]);
	const float mean = (float)(sum / (double)n);
	const float scale = 1.0f / sqrtf(mean + eps);
	const __m256 vs = _mm256_set1_ps(scale);
	i = 0;
	if (w) {
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
							      _mm256_loadu_ps(w + i)));
		for (; i < n; i++)
			y[i] = (x[i] * scale) * w[i];
	} else {
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
		for (; i < n; i++)
			y[i] = x[i] * scale;
	}
}

static void rope_avx2(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox)
{
	const int half = n_rot / 2;
	for (int h = 0; h < n_head; h++) {
		float *xh = x + (size_t)h * (size_t)head_dim;
		int i = 0; /* pair index */
		if (!neox) {
			/* Pairs (x[2i], x[2i+1]) sit next to their (cos, sin) in cs:
			 * even lanes x0 c - x1 s, odd lanes x1 c + x0 s (addsub). */
			for (; 2 * i + 8 <= n_rot; i += 4) {
				const __m256 v = _mm256_loadu_ps(xh + 2 * i);
				const __m256 c8 = _mm256_loadu_ps(cs + 2 * i);
				const __m256 cc = _mm256_moveldup_ps(c8);
				const __m256 ss = _mm256_movehdup_ps(c8);
				const __m256 sw = _mm256_permute_ps(v, 0xB1);
				_mm256_storeu_ps(xh + 2 * i, _mm256_addsub_ps(_mm256_mul_ps(v, cc), _mm256_mul_ps(sw, ss)));
			}
		} else {
			for (; i + 8 <= half; i += 8) {
				const __m256 a = _mm256_loadu_ps(cs + 2 * i);
				const __m256 b = _mm256_loadu_ps(cs + 2 * i + 8);
				/* de-interleave (c, s) pairs: shuffle within lanes, then fix the lane order */
				const __m256 c = _mm256_castpd_ps(_mm256_permute4x64_pd(
					_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
				const __m256 s = _mm256_castpd_ps(_mm256_permute4x64_pd(
					_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
				const __m256 x0 = _mm256_loadu_ps(xh + i);
				const __m256 x1 = _mm256_loadu_ps(xh + i + half);
				_mm256_storeu_ps(xh + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
				_mm256_storeu_ps(xh + i + half, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
			}
		}
		for (; i < half; i++) {
			const float c = cs[2 * i + 0];
			const float s = cs[2 * i + 1];
			const int i0 = neox ? i : 2 * i;
			const int i1 = neox ? i + half : 2 * i + 1;
			const float x0 = xh[i0];
			const float x1 = xh[i1];
			xh[i0] = x0 * c - x1 * s;
			xh[i1] = x0 * s + x1 * c;
		}
	}
}

static void softmax_avx2(float *x, int64_t n)
{
	__m256 vmax = _mm256_set1_ps(-INFINITY);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
	__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
	m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
	float max = _mm_cvtss_f32(m4);
	for (; i < n; i++)
		if (x[i] > max)
			max = x[i];
	const __m256 vm = _mm256_set1_ps(max);
	__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
	i = 0;
	for (; i + 8 <= n; i += 8) {
		const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
		_mm256_storeu_ps(x + i, e);
		s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	double sum = hsum4d(_mm256_add_pd(s0, s1));
	for (; i < n; i++) {
		const float e = expf(x[i] - max);
		sum += (double)e;
		x[i] = e;
	}
	const float inv = (float)(1.0 / sum);
	const __m256 vi = _mm256_set1_ps(inv);
	i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
	for (; i < n; i++)
		x[i] *= inv;
}

static void swiglu_avx2(float *y, const float *g, const float *u, int64_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	const __m256 neg = _mm256_set1_ps(-0.0f);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		const __m256 v = _mm256_loadu_ps(g + i);
		const __m256 e = exp8(_mm256_xor_ps(v, neg));
		const __m256 silu = _mm256_div_ps(v, _mm256_add_ps(one, e));
		_mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
	}
	for (; i < n; i++) {
		const float v = g[i];
		y[i] = (v / (1.0f + expf(-v))) * u[i];
	}
}

static void add_avx2(float *y, const float *a, const float *b, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
	for (; i < n; i++)
		y[i] = a[i] + b[i];
}

static void f32_to_f16_row_avx2(kern_f16 *y, const float *x, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		y[i] = kern_f32_to_f16(x[i]);
}

static void f16_to_f32_row_avx2(float *y, const kern_f16 *x, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
	for (; i < n; i++)
		y[i] = kern_f16_to_f32(x[i]);
}

/* ---- attention --------------------------------------------------------- */

/* dot(q, k row) for 8-wide blocks of the head, plus a scalar tail. */
static inline float dot_q_k(const float *q, const char *k, bool f16, int hd, size_t esz)
{
	__m256 acc = _mm256_setzero_ps();
	int d = 0;
	for (; d + 8 <= hd; d += 8)
		acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(k + (size_t)d * esz, f16), acc);
	float s = hsum8(acc);
	for (; d < hd; d++)
		s += q[d] * load1(k + (size_t)d * esz, f16);
	return s;
}

/* Positions per block of the weighted value sum: a block of V rows (64 x
 * head_dim values) stays in L1 while every query head of the group adds
 * its share, so V is read from memory once per group, not once per head. */
#define ATTN_V_BLOCK 64

/* Query heads h0 .. h0 + ng - 1 of token t, all reading KV head hk. K and V
 * rows are each read from memory once for the group: scores four positions
 * at a time for every head (the K rows stay in L1 between heads), then the
 * value sum in blocks of ATTN_V_BLOCK positions. |s| holds ng rows of
 * n_kv scores. |f16| is a constant at each call site, so the compiler
 * makes one loop per cache type. */
static inline __attribute__((always_inline)) void attn_group(const struct kern_attn_args *a, int t, int h0,
							     int ng, float *s, const bool f16)
{
	const int hd = a->head_dim;
	const size_t esz = f16 ? sizeof(kern_f16) : sizeof(float);
	const int hk = h0 / (a->n_head / a->n_head_kv);
	const char *k = (const char *)a->k[t] + (size_t)hk * (size_t)hd * esz;
	const char *v = (const char *)a->v[t] + (size_t)hk * (size_t)hd * esz;
	const int n_kv = a->n_kv[t];
	const size_t row = (size_t)a->kv_stride * esz;
	const __m128 vscale = _mm_set1_ps(a->scale);
	const float *qt = a->q + (size_t)t * (size_t)a->q_stride;
	float *ot = a->out + (size_t)t * (size_t)a->out_stride;

	/* Scores. */
	int p = 0;
	if ((hd & 7) == 0) {
		for (; p + 4 <= n_kv; p += 4) {
			const char *k0 = k + (size_t)p * row;
			for (int g = 0; g < ng; g++) {
				const float *q = qt + (size_t)(h0 + g) * (size_t)hd;
				__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
				for (int d = 0; d < hd; d += 8) {
					const __m256 qv = _mm256_loadu_ps(q + d);
					const size_t off = (size_t)d * esz;
					a0 = _mm256_fmadd_ps(qv, load8(k0 + off, f16), a0);
					a1 = _mm256_fmadd_ps(qv, load8(k0 + row + off, f16), a1);
					a2 = _mm256_fmadd_ps(qv, load8(k0 + 2 * row + off, f16), a2);
					a3 = _mm256_fmadd_ps(qv, load8(k0 + 3 * row + off, f16), a3);
				}
				_mm_storeu_ps(s + (size_t)g * n_kv + p, _mm_mul_ps(hsum8_x4(a0, a1, a2, a3), vscale));
			}
		}
	}
	for (; p < n_kv; p++)
		for (int g = 0; g < ng; g++)
			s[(size_t)g * n_kv + p] =
				dot_q_k(qt + (size_t)(h0 + g) * (size_t)hd, k + (size_t)p * row, f16, hd, esz) * a->scale;

	for (int g = 0; g < ng; g++)
		softmax_avx2(s + (size_t)g * n_kv, n_kv);

	/* out = sum_p s[p] v[p], 64 then 8 dimensions at a time in registers,
	 * added up over blocks of positions. */
	for (int p0 = 0; p0 < n_kv; p0 += ATTN_V_BLOCK) {
		const int p1 = p0 + ATTN_V_BLOCK < n_kv ? p0 + ATTN_V_BLOCK : n_kv;
		for (int g = 0; g < ng; g++) {
			const float *sg = s + (size_t)g * n_kv;
			float *out = ot + (size_t)(h0 + g) * (size_t)hd;
			int d0 = 0;
			for (; d0 + 64 <= hd; d0 += 64) {
				__m256 o0, o1, o2, o3, o4, o5, o6, o7;
				if (p0 == 0) {
					o0 = o1 = o2 = o3 = o4 = o5 = o6 = o7 = _mm256_setzero_ps();
				} else {
					o0 = _mm256_loadu_ps(out + d0 + 0);
					o1 = _mm256_loadu_ps(out + d0 + 8);
					o2 = _mm256_loadu_ps(out + d0 + 16);
					o3 = _mm256_loadu_ps(out + d0 + 24);
					o4 = _mm256_loadu_ps(out + d0 + 32);
					o5 = _mm256_loadu_ps(out + d0 + 40);
					o6 = _mm256_loadu_ps(out + d0 + 48);
					o7 = _mm256_loadu_ps(out + d0 + 56);
				}
				const char *vp = v + (size_t)p0 * row + (size_t)d0 * esz;
				for (int pp = p0; pp < p1; pp++, vp += row) {
					const __m256 w = _mm256_broadcast_ss(sg + pp);
					o0 = _mm256_fmadd_ps(w, load8(vp + 0 * esz, f16), o0);
					o1 = _mm256_fmadd_ps(w, load8(vp + 8 * esz, f16), o1);
					o2 = _mm256_fmadd_ps(w, load8(vp + 16 * esz, f16), o2);
					o3 = _mm256_fmadd_ps(w, load8(vp + 24 * esz, f16), o3);
					o4 = _mm256_fmadd_ps(w, load8(vp + 32 * esz, f16), o4);
					o5 = _mm256_fmadd_ps(w, load8(vp + 40 * esz, f16), o5);
					o6 = _mm256_fmadd_ps(w, load8(vp + 48 * esz, f16), o6);
					o7 = _mm256_fmadd_ps(w, load8(vp + 56 * esz, f16), o7);
				}
				_mm256_storeu_ps(out + d0 + 0, o0);
				_mm256_storeu_ps(out + d0 + 8, o1);
				_mm256_storeu_ps(out + d0 + 16, o2);
				_mm256_storeu_ps(out + d0 + 24, o3);
				_mm256_storeu_ps(out + d0 + 32, o4);
				_mm256_storeu_ps(out + d0 + 40, o5);
				_mm256_storeu_ps(out + d0 + 48, o6);
				_mm256_storeu_ps(out + d0 + 56, o7);
			}
			for (; d0 + 8 <= hd; d0 += 8) {
				__m256 o = p0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(out + d0);
				const char *vp = v + (size_t)p0 * row + (size_t)d0 * esz;
				for (int pp = p0; pp < p1; pp++, vp += row)
					o = _mm256_fmadd_ps(_mm256_broadcast_ss(sg + pp), load8(vp, f16), o);
				_mm256_storeu_ps(out + d0, o);
			}
			for (; d0 < hd; d0++) {
				float acc = p0 == 0 ? 0.0f : out[d0];
				for (int pp = p0; pp < p1; pp++)
					acc += sg[pp] * load1(v + (size_t)pp * row + (size_t)d0 * esz, f16);
				out[d0] = acc;
			}
		}
	}
}

static void attn_avx2(const struct kern_attn_args *a, int ith, int nth)
{
	int n_units, n_sub;
	kern_attn_split(a, nth, &n_units, &n_sub);
	const int per_sub = a->n_head / a->n_head_kv / n_sub;
	float *s = a->scratch + (size_t)ith * (size_t)a->scratch_stride;
	for (int u = ith; u < n_units; u += nth) {
		const int t = u / (a->n_head_kv * n_sub);
		const int g = u % (a->n_head_kv * n_sub);
		if (a->kv_f16)
			attn_group(a, t, g * per_sub, per_sub, s, true);
		else
			attn_group(a, t, g * per_sub, per_sub, s, false);
	}
}

int kern_ops_fill_avx2(struct kern_ops_table *t)
{
	t->name = "avx2";
	t->rmsnorm = rmsnorm_avx2;
	t->rope = rope_avx2;
	t->softmax = softmax_avx2;
	t->swiglu = swiglu_avx2;
	t->add = add_avx2;
	t->attn = attn_avx2;
	t->f32_to_f16_row = f32_to_f16_row_avx2;
	t->f16_to_f32_row = f16_to_f32_row_avx2;
	return 8;
}

#else

int kern_ops_fill_avx2(struct kern_ops_table *t)
{
	(void)t;
	return 0;
}

#endif
