/* Scalar reference versions of the forward-pass row operations (see
 * kern_ops.h) and the dispatch to the SIMD variants. The arithmetic mirrors ggml's CPU ops where rounding is
 * visible in the logits: double accumulators for sums of squares and
 * softmax sums, float everywhere else (attention dot products use 8 float
 * partial sums, as ggml's SIMD dot products do). */
#include "kernels/kern_ops.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_cpu.h"

static void rmsnorm_generic(float *y, const float *x, const float *w, int64_t n, float eps)
{
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++)
		sum += (double)(x[i] * x[i]);
	const float mean = (float)(sum / (double)n);
	const float scale = 1.0f / sqrtf(mean + eps);
	if (w) {
		for (int64_t i = 0; i < n; i++)
			y[i] = (x[i] * scale) * w[i];
	} else {
		for (int64_t i = 0; i < n; i++)
			y[i] = x[i] * scale;
	}
}

void kern_rope_cache(float *cs, int n_rot, int32_t pos, float freq_base, float freq_scale,
		     const float *freq_factors)
{
	const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
	float theta = (float)pos;
	for (int i = 0; i < n_rot / 2; i++) {
		const float ff = freq_factors ? freq_factors[i] : 1.0f;
		const float t = freq_scale * (theta / ff);
		cs[2 * i + 0] = cosf(t);
		cs[2 * i + 1] = sinf(t);
		theta *= theta_scale;
	}
}

