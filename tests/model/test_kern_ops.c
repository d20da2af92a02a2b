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
	float kc[2][NCTX * KVS], vc[2][NCTX * KVS], scratch[4 * NCTX];
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
		.scale = 1.0f / sqrtf(HD), .scratch = scratch, .scratch_stride = NCTX,
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kern_rmsnorm),
		cmocka_unit_test(test_kern_rope),
		cmocka_unit_test(test_kern_softmax_swiglu_add),
		cmocka_unit_test(test_kern_attn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
