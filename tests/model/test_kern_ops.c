/* Tests for src/kernels/kern_ops.c (the forward pass's row operations)
 * against double-precision formulas, with named tolerances. SIMD variants of
 * these ops should pass the same tests. Lives under tests/model because the
 * forward pass is its only user. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_rng.h"
#include "kernels/kern_ops.h"

#define TOL_REL 2e-6 /* float rounding of a few operations */

static void fill(float *x, int n, uint64_t seed, double scale)
{
	struct ml_rng r;
	ml_rng_seed(&r, seed);
	for (int i = 0; i < n; i++)
		x[i] = (float)(ml_rng_normal(&r) * scale);
}

static void test_kern_rmsnorm(void **state)
{
	(void)state;
	float x[300], w[300], y[300];
	fill(x, 300, 1, 2.0);
	fill(w, 300, 2, 1.0);
	double ss = 0;
	for (int i = 0; i < 300; i++)
		ss += (double)x[i] * x[i];
	const double scale = 1.0 / sqrt(ss / 300 + 1e-5);
	kern_rmsnorm(y, x, w, 300, 1e-5f);
	for (int i = 0; i < 300; i++)
		assert_true(fabs(y[i] - x[i] * scale * w[i]) <= TOL_REL * (fabs(x[i] * scale * w[i]) + 1e-6));
	kern_rmsnorm(x, x, NULL, 300, 1e-5f); /* in place, no weight */
	ss = 0;
	for (int i = 0; i < 300; i++)
		ss += (double)x[i] * x[i];
	assert_true(fabs(ss / 300 - 1.0) < 1e-4);
}

static void test_kern_rope(void **state)
{
	(void)state;
	enum { H = 3, D = 16, R = 12 }; /* rotate 12 of 16 dims per head */
	float x[H * D], y[H * D], cs[R];
	const float base = 10000.0f, fscale = 0.5f;
	const float ffs[R / 2] = {1, 1, 2, 4, 8, 1};
	for (int neox = 0; neox < 4; neox++) {
		const float *ff = neox >= 2 ? ffs : NULL; /* with and without freq factors */
		for (int pos = 0; pos < 40; pos += 13) {
			fill(x, H * D, 3 + (uint64_t)pos, 1.0);
			memcpy(y, x, sizeof(x));
			kern_rope_cache(cs, R, pos, base, fscale, ff);
			kern_rope(y, H, D, R, cs, neox & 1);
			for (int h = 0; h < H; h++) {
				const float *xh = x + h * D, *yh = y + h * D;
				for (int i = 0; i < R / 2; i++) {
					double th = fscale * pos * pow(base, -2.0 * i / R) / (ff ? ff[i] : 1.0);
					int i0 = neox & 1 ? i : 2 * i, i1 = neox & 1 ? i + R / 2 : 2 * i + 1;
					double e0 = xh[i0] * cos(th) - xh[i1] * sin(th);
					double e1 = xh[i0] * sin(th) + xh[i1] * cos(th);
					assert_true(fabs(yh[i0] - e0) < 1e-5 && fabs(yh[i1] - e1) < 1e-5);
				}
				for (int i = R; i < D; i++)
					assert_true(yh[i] == xh[i]); /* past n_rot: untouched */
				if (pos == 0)
					assert_memory_equal(xh, yh, sizeof(float) * D);
			}
		}
	}
}