static void rope_generic(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox)
{
	const int half = n_rot / 2;
	for (int h = 0; h < n_head; h++) {
		float *xh = x + (size_t)h * (size_t)head_dim;
		for (int i = 0; i < half; i++) {
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

static void softmax_generic(float *x, int64_t n)
{
	float max = -INFINITY;
	for (int64_t i = 0; i < n; i++)
		if (x[i] > max)
			max = x[i];
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++) {
		const float e = expf(x[i] - max);
		sum += (double)e;
		x[i] = e;
	}
	const float inv = (float)(1.0 / sum);
	for (int64_t i = 0; i < n; i++)
		x[i] *= inv;
}

static void swiglu_generic(float *y, const float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		const float v = g[i];
		y[i] = (v / (1.0f + expf(-v))) * u[i];
	}
}

static void add_generic(float *y, const float *a, const float *b, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = a[i] + b[i];
}

/* IEEE half to float, exact, inlined into the attention loops (the same
 * values as kern_f16_to_f32, which sits behind a call in kern.c). */
static inline float h2f(kern_f16 h)
{
	const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	const uint32_t em = h & 0x7fff;
	uint32_t bits;
	float f;
	if (em >= 0x7c00) { /* inf, NaN */
		bits = sign | 0x7f800000u | ((uint32_t)(em & 0x3ff) << 13);
	} else if (em >= 0x400) { /* normal: rebias the exponent by 127 - 15 */
		bits = sign | ((em << 13) + (112u << 23));
	} else { /* zero or subnormal: em * 2^-24 is exact */
		f = (float)em * 0x1p-24f;
		memcpy(&bits, &f, sizeof(bits));
		bits |= sign;
	}
	memcpy(&f, &bits, sizeof(f));
	return f;
}

/* Dot product with 8 independent float accumulators: the fixed-width
 * inner loop lets the compiler use vector registers without -ffast-math,
 * and the order is fixed, so results do not depend on the thread split.
 * |b| is a float or (f16 = true) a kern_f16 row; |f16| is a constant at
 * each call site, so each cache type gets its own loop. */
static inline __attribute__((always_inline)) float dot8(const float *a, const void *bv, const bool f16, int n)
{
	const float *bf = bv;
	const kern_f16 *bh = bv;
	float acc[8] = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += a[i + j] * (f16 ? h2f(bh[i + j]) : bf[i + j]);
	float tail = 0.0f;
	for (; i < n; i++)
		tail += a[i] * (f16 ? h2f(bh[i]) : bf[i]);
	return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

static inline __attribute__((always_inline)) float kv_at(const void *row, const bool f16, size_t i)
{
	return f16 ? h2f(((const kern_f16 *)row)[i]) : ((const float *)row)[i];
}

/* One (token, head) pair: scores, softmax, weighted sum of values. */
static inline __attribute__((always_inline)) void attn_one(const struct kern_attn_args *a, int t, int h,
							   float *s, const bool f16)
{
	const int hd = a->head_dim;
	const size_t esz = f16 ? sizeof(kern_f16) : sizeof(float);
	const int hk = h / (a->n_head / a->n_head_kv);
	const float *q = a->q + (size_t)t * (size_t)a->q_stride + (size_t)h * (size_t)hd;
	const char *k = (const char *)a->k[t] + (size_t)hk * (size_t)hd * esz;
	const char *v = (const char *)a->v[t] + (size_t)hk * (size_t)hd * esz;
	float *out = a->out + (size_t)t * (size_t)a->out_stride + (size_t)h * (size_t)hd;
	const int n_kv = a->n_kv[t];
	const size_t row = (size_t)a->kv_stride * esz;

	for (int p = 0; p < n_kv; p++)
		s[p] = dot8(q, k + (size_t)p * row, f16, hd) * a->scale;
	softmax_generic(s, n_kv);
	/* out = sum_p s[p] v[p], 8 dimensions at a time so the partial sums
	 * stay in registers while the positions stream past. */
	int d0 = 0;
	for (; d0 + 8 <= hd; d0 += 8) {
		float acc[8] = {0};
		const char *vp = v;
		for (int p = 0; p < n_kv; p++, vp += row)
			for (int j = 0; j < 8; j++)
				acc[j] += s[p] * kv_at(vp, f16, (size_t)(d0 + j));
		for (int j = 0; j < 8; j++)
			out[d0 + j] = acc[j];
	}
	for (; d0 < hd; d0++) {
		float acc = 0.0f;
		for (int p = 0; p < n_kv; p++)
			acc += s[p] * kv_at(v + (size_t)p * row, f16, (size_t)d0);
		out[d0] = acc;
	}
}

void kern_attn_split(const struct kern_attn_args *a, int nth, int *n_units, int *n_sub)
{
	/* Split the query heads of a KV head into sub-groups only when there
	 * are too few (token, KV head) units to keep the threads busy. */
	const int n_rep = a->n_head / a->n_head_kv;
	int sub = 1;
	while ((int64_t)a->n_tok * a->n_head_kv * sub < 2 * (int64_t)nth && n_rep % (sub * 2) == 0)
		sub *= 2;
	*n_sub = sub;
	*n_units = a->n_tok * a->n_head_kv * sub;
}

/* Positions and head size of the F16 blocks converted on the stack. */
#define ATTN_F16_BLOCK 16
#define ATTN_F16_MAX_HD 256

/* F16 cache, query heads h0 .. h0 + ng - 1 of token t (all on one KV head):
 * each block of K and V rows is converted to float once for the group, then
 * goes through the same float arithmetic as attn_one (scores by dot8, the
 * value sum accumulated position after position), so the result equals
 * attn_one's over the same values. |s| holds ng rows of n_kv scores. */
static void attn_group_f16(const struct kern_attn_args *a, int t, int h0, int ng, float *s)
{
	const int hd = a->head_dim;
	const int hk = h0 / (a->n_head / a->n_head_kv);
	const kern_f16 *k = (const kern_f16 *)a->k[t] + (size_t)hk * (size_t)hd;
	const kern_f16 *v = (const kern_f16 *)a->v[t] + (size_t)hk * (size_t)hd;
	const int n_kv = a->n_kv[t];
	const size_t row = (size_t)a->kv_stride;
	float buf[ATTN_F16_BLOCK * ATTN_F16_MAX_HD];

	for (int p0 = 0; p0 < n_kv; p0 += ATTN_F16_BLOCK) {
		const int nb = n_kv - p0 < ATTN_F16_BLOCK ? n_kv - p0 : ATTN_F16_BLOCK;
		for (int p = 0; p < nb; p++)
			for (int d = 0; d < hd; d++)
				buf[p * hd + d] = h2f(k[(size_t)(p0 + p) * row + (size_t)d]);
		for (int g = 0; g < ng; g++) {
			const float *q = a->q + (size_t)t * (size_t)a->q_stride + (size_t)(h0 + g) * (size_t)hd;
			for (int p = 0; p < nb; p++)
				s[(size_t)g * n_kv + p0 + p] = dot8(q, buf + p * hd, false, hd) * a->scale;
		}
	}
	for (int g = 0; g < ng; g++) {
		softmax_generic(s + (size_t)g * n_kv, n_kv);
		float *out = a->out + (size_t)t * (size_t)a->out_stride + (size_t)(h0 + g) * (size_t)hd;
		for (int d = 0; d < hd; d++)
			out[d] = 0.0f;
	}
	for (int p0 = 0; p0 < n_kv; p0 += ATTN_F16_BLOCK) {
		const int nb = n_kv - p0 < ATTN_F16_BLOCK ? n_kv - p0 : ATTN_F16_BLOCK;
		for (int p = 0; p < nb; p++)
			for (int d = 0; d < hd; d++)
				buf[p * hd + d] = h2f(v[(size_t)(p0 + p) * row + (size_t)d]);
		for (int g = 0; g < ng; g++) {
			const float *sg = s + (size_t)g * n_kv + p0;
			float *out = a->out + (size_t)t * (size_t)a->out_stride + (size_t)(h0 + g) * (size_t)hd;
			for (int p = 0; p < nb; p++)
				for (int d = 0; d < hd; d++)
					out[d] += sg[p] * buf[p * hd + d];
		}
	}
}

static void attn_generic(const struct kern_attn_args *a, int ith, int nth)
{
	int n_units, n_sub;
	kern_attn_split(a, nth, &n_units, &n_sub);
	const int per_sub = a->n_head / a->n_head_kv / n_sub;
	float *s = a->scratch + (size_t)ith * (size_t)a->scratch_stride;
	for (int u = ith; u < n_units; u += nth) {
		const int t = u / (a->n_head_kv * n_sub);
		const int g = u % (a->n_head_kv * n_sub); /* KV head * n_sub + sub-group */
		if (a->kv_f16 && a->head_dim <= ATTN_F16_MAX_HD) {
			attn_group_f16(a, t, g * per_sub, per_sub, s);
			continue;
		}
		for (int h = g * per_sub; h < (g + 1) * per_sub; h++) {
			if (a->kv_f16)
				attn_one(a, t, h, s, true);
			else
				attn_one(a, t, h, s, false);
		}
	}
}

static void f32_to_f16_row_generic(kern_f16 *y, const float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f32_to_f16(x[i]);
}

static void f16_to_f32_row_generic(float *y, const kern_f16 *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f16_to_f32(x[i]);
}

/* ---- dispatch ---------------------------------------------------------- */

static const struct kern_ops_table g_generic = {
	.name = "generic",
	.rmsnorm = rmsnorm_generic,
	.rope = rope_generic,
	.softmax = softmax_generic,
	.swiglu = swiglu_generic,
	.add = add_generic,
	.attn = attn_generic,
	.f32_to_f16_row = f32_to_f16_row_generic,
	.f16_to_f32_row = f16_to_f32_row_generic,
};

static struct kern_ops_table g_avx2;  /* filled once if this CPU runs it */
static bool g_have_avx2;
static const struct kern_ops_table *g_active = &g_generic;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void ops_init_once(void)
{
#if defined(__x86_64__)
	const struct ml_cpu_features *cpu = ml_cpu_features();
	if (cpu->avx2 && cpu->fma && cpu->f16c) {
		g_avx2 = g_generic;
		g_have_avx2 = kern_ops_fill_avx2(&g_avx2) > 0;
	}
#endif
	const char *env = getenv("MESH_LLM_KERNELS");
	const bool force_generic = env != NULL && strcmp(env, "generic") == 0;
	if (g_have_avx2 && !force_generic)
		g_active = &g_avx2;
}

const struct kern_ops_table *kern_ops_active(void)
{
	pthread_once(&g_once, ops_init_once);
	return g_active;
}

const struct kern_ops_table *kern_ops_generic(void)
{
	return &g_generic;
}

const struct kern_ops_table *kern_ops_variant(const char *name)
{
	pthread_once(&g_once, ops_init_once);
	if (strcmp(name, "generic") == 0)
		return &g_generic;
	if (strcmp(name, "avx2") == 0 && g_have_avx2)
		return &g_avx2;
	return NULL;
}

void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
	kern_ops_active()->rmsnorm(y, x, w, n, eps);
}

void kern_rope(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox)
{
	kern_ops_active()->rope(x, n_head, head_dim, n_rot, cs, neox);
}

void kern_softmax(float *x, int64_t n)
{
	kern_ops_active()->softmax(x, n);
}

void kern_swiglu(float *y, const float *g, const float *u, int64_t n)
{
	kern_ops_active()->swiglu(y, g, u, n);
}

void kern_add(float *y, const float *a, const float *b, int64_t n)
{
	kern_ops_active()->add(y, a, b, n);
}

void kern_add_rows(float *y, int64_t stride, const float *b, int64_t n, int64_t n_rows)
{
	const struct kern_ops_table *t = kern_ops_active();
	for (int64_t r = 0; r < n_rows; r++)
		t->add(y + r * stride, y + r * stride, b, n);
}

void kern_attn(const struct kern_attn_args *a, int ith, int nth)
{
	kern_ops_active()->attn(a, ith, nth);
}

void kern_f32_to_f16_row(kern_f16 *y, const float *x, int64_t n)
{
	kern_ops_active()->f32_to_f16_row(y, x, n);
}

void kern_f16_to_f32_row(float *y, const kern_f16 *x, int64_t n)
{
	kern_ops_active()->f16_to_f32_row(y, x, n);
}
