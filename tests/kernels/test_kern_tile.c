/* Tests for the tile kernels (struct kern_tile in kern_impl.h) of every type
 * family and ISA: kern_tile_q8_* (Q8_0, Q4_0 against Q8_0 activations),
 * kern_tile_kq_* (Q4_K, Q5_K, Q6_K against Q8_K) and kern_tile_f16_* (F32,
 * F16, BF16 against their own type), each in _avx2 and _avx512. One
 * harness, driven by a table per family (FAMILY_Q8, FAMILY_KQ, FAMILY_F16),
 * checks for each ISA this CPU runs:
 *
 *   - the registration function sets a tile for each of the family's types;
 *   - full tiles over a matrix whose rows and tokens are not multiples of the
 *     tile (edge tiles of many sizes) agree within TILE_REL_TOL with the
 *     generic vec_dot and with a double-precision dot of the same operands,
 *     and so does the generic vec_dot itself;
 *   - every tile shape n_r x n_t (for the Q8_0/Q4_0 tiles, up to 64 x 32,
 *     the shapes at small counts and on both sides of each power of two)
 *     gives the same bits for every output as the full tiles;
 *   - one tile of each shape writes its n_r x n_t outputs at y_stride, the
 *     same bits again, and nothing else;
 *   - K-quants: the same with extreme weights and activations (case_extreme).
 *
 * and, through kern_matmul() with the dispatched tiles, that each token's
 * outputs are the same bits alone (equal to the tile called on that token),
 * in batches of 1, 2, 3, 5, 8, 13 and all tokens starting anywhere, and with
 * 1..3 threads. Weight rows are allocated to end exactly at the buffer's
 * end, so reads past the last row show under ASan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_cpu.h"
#include "base/ml_dtype.h"
#include "base/ml_pool.h"
#include "base/ml_rng.h"
#include "kernels/kern_impl.h"

/* |tile - generic vec_dot| <= TILE_REL_TOL * sum_i |w_i x_i| (and both
 * against a double dot): they use the same converted operands and, for the
 * quantized types, exact integer block sums; only the float summation order
 * differs (as MATMUL_REL_TOL in test_kern_matmul.c). */
#define TILE_REL_TOL 1e-4

/* A family of tile kernels (kern_tile_<family>_<isa>.c) and the
 * matrices that exercise it. */
struct tile_family {
	enum ml_dtype types[3]; /* weight types; activations are their vec_dot_type */
	int n_types;
	int (*tiles_avx2)(struct kern_dispatch *d);
	int (*tiles_avx512)(struct kern_dispatch *d);
	uint64_t seed;         /* per-ISA checks (the same data for each ISA) */
	int64_t cols[10];      /* column counts of the per-ISA checks, 0-terminated */
	int64_t extreme_cols;  /* then one extreme-value case this wide (0: none) */
	int row_pad;           /* per-ISA checks use 2 * r + row_pad rows, 2 * t + 1 tokens */
	bool edge_shapes_only; /* tiles too large to try every shape: see count_worth */
	uint64_t mm_seed;      /* kern_matmul check: its seed and matrix */
	int64_t mm_rows, mm_cols, mm_tok;
};

static const struct tile_family FAMILY_Q8 = {
    .types = {ML_DTYPE_Q8_0, ML_DTYPE_Q4_0},
    .n_types = 2,
    .tiles_avx2 = kern_tiles_q8_avx2,
    .tiles_avx512 = kern_tiles_q8_avx512,
    .seed = 41,
    /* 2144 columns: 67 blocks, more than one chunk of the AVX-512 tables */
    .cols = {32, 256, 2144},
    .row_pad = 3,
    .edge_shapes_only = true,
    .mm_seed = 42,
    .mm_rows = 301,
    .mm_cols = 512,
    .mm_tok = 40,
};

static const struct tile_family FAMILY_KQ = {
    .types = {ML_DTYPE_Q4_K, ML_DTYPE_Q6_K, ML_DTYPE_Q5_K},
    .n_types = 3,
    .tiles_avx2 = kern_tiles_kq_avx2,
    .tiles_avx512 = kern_tiles_kq_avx512,
    .seed = 51,
    /* one super-block, a few, a 2048-wide row */
    .cols = {256, 768, 2048},
    .extreme_cols = 1024,
    .row_pad = 3,
    .mm_seed = 52,
    .mm_rows = 301,
    .mm_cols = 768,
    .mm_tok = 40,
};