static void test_kern_softmax_swiglu_add(void **state)
{
	(void)state;
	float x[100], g[100], u[100], y[100];
	fill(x, 100, 5, 3.0);
	double mx = -1e30, z = 0;
	for (int i = 0; i < 100; i++)
		mx = x[i] > mx ? x[i] : mx;
	for (int i = 0; i < 100; i++)
		z += exp(x[i] - mx);
	memcpy(y, x, sizeof(x));
	kern_softmax(y, 100);
	double sum = 0;
	for (int i = 0; i < 100; i++) {
		assert_true(fabs(y[i] - exp(x[i] - mx) / z) < 1e-6);
		sum += y[i];
	}
	assert_true(fabs(sum - 1.0) < 1e-5);
	float big[3] = {1000.0f, 1000.0f, -INFINITY}; /* no overflow; -inf gives 0 */
	kern_softmax(big, 3);
	assert_true(big[0] == 0.5f && big[1] == 0.5f && big[2] == 0.0f);

	fill(g, 100, 6, 3.0);
	fill(u, 100, 7, 1.0);
	kern_swiglu(y, g, u, 100);
	for (int i = 0; i < 100; i++) {
		double e = g[i] / (1.0 + exp(-g[i])) * u[i];
		assert_true(fabs(y[i] - e) <= 1e-6 * (fabs(e) + 1e-6));
	}
	kern_add(y, g, u, 100);
	for (int i = 0; i < 100; i++)
		assert_true(y[i] == g[i] + u[i]);
	float rows[2 * 5] = {0};
	const float b[5] = {1, 2, 3, 4, 5};
	kern_add_rows(rows, 5, b, 5, 2);
	kern_add_rows(rows, 5, b, 5, 2);
	for (int i = 0; i < 10; i++)
		assert_true(rows[i] == 2 * b[i % 5]);
}

/* kern_attn against a double-precision reference: 3 tokens of two
 * sequences with different visible lengths, 4 query heads over 2 KV heads,
 * and the same result for every thread split. */
static void test_kern_attn(void **state)
{
	(void)state;
	enum { NT = 3, NH = 4, NHK = 2, HD = 8, NCTX = 20, KVS = NHK * HD };
	float q[NT * NH * HD], out[NT * NH * HD], out2[NT * NH * HD];
	float kc[2][NCTX * KVS], vc[2][NCTX * KVS], scratch[4 * (NH / NHK) * NCTX];
	fill(q, NT * NH * HD, 11, 1.0);
	fill(kc[0], NCTX * KVS, 12, 1.0);
	fill(kc[1], NCTX * KVS, 13, 1.0);
	fill(vc[0], NCTX * KVS, 14, 1.0);
	fill(vc[1], NCTX * KVS, 15, 1.0);
	const float *kp[NT] = {kc[0], kc[1], kc[0]}, *vp[NT] = {vc[0], vc[1], vc[0]};
	const void *kpv[NT] = {kp[0], kp[1], kp[2]}, *vpv[NT] = {vp[0], vp[1], vp[2]};
	const int32_t n_kv[NT] = {1, 7, 20};
	struct kern_attn_args a = {
		.n_tok = NT, .n_head = NH, .n_head_kv = NHK, .head_dim = HD,
		.q = q, .q_stride = NH * HD, .out = out, .out_stride = NH * HD,
		.k = kpv, .v = vpv, .kv_stride = KVS, .n_kv = n_kv,
		.scale = 1.0f / sqrtf(HD), .scratch = scratch, .scratch_stride = (NH / NHK) * NCTX,
	};
	kern_attn(&a, 0, 1);
	for (int t = 0; t < NT; t++) {
		for (int h = 0; h < NH; h++) {
			const int hk = h / (NH / NHK);
			double s[NCTX], mx = -1e30, z = 0;
			for (int p = 0; p < n_kv[t]; p++) {
				double d = 0;
				for (int i = 0; i < HD; i++)
					d += (double)q[(t * NH + h) * HD + i] * kp[t][p * KVS + hk * HD + i];
				s[p] = d / sqrt(HD);
				mx = s[p] > mx ? s[p] : mx;
			}
			for (int p = 0; p < n_kv[t]; p++)
				z += s[p] = exp(s[p] - mx);
			for (int i = 0; i < HD; i++) {
				double o = 0;
				for (int p = 0; p < n_kv[t]; p++)
					o += s[p] / z * vp[t][p * KVS + hk * HD + i];
				assert_true(fabs(out[(t * NH + h) * HD + i] - o) < 1e-5);
			}
		}
	}
	for (int nth = 2; nth <= 4; nth++) {
		a.out = out2;
		memset(out2, 0, sizeof(out2));
		for (int ith = 0; ith < nth; ith++)
			kern_attn(&a, ith, nth);
		assert_memory_equal(out, out2, sizeof(out));
	}
}


