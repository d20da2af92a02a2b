/* Scalar reference versions of the forward-pass row operations (see
 * kern_ops.h). The arithmetic mirrors ggml's CPU ops where rounding is
 * visible in the logits: double accumulators for sums of squares and
 * softmax sums, float everywhere else (attention dot products use 8 float
 * partial sums, as ggml's SIMD dot products do). */
#include "kernels/kern_ops.h"

#include <math.h>
#include <stddef.h>

void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
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

void kern_rope(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox)
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

void kern_softmax(float *x, int64_t n)
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

void kern_swiglu(float *y, const float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		const float v = g[i];
		y[i] = (v / (1.0f + expf(-v))) * u[i];
	}
}

void kern_add(float *y, const float *a, const float *b, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = a[i] + b[i];
}

void kern_add_rows(float *y, int64_t stride, const float *b, int64_t n, int64_t n_rows)
{
	for (int64_t r = 0; r < n_rows; r++) {
		float *yr = y + r * stride;
		for (int64_t i = 0; i < n; i++)
			yr[i] += b[i];
	}
}

/* Dot product with 8 independent float accumulators: the fixed-width
 * inner loop lets the compiler use vector registers without -ffast-math,
 * and the order is fixed, so results do not depend on the thread split. */
static inline float dot8(const float *a, const float *b, int n)
{
	float acc[8] = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += a[i + j] * b[i + j];
	float tail = 0.0f;
	for (; i < n; i++)
		tail += a[i] * b[i];
	return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

/* One (token, head) pair: scores, softmax, weighted sum of values. */
static void attn_one(const struct kern_attn_args *a, int t, int h, float *s)
{
	const int hd = a->head_dim;
	const int hk = h / (a->n_head / a->n_head_kv);
	const float *q = a->q + (size_t)t * (size_t)a->q_stride + (size_t)h * (size_t)hd;
	const float *k = a->k[t] + (size_t)hk * (size_t)hd;
	const float *v = a->v[t] + (size_t)hk * (size_t)hd;
	float *out = a->out + (size_t)t * (size_t)a->out_stride + (size_t)h * (size_t)hd;
	const int n_kv = a->n_kv[t];

	for (int p = 0; p < n_kv; p++)
		s[p] = dot8(q, k + (size_t)p * (size_t)a->kv_stride, hd) * a->scale;
	kern_softmax(s, n_kv);
	/* out = sum_p s[p] v[p], 8 dimensions at a time so the partial sums
	 * stay in registers while the positions stream past. */
	const size_t vs = (size_t)a->kv_stride;
	int d0 = 0;
	for (; d0 + 8 <= hd; d0 += 8) {
		float acc[8] = {0};
		const float *vp = v + d0;
		for (int p = 0; p < n_kv; p++, vp += vs)
			for (int j = 0; j < 8; j++)
				acc[j] += s[p] * vp[j];
		for (int j = 0; j < 8; j++)
			out[d0 + j] = acc[j];
	}
	for (; d0 < hd; d0++) {
		float acc = 0.0f;
		for (int p = 0; p < n_kv; p++)
			acc += s[p] * v[(size_t)p * vs + (size_t)d0];
		out[d0] = acc;
	}
}

void kern_attn(const struct kern_attn_args *a, int ith, int nth)
{
	/* Interleaved split: causal rows grow with the position, so contiguous
	 * chunks would leave the last thread with the most work. */
	const int64_t n_pairs = (int64_t)a->n_tok * a->n_head;
	float *s = a->scratch + (size_t)ith * (size_t)a->scratch_stride;
	for (int64_t i = ith; i < n_pairs; i += nth)
		attn_one(a, (int)(i / a->n_head), (int)(i % a->n_head), s);
}
