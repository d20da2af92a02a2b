/* Tests for the K-quant tile kernels (kern_tile_kq_avx2.c,
 * kern_tile_kq_avx512.c: Q4_K, Q5_K, Q6_K weights against Q8_K activations):
 * each ISA's tile against the generic vec_dot within
 * the matmul tolerance, bit-identity of every output across all tile shapes
 * (n_r, n_t) and positions, and bit-identity of kern_matmul across batch
 * sizes and thread counts. Weight rows are allocated to end exactly at the
 * buffer's end, so reads past the last row show under ASan. */
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

/* |tile - generic vec_dot| <= TILE_REL_TOL * sum_i |w_i x_i|: both use the
 * same quantized operands and exact integer block sums; only the float
 * summation order differs (as MATMUL_REL_TOL in test_kern_matmul.c). */
#define TILE_REL_TOL 1e-4

static const enum ml_dtype TILE_TYPES[] = {ML_DTYPE_Q4_K, ML_DTYPE_Q6_K, ML_DTYPE_Q5_K};

struct tile_case {
	enum ml_dtype wt;
	int64_t n_rows, n_cols, n_tok;
	size_t w_row, x_row;
	char *w;  /* n_rows * w_row bytes, exactly */
	char *xq; /* n_tok * x_row bytes */
};

static void case_init(struct tile_case *c, enum ml_dtype wt, int64_t n_rows, int64_t n_cols,
                      int64_t n_tok, struct ml_rng *rng)
{
	const struct kern_type_traits *tr = kern_type_traits(wt);
	c->wt = wt;
	c->n_rows = n_rows;
	c->n_cols = n_cols;
	c->n_tok = n_tok;
	c->w_row = ml_dtype_row_size(wt, n_cols);
	c->x_row = ml_dtype_row_size(ML_DTYPE_Q8_K, n_cols);
	float *f = malloc((n_rows > n_tok ? n_rows : n_tok) * n_cols * sizeof(float));
	c->w = malloc(n_rows * c->w_row);
	c->xq = malloc(n_tok * c->x_row);
	assert_non_null(f);
	for (int64_t i = 0; i < n_rows * n_cols; i++)
		f[i] = (float)(ml_rng_normal(rng) * 0.05);
	for (int64_t r = 0; r < n_rows; r++)
		tr->from_f32(f + r * n_cols, c->w + r * c->w_row, n_cols);
	for (int64_t i = 0; i < n_tok * n_cols; i++)
		f[i] = (float)ml_rng_normal(rng);
	kern_quantize_rows(ML_DTYPE_Q8_K, f, n_cols, c->xq, n_tok, n_cols, 0, 1);
	free(f);
}

static void case_free(struct tile_case *c)
{
	free(c->w);
	free(c->xq);
}

/* Overwrites |c| with the extremes the integer paths must hold without
 * int16 saturation or int32 overflow: every other weight super-block all
 * 0xFF bytes (largest quants, scales and mins; Q6_K scales -1), the others
 * random bytes (Q6_K scales down to -128); activation quants all +-127 with
 * random signs. Block scales are set to finite values. */
static void case_extreme(struct tile_case *c, struct ml_rng *rng)
{
	const size_t bsz = ml_dtype_row_size(c->wt, KERN_QK_K);
	const int64_t nb = c->n_cols / KERN_QK_K;
	for (int64_t r = 0; r < c->n_rows; r++)
		for (int64_t b = 0; b < nb; b++) {
			unsigned char *blk = (unsigned char *)c->w + r * c->w_row + b * bsz;
			for (size_t k = 0; k < bsz; k++)
				blk[k] = (r + b) % 2 ? 0xFF : (unsigned char)ml_rng_next(rng);
			const kern_f16 d = 0x2400, dmin = 0x2200; /* 2^-6, 2^-7 */
			if (c->wt == ML_DTYPE_Q6_K) {
				memcpy(blk + offsetof(struct kern_block_q6_K, d), &d, 2);
			} else {
				memcpy(blk, &d, 2);
				memcpy(blk + 2, &dmin, 2);
			}
		}
	for (int64_t t = 0; t < c->n_tok; t++)
		for (int64_t b = 0; b < nb; b++) {
			struct kern_block_q8_K *y =
			    (struct kern_block_q8_K *)(c->xq + t * c->x_row) + b;
			y->d = 0.01f;
			for (int g = 0; g < KERN_QK_K / 16; g++) {
				int sum = 0;
				for (int k = 0; k < 16; k++) {
					const int v = (t + b) % 3 == 0       ? 127
					              : ml_rng_next(rng) % 2 ? 127
					                                     : -127;
					y->qs[16 * g + k] = (int8_t)v;
					sum += v;
				}
				y->bsums[g] = (int16_t)sum;
			}
		}
}

