/* Tests for kern_quantize_rows/kern_matmul: every weight type, 1..3 threads
 * (ml_pool), 1..70 tokens, odd row counts, against a naive reference that
 * dequantizes both operands and multiplies in double. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_dtype.h"
#include "base/ml_pool.h"
#include "base/ml_rng.h"
#include "kernels/kern.h"

/* |matmul - reference| <= MATMUL_REL_TOL * sum_i |w_i x_i|: the reference
 * uses the same quantized operands, so only float summation order differs. */
#define MATMUL_REL_TOL 1e-4
/* Q4_1/Q5_1 use Q8_1's block sum s = d * sum(q), stored as f16 (as ggml
 * does), which the dequantized reference does not see: 2^-11 relative of
 * the min term. */
#define MATMUL_REL_TOL_Q8_1 2e-3

struct mm_job {
	enum ml_dtype wt, vdt;
	const float *x;
	void *xq;
	const void *w;
	int64_t n_rows, n_cols, n_tok;
	float *y;
	int64_t y_stride;
};

static void quant_fn(void *arg, int ith, int nth)
{
	struct mm_job *j = arg;
	kern_quantize_rows(j->vdt, j->x, j->n_cols, j->xq, j->n_tok, j->n_cols, ith, nth);
}

static void mm_fn(void *arg, int ith, int nth)
{
	struct mm_job *j = arg;
	kern_matmul(j->wt, j->w, j->n_rows, j->n_cols, j->xq, j->n_tok, j->y, j->y_stride, ith, nth);
}

static const enum ml_dtype TYPES[] = {
	ML_DTYPE_F32,  ML_DTYPE_F16,  ML_DTYPE_BF16, ML_DTYPE_Q4_0, ML_DTYPE_Q4_1,
	ML_DTYPE_Q5_0, ML_DTYPE_Q5_1, ML_DTYPE_Q8_0, ML_DTYPE_Q2_K, ML_DTYPE_Q3_K,
	ML_DTYPE_Q4_K, ML_DTYPE_Q5_K, ML_DTYPE_Q6_K,
};

static void run_case(struct ml_pool *pool, enum ml_dtype wt, int64_t n_rows, int64_t n_cols,
		     int64_t n_tok, struct ml_rng *rng)
{
	const struct kern_type_traits *tr = kern_type_traits(wt);
	const struct kern_type_traits *vt = kern_type_traits(tr->vec_dot_type);
	float *wf = malloc(n_rows * n_cols * sizeof(float));
	float *x = malloc(n_tok * n_cols * sizeof(float));
	for (int64_t i = 0; i < n_rows * n_cols; i++)
		wf[i] = (float)(ml_rng_normal(rng) * 0.05);
	for (int64_t i = 0; i < n_tok * n_cols; i++)
		x[i] = (float)ml_rng_normal(rng);
	const size_t wrow = ml_dtype_row_size(wt, n_cols);
	const size_t xrow = ml_dtype_row_size(tr->vec_dot_type, n_cols);
	char *w = malloc(n_rows * wrow);
	for (int64_t r = 0; r < n_rows; r++)
		tr->from_f32(wf + r * n_cols, w + r * wrow, n_cols);
	void *xq = malloc(n_tok * xrow);
	const int64_t y_stride = n_rows + 3; /* padded output rows */
	float *y = malloc(n_tok * y_stride * sizeof(float));
	for (int64_t i = 0; i < n_tok * y_stride; i++)
		y[i] = NAN;

	struct mm_job job = {wt, tr->vec_dot_type, x, xq, w, n_rows, n_cols, n_tok, y, y_stride};
	ml_pool_run(pool, quant_fn, &job);
	ml_pool_run(pool, mm_fn, &job);

	float *wd = malloc(n_rows * n_cols * sizeof(float));
	float *xd = malloc(n_tok * n_cols * sizeof(float));
	for (int64_t r = 0; r < n_rows; r++)
		tr->to_f32(w + r * wrow, wd + r * n_cols, n_cols);
	for (int64_t t = 0; t < n_tok; t++)
		vt->to_f32((char *)xq + t * xrow, xd + t * n_cols, n_cols);
	for (int64_t t = 0; t < n_tok; t++) {
		for (int64_t r = 0; r < n_rows; r++) {
			double ref = 0, mag = 0;
			for (int64_t c = 0; c < n_cols; c++) {
				double p = (double)wd[r * n_cols + c] * xd[t * n_cols + c];
				ref += p;
				mag += fabs(p);
			}
			float got = y[t * y_stride + r];
			const double tol = tr->vec_dot_type == ML_DTYPE_Q8_1 ? MATMUL_REL_TOL_Q8_1
									     : MATMUL_REL_TOL;
			if (!(fabs(got - ref) <= tol * mag + 1e-30))
				fail_msg("%s rows=%lld cols=%lld tok=%lld threads=%d: y[%lld][%lld]=%.9g ref %.9g",
					 ml_dtype_name(wt), (long long)n_rows, (long long)n_cols,
					 (long long)n_tok, ml_pool_size(pool), (long long)t, (long long)r,
					 got, ref);
		}
		for (int64_t r = n_rows; r < y_stride; r++)
			assert_true(isnan(y[t * y_stride + r])); /* padding untouched */
	}
	free(wf);
	free(x);
	free(w);
	free(xq);
	free(y);
	free(wd);
	free(xd);
}

