/* Tests for the F32/F16/BF16 tile kernels (kern_tile_f16_avx2.c,
 * kern_tile_f16_avx512.c): each ISA's kernels that this CPU can run, called
 * directly, against the generic vec_dot within MATMUL_REL_TOL; every tile
 * shape gives the same bits for the same output; and kern_matmul() gives a
 * token the same bits whatever batch and thread count it is computed in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_cpu.h"
#include "base/ml_dtype.h"
#include "base/ml_pool.h"
#include "base/ml_rng.h"
#include "kernels/kern_impl.h"

/* |tile - reference| <= MATMUL_REL_TOL * sum_i |w_i x_i|, as in
 * test_kern_matmul.c: only the float summation order differs. */
#define MATMUL_REL_TOL 1e-4

static const enum ml_dtype TYPES[] = {ML_DTYPE_F32, ML_DTYPE_F16, ML_DTYPE_BF16};

/* Column counts: below one vector, exact multiples, ragged tails, model rows. */
static const int64_t COLS[] = {1, 5, 8, 16, 37, 64, 250, 512 + 7, 2048};

struct isa {
	const char *name;
	int (*tiles)(struct kern_dispatch *d);
	int usable;
};

static void isa_list(struct isa out[2])
{
	const struct ml_cpu_features *c = ml_cpu_features();
	const int avx2 = c->avx2 && c->fma && c->f16c;
	out[0] = (struct isa){"avx2", kern_tiles_f16_avx2, avx2};
	out[1] = (struct isa){"avx512", kern_tiles_f16_avx512,
			      avx2 && c->avx512f && c->avx512bw && c->avx512vl && c->avx512dq &&
				      c->avx512vnni && c->avx512bf16};
}

/* Random operands: |n_rows| weight rows of type |wt| and |n_tok| activation
 * rows of its vec-dot type (converted with the generic converters). */
struct operands {
	enum ml_dtype wt;
	int64_t n_rows, n_cols, n_tok;
	size_t w_row, x_row;
	char *w, *x;
};

static void operands_init(struct operands *o, enum ml_dtype wt, int64_t n_rows, int64_t n_cols,
			  int64_t n_tok, struct ml_rng *rng)
{
	const struct kern_type_traits *tr = kern_type_traits_generic(wt);
	const struct kern_type_traits *vt = kern_type_traits_generic(tr->vec_dot_type);
	o->wt = wt;
	o->n_rows = n_rows;
	o->n_cols = n_cols;
	o->n_tok = n_tok;
	o->w_row = ml_dtype_row_size(wt, n_cols);
	o->x_row = ml_dtype_row_size(tr->vec_dot_type, n_cols);
	o->w = malloc(n_rows * o->w_row);
	o->x = malloc(n_tok * o->x_row);
	float *f = malloc(n_cols * sizeof(float));
	for (int64_t r = 0; r < n_rows; r++) {
		for (int64_t c = 0; c < n_cols; c++)
			f[c] = (float)(ml_rng_normal(rng) * 0.05);
		tr->from_f32(f, o->w + r * o->w_row, n_cols);
	}
	for (int64_t t = 0; t < n_tok; t++) {
		for (int64_t c = 0; c < n_cols; c++)
			f[c] = (float)ml_rng_normal(rng);
		vt->from_f32(f, o->x + t * o->x_row, n_cols);
	}
	free(f);
}

static void operands_free(struct operands *o)
{
	free(o->w);
	free(o->x);
}

/* y[t * n_rows + r] for all outputs, cutting the matrix into tiles of
 * n_r x n_t (smaller at the edges). */
static void tile_all(struct kern_tile tl, const struct operands *o, int n_r, int n_t, float *y)
{
	for (int64_t t = 0; t < o->n_tok; t += n_t)
		for (int64_t r = 0; r < o->n_rows; r += n_r) {
			const int nr = (int)(o->n_rows - r < n_r ? o->n_rows - r : n_r);
			const int nt = (int)(o->n_tok - t < n_t ? o->n_tok - t : n_t);
			tl.fn(o->n_cols, o->w + r * o->w_row, o->w_row, nr, o->x + t * o->x_row, o->x_row,
			      nt, y + t * o->n_rows + r, o->n_rows);
		}
}

/* Every output within tolerance of a double-precision dot of the same
 * operands, and the generic vec_dot too (checks the reference itself). */
static void check_tolerance(const char *isa, const struct operands *o, const float *y)
{
	const struct kern_type_traits *tr = kern_type_traits_generic(o->wt);
	const struct kern_type_traits *vt = kern_type_traits_generic(tr->vec_dot_type);
	float *wd = malloc(o->n_cols * sizeof(float)), *xd = malloc(o->n_cols * sizeof(float));
	for (int64_t t = 0; t < o->n_tok; t++) {
		vt->to_f32(o->x + t * o->x_row, xd, o->n_cols);
		for (int64_t r = 0; r < o->n_rows; r++) {
			tr->to_f32(o->w + r * o->w_row, wd, o->n_cols);
			double ref = 0, mag = 0;
			for (int64_t c = 0; c < o->n_cols; c++) {
				const double p = (double)wd[c] * xd[c];
				ref += p;
				mag += fabs(p);
			}
			float gen;
			tr->vec_dot(o->n_cols, &gen, o->w + r * o->w_row, o->x + t * o->x_row);
			const float got = y[t * o->n_rows + r];
			if (!(fabs(got - ref) <= MATMUL_REL_TOL * mag + 1e-30) ||
			    !(fabs(gen - ref) <= MATMUL_REL_TOL * mag + 1e-30))
				fail_msg("%s %s cols=%lld: y[%lld][%lld]=%.9g generic %.9g ref %.9g", isa,
					 ml_dtype_name(o->wt), (long long)o->n_cols, (long long)t,
					 (long long)r, got, gen, ref);
		}
	}
	free(wd);
	free(xd);
}