/* The tiles of |isa| ("avx2" or "avx512") if this CPU runs them. */
static int tiles_of(const char *isa, struct kern_dispatch *d)
{
	const struct ml_cpu_features *cpu = ml_cpu_features();
	memset(d, 0, sizeof(*d));
	if (!(cpu->avx2 && cpu->fma && cpu->f16c))
		return 0;
	if (strcmp(isa, "avx2") == 0)
		return kern_tiles_kq_avx2(d);
	if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq && cpu->avx512vnni &&
	    cpu->avx512bf16)
		return kern_tiles_kq_avx512(d);
	return 0;
}

/* All rows x tokens of |c| through |tl| cut into tiles of n_r x n_t. */
static void run_tiles(const struct tile_case *c, struct kern_tile tl, int n_r, int n_t, float *y)
{
	for (int64_t t = 0; t < c->n_tok; t += n_t)
		for (int64_t r = 0; r < c->n_rows; r += n_r) {
			const int nr = (int)(c->n_rows - r < n_r ? c->n_rows - r : n_r);
			const int nt = (int)(c->n_tok - t < n_t ? c->n_tok - t : n_t);
			tl.fn(c->n_cols, c->w + r * c->w_row, c->w_row, nr, c->xq + t * c->x_row,
			      c->x_row, nt, y + t * c->n_rows + r, c->n_rows);
		}
}

/* Full tiles against the generic vec_dot, then every tile shape bit for bit
 * against the full tiles. */
static void check_isa(const char *isa)
{
	struct kern_dispatch d;
	if (tiles_of(isa, &d) == 0) {
		skip();
		return;
	}
	struct ml_rng rng;
	ml_rng_seed(&rng, 51);
	/* one super-block, a few, a 2048-wide row; negative: extreme values */
	const int64_t cols[] = {256, 768, 2048, -1024};
	for (size_t ti = 0; ti < sizeof(TILE_TYPES) / sizeof(TILE_TYPES[0]); ti++) {
		const enum ml_dtype wt = TILE_TYPES[ti];
		const struct kern_tile tl = d.tile[wt];
		assert_non_null(tl.fn);
		assert_true(tl.r >= 1 && tl.t >= 1);
		const struct kern_type_traits *gen = kern_type_traits_generic(wt);
		for (size_t ci = 0; ci < sizeof(cols) / sizeof(cols[0]); ci++) {
			struct tile_case c;
			case_init(&c, wt, 2 * tl.r + 3, llabs(cols[ci]), 2 * tl.t + 1, &rng);
			if (cols[ci] < 0)
				case_extreme(&c, &rng);
			const int64_t n_out = c.n_rows * c.n_tok;
			float *full = malloc(n_out * sizeof(float));
			float *part = malloc(n_out * sizeof(float));
			float *wd = malloc(c.n_cols * sizeof(float));
			float *xd = malloc(c.n_cols * sizeof(float));
			run_tiles(&c, tl, tl.r, tl.t, full);
			for (int64_t t = 0; t < c.n_tok; t++)
				for (int64_t r = 0; r < c.n_rows; r++) {
					float ref;
					gen->vec_dot(c.n_cols, &ref, c.w + r * c.w_row,
					             c.xq + t * c.x_row);
					gen->to_f32(c.w + r * c.w_row, wd, c.n_cols);
					kern_type_traits_generic(ML_DTYPE_Q8_K)
					    ->to_f32(c.xq + t * c.x_row, xd, c.n_cols);
					double mag = 0;
					for (int64_t i = 0; i < c.n_cols; i++)
						mag += fabs((double)wd[i] * xd[i]);
					const float got = full[t * c.n_rows + r];
					if (!(fabs((double)got - ref) <=
					      TILE_REL_TOL * mag + 1e-30))
						fail_msg("%s %s cols=%lld: y[%lld][%lld]=%.9g "
						         "generic %.9g",
						         isa, ml_dtype_name(wt),
						         (long long)c.n_cols, (long long)t,
						         (long long)r, got, ref);
				}
			for (int nr = 1; nr <= tl.r; nr++)
				for (int nt = 1; nt <= tl.t; nt++) {
					for (int64_t i = 0; i < n_out; i++)
						part[i] = NAN;
					run_tiles(&c, tl, nr, nt, part);
					if (memcmp(part, full, n_out * sizeof(float)) != 0)
						fail_msg("%s %s cols=%lld: tile %dx%d differs from "
						         "%dx%d",
						         isa, ml_dtype_name(wt),
						         (long long)c.n_cols, nr, nt, tl.r, tl.t);
				}
			free(full);
			free(part);
			free(wd);
			free(xd);
			case_free(&c);
		}
	}
}