static const struct tile_family FAMILY_F16 = {
    .types = {ML_DTYPE_F32, ML_DTYPE_F16, ML_DTYPE_BF16},
    .n_types = 3,
    .tiles_avx2 = kern_tiles_f16_avx2,
    .tiles_avx512 = kern_tiles_f16_avx512,
    .seed = 21,
    /* below one vector, exact multiples, ragged tails, more than one
     * 512-column chunk, model rows */
    .cols = {1, 5, 8, 16, 37, 64, 250, 512 + 7, 2048},
    .row_pad = 1,
    .mm_seed = 23,
    .mm_rows = 203,
    .mm_cols = 2048 + 24,
    .mm_tok = 37,
};

/* Random operands of one weight type: weights ~ N(0, 0.05), activations
 * ~ N(0, 1) converted as kern_quantize_rows() does. */
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
	c->x_row = ml_dtype_row_size(tr->vec_dot_type, n_cols);
	float *f = malloc((n_rows > n_tok ? n_rows : n_tok) * n_cols * sizeof(float));
	c->w = malloc(n_rows * c->w_row);
	c->xq = malloc(n_tok * c->x_row);
	assert_true(f != NULL && c->w != NULL && c->xq != NULL);
	for (int64_t i = 0; i < n_rows * n_cols; i++)
		f[i] = (float)(ml_rng_normal(rng) * 0.05);
	for (int64_t r = 0; r < n_rows; r++)
		tr->from_f32(f + r * n_cols, c->w + r * c->w_row, n_cols);
	for (int64_t i = 0; i < n_tok * n_cols; i++)
		f[i] = (float)ml_rng_normal(rng);
	kern_quantize_rows(tr->vec_dot_type, f, n_cols, c->xq, n_tok, n_cols, 0, 1);
	free(f);
}

static void case_free(struct tile_case *c)
{
	free(c->w);
	free(c->xq);
}

/* Overwrites K-quant case |c| with the extremes the integer paths must hold
 * without int16 saturation or int32 overflow: every other weight
 * super-block all 0xFF bytes (largest quants, scales and mins; Q6_K scales
 * -1), the others random bytes (Q6_K scales down to -128); activation quants
 * all +-127 with random signs. Block scales are set to finite values. */
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

/* Fills |d| with family |f|'s tiles for AVX-512 (|avx512|) or AVX2 and
 * returns how many it set; 0 if this CPU does not run them. */
static int tiles_of(const struct tile_family *f, bool avx512, struct kern_dispatch *d)
{
	const struct ml_cpu_features *cpu = ml_cpu_features();
	memset(d, 0, sizeof(*d));
	if (!(cpu->avx2 && cpu->fma && cpu->f16c))
		return 0;
	if (!avx512)
		return f->tiles_avx2(d);
	if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq && cpu->avx512vnni &&
	    cpu->avx512bf16)
		return f->tiles_avx512(d);
	return 0;
}

/* y[t * n_rows + r] for all rows x tokens of |c|, cutting the matrix into
 * tiles of n_r x n_t (smaller at the edges). */
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

/* Counts worth a shape pass when a family's tiles are too large to try them
 * all: small ones and both sides of each power of two (where the kernels
 * switch specializations or row groups). A shape is tried when both its
 * counts are among these. */
static int count_worth(int k)
{
	if (k <= 4)
		return 1;
	for (int p = 8; p <= 1024; p *= 2)
		if (k >= p - 1 && k <= p + 1)
			return 1;
	return 0;
}

/* Every output |y| of case |c| within tolerance of the generic vec_dot and
 * of a double dot of the dequantized operands; the generic vec_dot within
 * tolerance of the double dot too (checks the reference itself). */
static void check_tolerance(const char *isa, const struct tile_case *c, const float *y)
{
	const struct kern_type_traits *gen = kern_type_traits_generic(c->wt);
	const struct kern_type_traits *xgen = kern_type_traits_generic(gen->vec_dot_type);
	float *wd = malloc(c->n_rows * c->n_cols * sizeof(float));
	float *xd = malloc(c->n_cols * sizeof(float));
	assert_true(wd != NULL && xd != NULL);
	for (int64_t r = 0; r < c->n_rows; r++)
		gen->to_f32(c->w + r * c->w_row, wd + r * c->n_cols, c->n_cols);
	for (int64_t t = 0; t < c->n_tok; t++) {
		xgen->to_f32(c->xq + t * c->x_row, xd, c->n_cols);
		for (int64_t r = 0; r < c->n_rows; r++) {
			const float *wr = wd + r * c->n_cols;
			double ref = 0, mag = 0;
			for (int64_t i = 0; i < c->n_cols; i++) {
				const double p = (double)wr[i] * xd[i];
				ref += p;
				mag += fabs(p);
			}
			const double tol = TILE_REL_TOL * mag + 1e-30;
			float ref_gen;
			gen->vec_dot(c->n_cols, &ref_gen, c->w + r * c->w_row,
			             c->xq + t * c->x_row);
			const float got = y[t * c->n_rows + r];
			if (!(fabs((double)got - ref_gen) <= tol) ||
			    !(fabs((double)got - ref) <= tol) ||
			    !(fabs((double)ref_gen - ref) <= tol))
				fail_msg(
				    "%s %s cols=%lld: y[%lld][%lld]=%.9g generic %.9g double %.9g",
				    isa, ml_dtype_name(c->wt), (long long)c->n_cols, (long long)t,
				    (long long)r, got, ref_gen, ref);
		}
	}
	free(wd);
	free(xd);
}