/* ---- SIMD variants against the scalar reference ------------------------- */

/* Named tolerances of the variants vs the generic ops (kern_ops_avx2.c says
 * where each differs):
 *   TOL_V_RMSNORM_REL  the double sum of squares in another order: the float
 *                      mean may round differently in the last bit;
 *   TOL_V_EXP_REL      polynomial exp (~2 ulp) vs libm expf, in softmax and
 *                      SwiGLU (plus one division / normalization);
 *   TOL_V_ATTN_ABS     attention outputs (|v| ~ 1): FMA dot products summed
 *                      in another order, the exp above;
 *   RoPE, add, f16 rows: bit-identical. */
#define TOL_V_RMSNORM_REL 3e-7
#define TOL_V_EXP_REL 8e-7
#define TOL_V_ATTN_ABS 2e-6

static bool close_rel(double got, double want, double tol)
{
	return fabs(got - want) <= tol * fabs(want) + 1e-30;
}

static void test_kern_ops_variants(void **state)
{
	(void)state;
	const struct kern_ops_table *g = kern_ops_generic();
	const char *names[] = {"avx2"};
	int tested = 0;
	assert_ptr_equal(kern_ops_variant("generic"), g);
	assert_null(kern_ops_variant("no-such-isa"));
	for (size_t vi = 0; vi < sizeof(names) / sizeof(names[0]); vi++) {
		const struct kern_ops_table *v = kern_ops_variant(names[vi]);
		if (v == NULL) {
			printf("kern_ops: variant %s not available on this CPU, skipped\n", names[vi]);
			continue;
		}
		tested++;
		enum { N = 1031 }; /* odd: exercises every scalar tail */
		static float x[N], w[N], y0[N], y1[N], u[N];
		const int64_t lens[] = {1, 7, 8, 9, 64, 255, 256, 1031};
		for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
			const int64_t n = lens[li];
			fill(x, N, 100 + li, 3.0);
			fill(w, N, 200 + li, 1.0);
			fill(u, N, 300 + li, 1.0);
			/* rmsnorm with and without weight, in place */
			g->rmsnorm(y0, x, w, n, 1e-5f);
			v->rmsnorm(y1, x, w, n, 1e-5f);
			for (int64_t i = 0; i < n; i++)
				assert_true(close_rel(y1[i], y0[i], TOL_V_RMSNORM_REL));
			memcpy(y0, x, sizeof(x));
			memcpy(y1, x, sizeof(x));
			g->rmsnorm(y0, y0, NULL, n, 1e-6f);
			v->rmsnorm(y1, y1, NULL, n, 1e-6f);
			for (int64_t i = 0; i < n; i++)
				assert_true(close_rel(y1[i], y0[i], TOL_V_RMSNORM_REL));
			/* softmax, with a -inf entry when there is room */
			memcpy(y0, x, sizeof(x));
			if (n > 3)
				y0[3] = -INFINITY;
			memcpy(y1, y0, sizeof(x));
			g->softmax(y0, n);
			v->softmax(y1, n);
			for (int64_t i = 0; i < n; i++)
				assert_true(close_rel(y1[i], y0[i], TOL_V_EXP_REL));
			if (n > 3)
				assert_true(y1[3] == 0.0f);
			/* swiglu, in place on g */
			g->swiglu(y0, x, u, n);
			memcpy(y1, x, sizeof(x));
			v->swiglu(y1, y1, u, n);
			for (int64_t i = 0; i < n; i++)
				assert_true(close_rel(y1[i], y0[i], TOL_V_EXP_REL));
			/* add: exact */
			g->add(y0, x, u, n);
			v->add(y1, x, u, n);
			assert_memory_equal(y0, y1, (size_t)n * sizeof(float));
		}
		/* SwiGLU over the whole float range of the exp: saturation at both ends. */
		for (int i = 0; i < N; i++) {
			x[i] = -120.0f + 240.0f * (float)i / (N - 1);
			u[i] = 1.0f;
		}
		g->swiglu(y0, x, u, N);
		v->swiglu(y1, x, u, N);
		for (int i = 0; i < N; i++)
			assert_true(close_rel(y1[i], y0[i], TOL_V_EXP_REL) || fabs(y1[i] - y0[i]) < 1e-37);
		/* softmax of large spreads: the exp of very negative differences is 0 */
		for (int i = 0; i < 64; i++)
			y0[i] = y1[i] = (float)(i * i) * 0.5f - 800.0f;
		g->softmax(y0, 64);
		v->softmax(y1, 64);
		for (int i = 0; i < 64; i++)
			assert_true(close_rel(y1[i], y0[i], TOL_V_EXP_REL) || fabs(y1[i] - y0[i]) < 1e-37);

		/* RoPE: bit-identical, both orderings, full and partial rotation */
		const int dims[][3] = {{4, 64, 64}, {3, 16, 12}, {2, 128, 128}, {5, 40, 24}, {2, 32, 32}};
		for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
			const int H = dims[di][0], D = dims[di][1], R = dims[di][2];
			float cs[128];
			for (int neox = 0; neox < 2; neox++) {
				kern_rope_cache(cs, R, 1234, 10000.0f, 1.0f, NULL);
				fill(y0, H * D, 400 + di, 1.0);
				memcpy(y1, y0, (size_t)(H * D) * sizeof(float));
				g->rope(y0, H, D, R, cs, neox);
				v->rope(y1, H, D, R, cs, neox);
				assert_memory_equal(y0, y1, (size_t)(H * D) * sizeof(float));
			}
		}

		/* f16 rows: bit-identical, including infinities, overflow and subnormals */
		static kern_f16 h0[N], h1[N];
		fill(x, N, 500, 1000.0);
		x[0] = INFINITY;
		x[1] = -INFINITY;
		x[2] = 70000.0f;
		x[3] = 1e-6f;
		x[4] = -3e-8f;
		x[5] = 0.0f;
		x[6] = -0.0f;
		x[7] = 65519.0f;
		x[8] = 65520.0f;
		for (int i = 9; i < 100; i++)
			x[i] *= 1e-7f; /* subnormal halves */
		g->f32_to_f16_row(h0, x, N);
		v->f32_to_f16_row(h1, x, N);
		assert_memory_equal(h0, h1, sizeof(h0));
		g->f16_to_f32_row(y0, h0, N);
		v->f16_to_f32_row(y1, h0, N);
		assert_memory_equal(y0, y1, sizeof(float) * N);
	}
	printf("kern_ops: %d SIMD variant(s) checked against generic; active: %s\n", tested,
	       kern_ops_active()->name);
}