static void test_tile_vs_generic_and_shapes(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 21);
	struct isa isas[2];
	isa_list(isas);
	for (int k = 0; k < 2; k++) {
		if (!isas[k].usable)
			continue;
		struct kern_dispatch *d = calloc(1, sizeof(*d));
		assert_int_equal(isas[k].tiles(d), 3);
		for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++) {
			const struct kern_tile tl = d->tile[TYPES[ti]];
			assert_non_null(tl.fn);
			assert_true(tl.r >= 1 && tl.t >= 1);
			for (size_t ci = 0; ci < sizeof(COLS) / sizeof(COLS[0]); ci++) {
				/* rows and tokens not multiples of the tile: edge tiles of every size */
				struct operands o;
				operands_init(&o, TYPES[ti], 2 * tl.r + 1, COLS[ci], 2 * tl.t + 1, &rng);
				const size_t ny = o.n_rows * o.n_tok;
				float *y = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float));
				tile_all(tl, &o, tl.r, tl.t, y);
				check_tolerance(isas[k].name, &o, y);
				for (int nr = 1; nr <= tl.r; nr++)
					for (int nt = 1; nt <= tl.t; nt++) {
						for (size_t i = 0; i < ny; i++)
							y2[i] = NAN;
						tile_all(tl, &o, nr, nt, y2);
						if (memcmp(y, y2, ny * sizeof(float)) != 0)
							fail_msg("%s %s cols=%lld: tiles %dx%d differ from %dx%d",
								 isas[k].name, ml_dtype_name(TYPES[ti]),
								 (long long)COLS[ci], nr, nt, tl.r, tl.t);
					}
				free(y);
				free(y2);
				operands_free(&o);
			}
		}
		free(d);
	}
}

/* A tile writes its n_r x n_t outputs at y_stride and nothing else. */
static void test_tile_writes_only_its_outputs(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 22);
	struct isa isas[2];
	isa_list(isas);
	for (int k = 0; k < 2; k++) {
		if (!isas[k].usable)
			continue;
		struct kern_dispatch *d = calloc(1, sizeof(*d));
		isas[k].tiles(d);
		const struct kern_tile tl = d->tile[ML_DTYPE_F16];
		struct operands o;
		operands_init(&o, ML_DTYPE_F16, tl.r, 100, tl.t, &rng);
		const int64_t stride = tl.r + 5;
		float *y = malloc(tl.t * stride * sizeof(float));
		for (int nr = 1; nr <= tl.r; nr++)
			for (int nt = 1; nt <= tl.t; nt++) {
				for (int64_t i = 0; i < tl.t * stride; i++)
					y[i] = NAN;
				tl.fn(o.n_cols, o.w, o.w_row, nr, o.x, o.x_row, nt, y, stride);
				for (int64_t t = 0; t < tl.t; t++)
					for (int64_t r = 0; r < stride; r++)
						assert_true(isnan(y[t * stride + r]) == (t >= nt || r >= nr));
			}
		free(y);
		operands_free(&o);
		free(d);
	}
}

struct mm_job {
	enum ml_dtype wt;
	const struct operands *o;
	const char *x;
	int64_t n_tok;
	float *y;
};

static void mm_fn(void *arg, int ith, int nth)
{
	struct mm_job *j = arg;
	kern_matmul(j->wt, j->o->w, j->o->n_rows, j->o->n_cols, j->x, j->n_tok, j->y, j->o->n_rows,
		    ith, nth);
}

/* Through kern_matmul (the dispatched tiles): a token's outputs are the
 * same bits alone, in batches of any size starting anywhere, and with 1..3
 * threads (which cut rows into different tiles). */
static void test_matmul_batch_and_thread_invariant(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 23);
	const int64_t n_rows = 203, n_cols = 2048 + 24, n_tok = 37;
	for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++) {
		struct operands o;
		operands_init(&o, TYPES[ti], n_rows, n_cols, n_tok, &rng);
		float *ref = malloc(n_tok * n_rows * sizeof(float));
		float *y = malloc(n_tok * n_rows * sizeof(float));
		for (int64_t t = 0; t < n_tok; t++)
			kern_matmul(o.wt, o.w, n_rows, n_cols, o.x + t * o.x_row, 1, ref + t * n_rows,
				    n_rows, 0, 1);
		for (int nth = 1; nth <= 3; nth++) {
			struct ml_pool *pool;
			assert_int_equal(ml_pool_init(&pool, nth), 0);
			const int64_t batches[] = {n_tok, 2, 5, 13};
			for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
				for (int64_t i = 0; i < n_tok * n_rows; i++)
					y[i] = NAN;
				for (int64_t t0 = 0; t0 < n_tok; t0 += batches[b]) {
					const int64_t nt = n_tok - t0 < batches[b] ? n_tok - t0 : batches[b];
					struct mm_job job = {o.wt, &o, o.x + t0 * o.x_row, nt,
							     y + t0 * n_rows};
					ml_pool_run(pool, mm_fn, &job);
				}
				if (memcmp(ref, y, n_tok * n_rows * sizeof(float)) != 0)
					fail_msg("%s: batches of %lld, %d threads differ from one token at a time",
						 ml_dtype_name(o.wt), (long long)batches[b], nth);
			}
			ml_pool_free(pool);
		}
		free(ref);
		free(y);
		operands_free(&o);
	}
}

int main(void)
{
	kern_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tile_vs_generic_and_shapes),
		cmocka_unit_test(test_tile_writes_only_its_outputs),
		cmocka_unit_test(test_matmul_batch_and_thread_invariant),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