/* One n_r x n_t tile at the origin of |c| writes its outputs, the bits of
 * the full tiles |full|, at its y_stride into |one| (tl.t x stride floats)
 * and nothing else. */
static void check_one_tile(const char *isa, const struct tile_case *c, struct kern_tile tl, int n_r,
                           int n_t, const float *full, float *one, int64_t stride)
{
	for (int64_t i = 0; i < tl.t * stride; i++)
		one[i] = NAN;
	tl.fn(c->n_cols, c->w, c->w_row, n_r, c->xq, c->x_row, n_t, one, stride);
	for (int64_t t = 0; t < tl.t; t++)
		for (int64_t r = 0; r < stride; r++) {
			const float *got = &one[t * stride + r], *want = &full[t * c->n_rows + r];
			const bool mine = t < n_t && r < n_r;
			if (mine ? memcmp(got, want, sizeof(float)) != 0 : !isnan(*got))
				fail_msg("%s %s cols=%lld: one %dx%d tile wrote y[%lld][%lld]=%.9g "
				         "(full tiles %.9g)",
				         isa, ml_dtype_name(c->wt), (long long)c->n_cols, n_r, n_t,
				         (long long)t, (long long)r, *got, mine ? *want : NAN);
		}
}

/* Each tile shape n_r x n_t over all of |c| gives the bits of the full
 * tiles |full|, and so does one tile of that shape (check_one_tile). */
static void check_shapes(const char *isa, const struct tile_case *c, struct kern_tile tl,
                         bool edge_shapes_only, const float *full)
{
	const int64_t n_out = c->n_rows * c->n_tok;
	const int64_t stride = tl.r + 5; /* a gap after each token's outputs */
	float *part = malloc(n_out * sizeof(float));
	float *one = malloc(tl.t * stride * sizeof(float));
	assert_true(part != NULL && one != NULL);
	for (int nr = 1; nr <= tl.r; nr++)
		for (int nt = 1; nt <= tl.t; nt++) {
			if (edge_shapes_only && !(count_worth(nr) && count_worth(nt)))
				continue;
			for (int64_t i = 0; i < n_out; i++)
				part[i] = NAN;
			run_tiles(c, tl, nr, nt, part);
			if (memcmp(part, full, n_out * sizeof(float)) != 0)
				fail_msg("%s %s cols=%lld: tiles %dx%d differ from %dx%d", isa,
				         ml_dtype_name(c->wt), (long long)c->n_cols, nr, nt, tl.r,
				         tl.t);
			check_one_tile(isa, c, tl, nr, nt, full, one, stride);
		}
	free(part);
	free(one);
}

/* All checks of one ISA on one case. */
static void check_case(const char *isa, const struct tile_case *c, struct kern_tile tl,
                       bool edge_shapes_only)
{
	float *full = malloc(c->n_rows * c->n_tok * sizeof(float));
	assert_non_null(full);
	run_tiles(c, tl, tl.r, tl.t, full);
	check_tolerance(isa, c, full);
	check_shapes(isa, c, tl, edge_shapes_only, full);
	free(full);
}

/* All checks of family |f|'s tiles for one ISA (skipped where this CPU does
 * not run them), on the same data for either ISA. */
