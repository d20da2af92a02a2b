/* Element-wise and row operations of the transformer forward pass: RMS norm,
 * rotary position embedding (normal and NeoX), softmax, SwiGLU, vector adds
 * and batched causal attention over a KV cache.
 *
 * These are the scalar reference versions. They follow ggml's CPU arithmetic
 * where it matters for matching llama.cpp's outputs (sums of squares and
 * softmax sums in double, RoPE angles built by repeated multiplication in
 * float, scores scaled after the dot product), and are written as plain
 * loops over contiguous rows so SIMD variants can replace them one by one,
 * checked against these with named tolerances. None of them allocates. */
#ifndef KERN_OPS_H
#define KERN_OPS_H

#include <stdbool.h>
#include <stdint.h>

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]  over |n| elements (w may be
 * NULL: no weight). y may alias x. */
void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);

/* cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i) for i < n_rot/2 with
 * theta_i = freq_scale * pos * freq_base^(-2i/n_rot) / ff[i], the angles
 * computed as ggml does (pos multiplied by freq_base^(-2/n_rot) step by step
 * in float). |freq_factors| (n_rot/2 values, e.g. Llama 3.1's rope_freqs)
 * may be NULL (all 1). |cs| holds n_rot floats; n_rot is even. */
void kern_rope_cache(float *cs, int n_rot, int32_t pos, float freq_base, float freq_scale,
		     const float *freq_factors);

/* Rotates the first |n_rot| values of each of |n_head| heads of
 * |head_dim| values in |x| (heads contiguous), in place, with angles from
 * kern_rope_cache(). neox = false rotates adjacent pairs (x[2i], x[2i+1]);
 * neox = true rotates (x[i], x[i + n_rot/2]). Values past n_rot are kept. */
void kern_rope(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox);

/* In place: x[i] = exp(x[i] - max) / sum over |n| elements (n >= 1). */
void kern_softmax(float *x, int64_t n);

/* y[i] = silu(g[i]) * u[i], silu(v) = v / (1 + exp(-v)). y may alias g or u. */
void kern_swiglu(float *y, const float *g, const float *u, int64_t n);

/* y[i] = a[i] + b[i]. y may alias a or b. */
void kern_add(float *y, const float *a, const float *b, int64_t n);

/* y[i] += b[i] over each of |n_rows| rows of |n| values (row stride |stride|):
 * adds a bias vector to every row. */
void kern_add_rows(float *y, int64_t stride, const float *b, int64_t n, int64_t n_rows);

/* Causal multi-head attention of a batch of query rows over a KV cache,
 * with grouped-query heads: query head h reads KV head h / (n_head / n_head_kv).
 * For token t and head h:
 *   s[p]   = scale * dot(q[t][h], k[t][p][hk])   for p < n_kv[t]
 *   out[t][h] = sum_p softmax(s)[p] * v[t][p][hk]
 * Each token brings its own cache rows (its sequence's), and n_kv[t] is how
 * many of them it may see (position + 1 for a causal mask), so several
 * sequences can share one batch. */
struct kern_attn_args {
	int n_tok;
	int n_head;                /* query heads; a multiple of n_head_kv */
	int n_head_kv;
	int head_dim;
	const float *q;            /* [n_tok][q_stride], head h at h * head_dim */
	int64_t q_stride;
	float *out;                /* [n_tok][out_stride], head h at h * head_dim */
	int64_t out_stride;
	const float *const *k;     /* [n_tok] -> cache rows [n_kv[t]][kv_stride] */
	const float *const *v;     /* [n_tok] -> cache rows [n_kv[t]][kv_stride] */
	int64_t kv_stride;         /* floats between positions; KV head hk at hk * head_dim */
	const int32_t *n_kv;       /* [n_tok], each >= 1 */
	float scale;               /* usually 1 / sqrt(head_dim) */
	float *scratch;            /* [nth][scratch_stride] score rows */
	int64_t scratch_stride;    /* >= max n_kv */
};

/* Thread |ith| of |nth| computes its share of the (token, head) pairs. */
void kern_attn(const struct kern_attn_args *a, int ith, int nth);

#endif