/* Attention of the variants (F32 and F16 cache) against the generic one,
 * over head sizes that hit each code path (64-wide blocks, 8-wide blocks,
 * scalar tail), several visible lengths and GQA ratios; every thread split
 * gives the same bits. The F16 generic result equals the F32 generic result
 * over the same half-rounded values. */
static void test_kern_attn_variants(void **state)
{
	(void)state;
	const struct kern_ops_table *g = kern_ops_generic();
	const int shapes[][3] = {{8, 2, 64}, {4, 4, 40}, {6, 3, 12}, {4, 1, 128}, {2, 2, 8}}; /* n_head, n_head_kv, hd */
	enum { NT = 5, NCTX = 70, MAXF = 8 * 128 };
	static float q[NT * MAXF], o0[NT * MAXF], o1[NT * MAXF], o2[NT * MAXF];
	static float kc[2][NCTX * MAXF], vc[2][NCTX * MAXF], kr[2][NCTX * MAXF], vr[2][NCTX * MAXF];
	static kern_f16 kh[2][NCTX * MAXF], vh[2][NCTX * MAXF];
	static float scratch[4 * 8 * NCTX];
	const int32_t n_kv[NT] = {1, 3, 17, 64, 70};
	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		const int NH = shapes[si][0], NHK = shapes[si][1], HD = shapes[si][2];
		const int64_t KVS = (int64_t)NHK * HD;
		fill(q, NT * NH * HD, 600 + si, 1.0);
		for (int sq = 0; sq < 2; sq++) {
			fill(kc[sq], (int)(NCTX * KVS), 700 + si * 4 + sq, 1.0);
			fill(vc[sq], (int)(NCTX * KVS), 800 + si * 4 + sq, 1.0);
			g->f32_to_f16_row(kh[sq], kc[sq], NCTX * KVS);
			g->f32_to_f16_row(vh[sq], vc[sq], NCTX * KVS);
			g->f16_to_f32_row(kr[sq], kh[sq], NCTX * KVS);
			g->f16_to_f32_row(vr[sq], vh[sq], NCTX * KVS);
		}
		for (int f16 = 0; f16 < 2; f16++) {
			const void *kp[NT], *vp[NT], *kpr[NT], *vpr[NT];
			for (int t = 0; t < NT; t++) {
				kp[t] = f16 ? (const void *)kh[t & 1] : (const void *)kc[t & 1];
				vp[t] = f16 ? (const void *)vh[t & 1] : (const void *)vc[t & 1];
				kpr[t] = kr[t & 1];
				vpr[t] = vr[t & 1];
			}
			struct kern_attn_args a = {
				.n_tok = NT, .kv_f16 = f16, .n_head = NH, .n_head_kv = NHK, .head_dim = HD,
				.q = q, .q_stride = NH * HD, .out = o0, .out_stride = NH * HD,
				.k = kp, .v = vp, .kv_stride = KVS, .n_kv = n_kv,
				.scale = 1.0f / sqrtf((float)HD), .scratch = scratch, .scratch_stride = (NH / NHK) * NCTX,
			};
			g->attn(&a, 0, 1);
			if (f16) { /* the same as F32 attention over the rounded values */
				struct kern_attn_args r = a;
				r.kv_f16 = 0;
				r.k = kpr;
				r.v = vpr;
				r.out = o2;
				g->attn(&r, 0, 1);
				assert_memory_equal(o0, o2, sizeof(float) * NT * NH * HD);
			}
			const char *names[] = {"generic", "avx2"};
			for (size_t vi = 0; vi < 2; vi++) {
				const struct kern_ops_table *v = kern_ops_variant(names[vi]);
				if (v == NULL)
					continue;
				a.out = o1;
				v->attn(&a, 0, 1);
				for (int i = 0; i < NT * NH * HD; i++)
					assert_true(fabs(o1[i] - o0[i]) <= TOL_V_ATTN_ABS);
				for (int nth = 2; nth <= 4; nth++) {
					a.out = o2;
					memset(o2, 0, sizeof(o2));
					for (int ith = 0; ith < nth; ith++)
						v->attn(&a, ith, nth);
					assert_memory_equal(o1, o2, sizeof(float) * NT * NH * HD);
				}
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kern_rmsnorm),
		cmocka_unit_test(test_kern_rope),
		cmocka_unit_test(test_kern_softmax_swiglu_add),
		cmocka_unit_test(test_kern_attn),
		cmocka_unit_test(test_kern_ops_variants),
		cmocka_unit_test(test_kern_attn_variants),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