static void test_tile_kq_avx2(void **state)
{
	(void)state;
	check_isa("avx2");
}

static void test_tile_kq_avx512(void **state)
{
	(void)state;
	check_isa("avx512");
}

struct mm_job {
	const struct tile_case *c;
	int64_t n_tok;
	const char *xq;
	float *y;
};

static void mm_fn(void *arg, int ith, int nth)
{
	struct mm_job *j = arg;
	kern_matmul(j->c->wt, j->c->w, j->c->n_rows, j->c->n_cols, j->xq, j->n_tok, j->y,
	            j->c->n_rows, ith, nth);
}

/* kern_matmul with the dispatched tile: every token's outputs are the same
 * bits for any batch size, batch offset and thread count, and equal the
 * tile kernel called on that token alone. */
static void test_tile_kq_matmul_invariant(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 52);
	const int64_t batches[] = {1, 3, 8, 13, 40};
	for (size_t ti = 0; ti < sizeof(TILE_TYPES) / sizeof(TILE_TYPES[0]); ti++) {
		const enum ml_dtype wt = TILE_TYPES[ti];
		struct tile_case c;
		case_init(&c, wt, 301, 768, 40, &rng);
		float *ref = malloc(c.n_rows * c.n_tok * sizeof(float));
		float *y = malloc(c.n_rows * c.n_tok * sizeof(float));
		const struct kern_tile tl = kern_tile_of(wt);
		for (int64_t t = 0; t < c.n_tok; t++) {
			if (tl.fn != NULL) {
				struct tile_case one = c;
				one.xq = c.xq + t * c.x_row;
				one.n_tok = 1;
				run_tiles(&one, tl, tl.r, 1, ref + t * c.n_rows);
			} else {
				kern_matmul(wt, c.w, c.n_rows, c.n_cols, c.xq + t * c.x_row, 1,
				            ref + t * c.n_rows, c.n_rows, 0, 1);
			}
		}
		for (int nth = 1; nth <= 3; nth++) {
			struct ml_pool *pool;
			assert_int_equal(ml_pool_init(&pool, nth), 0);
			for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++)
				for (int64_t t0 = 0; t0 < c.n_tok; t0 += batches[bi]) {
					const int64_t nb =
					    c.n_tok - t0 < batches[bi] ? c.n_tok - t0 : batches[bi];
					struct mm_job job = {&c, nb, c.xq + t0 * c.x_row, y};
					ml_pool_run(pool, mm_fn, &job);
					if (memcmp(y, ref + t0 * c.n_rows,
					           nb * c.n_rows * sizeof(float)) != 0)
						fail_msg("%s: tokens %lld..%lld differ (batch "
						         "%lld, %d threads)",
						         ml_dtype_name(wt), (long long)t0,
						         (long long)(t0 + nb - 1),
						         (long long)batches[bi], nth);
				}
			ml_pool_free(pool);
		}
		free(ref);
		free(y);
		case_free(&c);
	}
}

int main(void)
{
	kern_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tile_kq_avx2),
	    cmocka_unit_test(test_tile_kq_avx512),
	    cmocka_unit_test(test_tile_kq_matmul_invariant),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
