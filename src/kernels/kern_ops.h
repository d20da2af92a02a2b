/* Element-wise and row operations of the transformer forward pass: RMS norm,
 * rotary position embedding (normal and NeoX), softmax, SwiGLU, vector adds
 * and batched causal attention over a KV cache (F32 or F16 rows).
 *
 * The functions below dispatch, once per process, to the best variant the
 * CPU supports (AVX2+FMA+F16C in kern_ops_avx2.c, else the scalar
 * reference in kern_ops.c); MESH_LLM_KERNELS=generic forces the scalar one,
 * as for the matrix kernels. The scalar versions follow ggml's CPU
 * arithmetic where it matters for matching llama.cpp's outputs (sums of
 * squares and softmax sums in double, RoPE angles built by repeated
 * multiplication in float, scores scaled after the dot product). The SIMD
 * versions are checked against them with named tolerances
 * (tests/model/test_kern_ops.c): RMS norm, RoPE and adds agree to float
 * rounding of the summation order (RoPE and adds bit for bit); softmax,
 * SwiGLU and attention use a polynomial exp good to ~2 ulp. None of them
 * allocates. */
#ifndef KERN_OPS_H
#define KERN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/kern.h" /* kern_f16 */

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
	int kv_f16;                /* 0: k/v rows are float; 1: kern_f16 (IEEE half) */
	int n_head;                /* query heads; a multiple of n_head_kv */
	int n_head_kv;
	int head_dim;
	const float *q;            /* [n_tok][q_stride], head h at h * head_dim */
	int64_t q_stride;
	float *out;                /* [n_tok][out_stride], head h at h * head_dim */
	int64_t out_stride;
	const void *const *k;      /* [n_tok] -> cache rows [n_kv[t]][kv_stride] of float or kern_f16 */
	const void *const *v;      /* [n_tok] -> cache rows [n_kv[t]][kv_stride] */
	int64_t kv_stride;         /* elements between positions; KV head hk at hk * head_dim */
	const int32_t *n_kv;       /* [n_tok], each >= 1 */
	float scale;               /* usually 1 / sqrt(head_dim) */
	float *scratch;            /* [nth][scratch_stride] score rows */
	int64_t scratch_stride;    /* >= (n_head / n_head_kv) * max n_kv */
};

/* Thread |ith| of |nth| computes its share of the (token, head) pairs.
 * Work is split in units of (token, KV head, group of the query heads that
 * share it), so for one token each thread reads only its KV heads' rows;
 * units are dealt round-robin, which balances the causal rows of a prompt.
 * The result does not depend on nth. */
void kern_attn(const struct kern_attn_args *a, int ith, int nth);

/* Row conversion to and from IEEE half (round to nearest even), for KV
 * cache rows. */
void kern_f32_to_f16_row(kern_f16 *y, const float *x, int64_t n);
void kern_f16_to_f32_row(float *y, const kern_f16 *x, int64_t n);

/* ---- variants (tests and benchmarks) ----------------------------------- */

struct kern_ops_table {
	const char *name; /* "generic", "avx2" */
	void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
	void (*rope)(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox);
	void (*softmax)(float *x, int64_t n);
	void (*swiglu)(float *y, const float *g, const float *u, int64_t n);
	void (*add)(float *y, const float *a, const float *b, int64_t n);
	void (*attn)(const struct kern_attn_args *a, int ith, int nth);
	void (*f32_to_f16_row)(kern_f16 *y, const float *x, int64_t n);
	void (*f16_to_f32_row)(float *y, const kern_f16 *x, int64_t n);
};

/* The scalar reference table (never NULL). */
const struct kern_ops_table *kern_ops_generic(void);
/* The table named |name| ("generic", "avx2") if this build has it and this
 * CPU runs it, else NULL. */
const struct kern_ops_table *kern_ops_variant(const char *name);
/* The table the kern_* functions above dispatch to. */
const struct kern_ops_table *kern_ops_active(void);
/* Filled by kern_ops_avx2.c (returns 0 and leaves |t| alone when the file
 * was built without AVX2 support). Internal to src/kernels. */
int kern_ops_fill_avx2(struct kern_ops_table *t);
/* How kern_attn() variants split work for |nth| threads: |n_units| units of
 * (token, KV head, sub-group), each KV head's query heads in |n_sub|
 * sub-groups; unit u goes to thread u % nth. Internal to src/kernels. */
void kern_attn_split(const struct kern_attn_args *a, int nth, int *n_units, int *n_sub);

#endif