static void test_matmul_all_types(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 5);
	const int64_t toks[] = {1, 2, 7, 70};
	const int64_t rows[] = {1, 37, 131};
	for (int nth = 1; nth <= 3; nth++) {
		struct ml_pool *pool;
		assert_int_equal(ml_pool_init(&pool, nth), 0);
		for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++)
			for (size_t a = 0; a < sizeof(toks) / sizeof(toks[0]); a++)
				for (size_t b = 0; b < sizeof(rows) / sizeof(rows[0]); b++) {
					/* keep the slow big case to a few types */
					if (toks[a] == 70 && rows[b] == 131 && nth != 2)
						continue;
					run_case(pool, TYPES[ti], rows[b], 512, toks[a], &rng);
				}
		ml_pool_free(pool);
	}
}

/* More threads than rows, and a large row count that spans several row
 * blocks of the tiled loop. */
static void test_matmul_shapes(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 6);
	struct ml_pool *pool;
	assert_int_equal(ml_pool_init(&pool, 3), 0);
	run_case(pool, ML_DTYPE_Q4_0, 2, 256, 5, &rng);
	run_case(pool, ML_DTYPE_Q8_0, 1001, 256, 33, &rng);
	run_case(pool, ML_DTYPE_Q6_K, 517, 768, 17, &rng);
	run_case(pool, ML_DTYPE_F16, 300, 256 + 32, 9, &rng);
	ml_pool_free(pool);
}

/* A token's outputs must not depend on the batch it is in (the 4-token
 * kernels do exactly the single-token arithmetic): bit-identical. */
static void test_matmul_batch_invariant(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 8);
	const int64_t n_rows = 45, n_cols = 512, n_tok = 11;
	for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++) {
		const enum ml_dtype wt = TYPES[ti];
		const struct kern_type_traits *tr = kern_type_traits(wt);
		float *wf = malloc(n_rows * n_cols * sizeof(float));
		float *x = malloc(n_tok * n_cols * sizeof(float));
		for (int64_t i = 0; i < n_rows * n_cols; i++)
			wf[i] = (float)(ml_rng_normal(&rng) * 0.05);
		for (int64_t i = 0; i < n_tok * n_cols; i++)
			x[i] = (float)ml_rng_normal(&rng);
		const size_t wrow = ml_dtype_row_size(wt, n_cols);
		const size_t xrow = ml_dtype_row_size(tr->vec_dot_type, n_cols);
		char *w = malloc(n_rows * wrow);
		for (int64_t r = 0; r < n_rows; r++)
			tr->from_f32(wf + r * n_cols, w + r * wrow, n_cols);
		char *xq = malloc(n_tok * xrow);
		kern_quantize_rows(tr->vec_dot_type, x, n_cols, xq, n_tok, n_cols, 0, 1);
		float *yb = malloc(n_tok * n_rows * sizeof(float));
		float *y1 = malloc(n_rows * sizeof(float));
		kern_matmul(wt, w, n_rows, n_cols, xq, n_tok, yb, n_rows, 0, 1);
		for (int64_t t = 0; t < n_tok; t++) {
			kern_matmul(wt, w, n_rows, n_cols, xq + t * xrow, 1, y1, n_rows, 0, 1);
			if (memcmp(y1, yb + t * n_rows, n_rows * sizeof(float)) != 0)
				fail_msg("%s: token %lld differs between batch and single", ml_dtype_name(wt),
					 (long long)t);
		}
		free(wf);
		free(x);
		free(w);
		free(xq);
		free(yb);
		free(y1);
	}
}

/* kern_quantize_rows honours x_stride and splits rows over threads exactly
 * like one thread converting all of them. */
static void test_quantize_rows_stride(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 9);
	const int64_t n_rows = 7, n_cols = 512, stride = 600;
	float *x = malloc(n_rows * stride * sizeof(float));
	for (int64_t i = 0; i < n_rows * stride; i++)
		x[i] = (float)ml_rng_normal(&rng);
	const enum ml_dtype vdts[] = {ML_DTYPE_F32, ML_DTYPE_F16, ML_DTYPE_BF16, ML_DTYPE_Q8_0,
				      ML_DTYPE_Q8_1, ML_DTYPE_Q8_K};
	for (size_t v = 0; v < sizeof(vdts) / sizeof(vdts[0]); v++) {
		const size_t rs = ml_dtype_row_size(vdts[v], n_cols);
		unsigned char *a = calloc(n_rows, rs), *b = calloc(n_rows, rs), *one = calloc(1, rs);
		kern_quantize_rows(vdts[v], x, stride, a, n_rows, n_cols, 0, 1);
		for (int ith = 0; ith < 3; ith++)
			kern_quantize_rows(vdts[v], x, stride, b, n_rows, n_cols, ith, 3);
		assert_memory_equal(a, b, n_rows * rs);
		for (int64_t r = 0; r < n_rows; r++) {
			kern_quantize_rows(vdts[v], x + r * stride, stride, one, 1, n_cols, 0, 1);
			assert_memory_equal(one, a + r * rs, rs);
		}
		free(a);
		free(b);
		free(one);
	}
	free(x);
}

int main(void)
{
	kern_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul_all_types),
		cmocka_unit_test(test_matmul_shapes),
		cmocka_unit_test(test_matmul_batch_invariant),
		cmocka_unit_test(test_quantize_rows_stride),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