static void check_isa(const struct tile_family *f, bool avx512)
{
	const char *isa = avx512 ? "avx512" : "avx2";
	struct kern_dispatch *d = malloc(sizeof(*d));
	assert_non_null(d);
	const int n_set = tiles_of(f, avx512, d);
	if (n_set == 0) {
		free(d);
		skip();
		return;
	}
	assert_int_equal(n_set, f->n_types);
	struct ml_rng rng;
	ml_rng_seed(&rng, f->seed);
	for (int ti = 0; ti < f->n_types; ti++) {
		const enum ml_dtype wt = f->types[ti];
		const struct kern_tile tl = d->tile[wt];
		assert_non_null(tl.fn);
		assert_true(tl.r >= 1 && tl.t >= 1);
		for (const int64_t *n_cols = f->cols; *n_cols != 0; n_cols++) {
			struct tile_case c;
			case_init(&c, wt, 2 * tl.r + f->row_pad, *n_cols, 2 * tl.t + 1, &rng);
			check_case(isa, &c, tl, f->edge_shapes_only);
			case_free(&c);
		}
		if (f->extreme_cols != 0) {
			struct tile_case c;
			case_init(&c, wt, 2 * tl.r + f->row_pad, f->extreme_cols, 2 * tl.t + 1,
			          &rng);
			case_extreme(&c, &rng);
			check_case(isa, &c, tl, f->edge_shapes_only);
			case_free(&c);
		}
	}
	free(d);
}

static void test_tiles_avx2(void **state)
{
	check_isa(*state, false);
}

static void test_tiles_avx512(void **state)
{
	check_isa(*state, true);
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

/* kern_matmul with the dispatched tiles: every token's outputs are the same
 * bits for any batch size, batch offset and thread count (which cut rows
 * and tokens into different tiles), and equal the tile kernel called on
 * that token alone. */
static void test_matmul_invariant(void **state)
{
	const struct tile_family *f = *state;
	struct ml_rng rng;
	ml_rng_seed(&rng, f->mm_seed);
	for (int ti = 0; ti < f->n_types; ti++) {
		const enum ml_dtype wt = f->types[ti];
		struct tile_case c;
		case_init(&c, wt, f->mm_rows, f->mm_cols, f->mm_tok, &rng);
		const int64_t n_out = c.n_rows * c.n_tok;
		float *ref = malloc(n_out * sizeof(float));
		float *y = malloc(n_out * sizeof(float));
		assert_true(ref != NULL && y != NULL);
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
		const int64_t batches[] = {1, 2, 3, 5, 8, 13, c.n_tok};
		for (int nth = 1; nth <= 3; nth++) {
			struct ml_pool *pool;
			assert_int_equal(ml_pool_init(&pool, nth), 0);
			for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
				const int64_t b = batches[bi];
				for (int64_t i = 0; i < n_out; i++)
					y[i] = NAN;
				for (int64_t t0 = 0; t0 < c.n_tok; t0 += b) {
					const int64_t nb = c.n_tok - t0 < b ? c.n_tok - t0 : b;
					struct mm_job job = {&c, nb, c.xq + t0 * c.x_row,
					                     y + t0 * c.n_rows};
					ml_pool_run(pool, mm_fn, &job);
				}
				for (int64_t t = 0; t < c.n_tok; t++)
					if (memcmp(y + t * c.n_rows, ref + t * c.n_rows,
					           c.n_rows * sizeof(float)) != 0)
						fail_msg(
						    "%s: token %lld differs from it alone (batches "
						    "of %lld, %d threads)",
						    ml_dtype_name(wt), (long long)t, (long long)b,
						    nth);
			}
			ml_pool_free(pool);
		}
		free(ref);
		free(y);
		case_free(&c);
	}
}

/* Test |fn| of family |f|, which it gets as its state. */
static struct CMUnitTest family_test(const char *name, CMUnitTestFunction fn,
                                     const struct tile_family *f)
{
	return (struct CMUnitTest){.name = name, .test_func = fn, .initial_state = (void *)f};
}

int main(void)
{
	kern_init();
	const struct CMUnitTest tests[] = {
	    family_test("test_tile_q8_avx2", test_tiles_avx2, &FAMILY_Q8),
	    family_test("test_tile_q8_avx512", test_tiles_avx512, &FAMILY_Q8),
	    family_test("test_tile_q8_matmul_invariant", test_matmul_invariant, &FAMILY_Q8),
	    family_test("test_tile_kq_avx2", test_tiles_avx2, &FAMILY_KQ),
	    family_test("test_tile_kq_avx512", test_tiles_avx512, &FAMILY_KQ),
	    family_test("test_tile_kq_matmul_invariant", test_matmul_invariant, &FAMILY_KQ),
	    family_test("test_tile_f16_avx2", test_tiles_avx2, &FAMILY_F16),
	    family_test("test_tile_f16_avx512", test_tiles_avx512, &FAMILY_F16),
	    family_test("test_tile_f16_matmul_invariant", test_matmul_invariant, &FAMILY_F16),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
