/* Kernel benchmark, per weight type:
 *  - dot: one row of 4096 in L1, repeated: generic vs dispatched vec_dot;
 *  - matvec: a 16384x4096 matrix streamed from memory (huge pages, as
 *    resident weights), 1 token: the generic vec_dot row by row vs
 *    kern_matmul (tile kernels + prefetch) on 1 thread, then on N threads;
 *  - matmul: 64 tokens against a 4096x4096 matrix through kern_matmul on
 *    1 and N threads, in GFLOP/s, with the generic kernel's 1-thread figure
 *    for the speedup.
 * GB/s count weight bytes. Warm-up, then repeats; median [min..max].
 *
 *   build/bench-kernels [--quick] [--threads N] [--type NAME]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/ml_cpu.h"
#include "base/ml_dtype.h"
#include "base/ml_pool.h"
#include "base/ml_rng.h"
#include "base/ml_time.h"
#include "kernels/kern.h"

#define N_REPS 7

static const enum ml_dtype TYPES[] = {
	ML_DTYPE_F32,  ML_DTYPE_F16,  ML_DTYPE_BF16, ML_DTYPE_Q8_0, ML_DTYPE_Q4_0,
	ML_DTYPE_Q4_1, ML_DTYPE_Q5_0, ML_DTYPE_Q5_1, ML_DTYPE_Q2_K, ML_DTYPE_Q3_K,
	ML_DTYPE_Q4_K, ML_DTYPE_Q5_K, ML_DTYPE_Q6_K,
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct stats {
	double med, lo, hi;
};

static struct stats summarize(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return (struct stats){v[n / 2], v[0], v[n - 1]};
}

static volatile float g_sink;

/* Seconds for |iters| dots of one row. */
static double time_dot(kern_vec_dot_fn dot, int64_t n, const void *w, const void *x, int iters)
{
	float s = 0, acc = 0;
	double t0 = ml_time_s();
	for (int i = 0; i < iters; i++) {
		dot(n, &s, w, x);
		acc += s;
	}
	g_sink = acc;
	return ml_time_s() - t0;
}

static double time_matvec(kern_vec_dot_fn dot, int64_t rows, int64_t cols, const char *w,
			  size_t wrow, const void *x, float *y)
{
	double t0 = ml_time_s();
	for (int64_t r = 0; r < rows; r++)
		dot(cols, &y[r], w + (size_t)r * wrow, x);
	return ml_time_s() - t0;
}

struct mm_job {
	enum ml_dtype t;
	const void *w;
	int64_t rows, cols, n_tok;
	const void *xq;
	float *y;
};

static void mm_fn(void *arg, int ith, int nth)
{
	struct mm_job *j = arg;
	kern_matmul(j->t, j->w, j->rows, j->cols, j->xq, j->n_tok, j->y, j->rows, ith, nth);
}

static void git_rev(char *buf, size_t len)
{
	snprintf(buf, len, "unknown");
	FILE *p = popen("git rev-parse --short HEAD 2>/dev/null", "r");
	if (p == NULL)
		return;
	if (fgets(buf, (int)len, p) != NULL)
		buf[strcspn(buf, "\n")] = '\0';
	pclose(p);
}

/* Seconds for one kern_matmul over the pool. */
static double time_mm(struct ml_pool *pool, struct mm_job *j)
{
	double t0 = ml_time_s();
	ml_pool_run(pool, mm_fn, j);
	return ml_time_s() - t0;
}

/* Huge-page memory for |bytes| (as model weights are held). */
static void *alloc_huge(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_HUGEPAGE);
	return p;
}

static void cell(char *out, size_t cap, struct stats s)
{
	snprintf(out, cap, "%6.1f [%.1f..%.1f]", s.med, s.lo, s.hi);
}

int main(int argc, char **argv)
{
	int quick = 0, n_threads = ml_cpu_count_physical();
	const char *only = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			quick = 1;
		else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			n_threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
			only = argv[++i];
	}
	if (n_threads < 1)
		n_threads = 1;
	kern_init();
	char rev[64];
	git_rev(rev, sizeof(rev));
	printf("bench-kernels  git %s\n", rev);
	printf("cpu features: %s\n", ml_cpu_feature_string());
	printf("cores: %d logical, %d physical; kernels: %s\n", ml_cpu_count_logical(),
	       ml_cpu_count_physical(), kern_isa_names());

	const int64_t cols = 4096, mv_rows = quick ? 2048 : 16384, mm_rows = quick ? 1024 : 4096;
	const int64_t n_tok = 64;
	struct ml_rng rng;
	ml_rng_seed(&rng, 1);
	float *wf = malloc((size_t)cols * 64 * sizeof(float));
	float *xf = malloc((size_t)cols * n_tok * sizeof(float));
	for (int64_t i = 0; i < cols * 64; i++)
		wf[i] = (float)(ml_rng_normal(&rng) * 0.05);
	for (int64_t i = 0; i < cols * n_tok; i++)
		xf[i] = (float)ml_rng_normal(&rng);
	float *y = malloc((size_t)mv_rows * n_tok * sizeof(float));
	struct ml_pool *pool1 = NULL, *pool = NULL;
	if (ml_pool_init(&pool1, 1) != 0 || ml_pool_init(&pool, n_threads) != 0) {
		fprintf(stderr, "ml_pool_init failed\n");
		return 1;
	}

	printf("\ndot: 1 row of %lld in L1; matvec: %lldx%lld from memory, 1 token; matmul: %lldx%lld x %lld "
	       "tokens.\nGB/s of weight bytes; x = dispatched / generic; median [min..max] of %d runs\n\n",
	       (long long)cols, (long long)mv_rows, (long long)cols, (long long)mm_rows, (long long)cols,
	       (long long)n_tok, N_REPS);
	printf("%-5s | %-22s %-22s %6s | %-22s %-22s %6s %-22s | %-22s %-22s %6s %-22s\n", "type",
	       "dot generic GB/s", "dot dispatched GB/s", "x", "matvec generic GB/s", "matvec 1t GB/s", "x",
	       "matvec Nt GB/s", "matmul generic GFLOP/s", "matmul 1t GFLOP/s", "x", "matmul Nt GFLOP/s");

	for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++) {
		const enum ml_dtype t = TYPES[ti];
		if (only && strcmp(only, ml_dtype_name(t)) != 0)
			continue;
		const struct kern_type_traits *gt = kern_type_traits_generic(t);
		const struct kern_type_traits *dt = kern_type_traits(t);
		const size_t wrow = ml_dtype_row_size(t, cols);
		const size_t xrow = ml_dtype_row_size(dt->vec_dot_type, cols);
		char *w = alloc_huge(wrow * (size_t)mv_rows);
		if (w == NULL) {
			fprintf(stderr, "out of memory\n");
			return 1;
		}
		/* 64 distinct rows, repeated to fill the matrix (quantizing 64M values is slow) */
		for (int64_t r = 0; r < 64; r++)
			gt->from_f32(wf + r * cols, w + (size_t)r * wrow, cols);
		for (int64_t r = 64; r < mv_rows; r++)
			memcpy(w + (size_t)r * wrow, w + (size_t)(r % 64) * wrow, wrow);
		char *xq = malloc(xrow * (size_t)n_tok);
		kern_quantize_rows(dt->vec_dot_type, xf, cols, xq, n_tok, cols, 0, 1);

		double v[2][N_REPS], mg[N_REPS], m1[N_REPS], mn[N_REPS], g[N_REPS], g1[N_REPS], gn[N_REPS];
		const int dot_iters = quick ? 200 : 2000;
		for (int which = 0; which < 2; which++) {
			kern_vec_dot_fn dot = which ? dt->vec_dot : gt->vec_dot;
			time_dot(dot, cols, w, xq, dot_iters / 10); /* warm-up */
			for (int r = 0; r < N_REPS; r++)
				v[which][r] = (double)wrow * dot_iters / time_dot(dot, cols, w, xq, dot_iters) / 1e9;
		}
		const double mv_bytes = (double)wrow * mv_rows, mm_flop = 2.0 * mm_rows * cols * n_tok;
		time_matvec(gt->vec_dot, mv_rows, cols, w, wrow, xq, y);
		for (int r = 0; r < N_REPS; r++) {
			mg[r] = mv_bytes / time_matvec(gt->vec_dot, mv_rows, cols, w, wrow, xq, y) / 1e9;
			/* the generic matmul: every (row, token) dot with the scalar kernel */
			double t0 = ml_time_s();
			for (int64_t k = 0; k < (quick ? 4 : 8); k++)
				time_matvec(gt->vec_dot, mm_rows, cols, w, wrow, xq + (size_t)k * xrow, y);
			g[r] = 2.0 * mm_rows * cols * (quick ? 4 : 8) / (ml_time_s() - t0) / 1e9;
		}
		struct mm_job mv = {t, w, mv_rows, cols, 1, xq, y}, mm = {t, w, mm_rows, cols, n_tok, xq, y};
		time_mm(pool1, &mv);
		for (int r = 0; r < N_REPS; r++)
			m1[r] = mv_bytes / time_mm(pool1, &mv) / 1e9;
		time_mm(pool, &mv);
		for (int r = 0; r < N_REPS; r++)
			mn[r] = mv_bytes / time_mm(pool, &mv) / 1e9;
		time_mm(pool1, &mm);
		for (int r = 0; r < N_REPS; r++)
			g1[r] = mm_flop / time_mm(pool1, &mm) / 1e9;
		time_mm(pool, &mm);
		for (int r = 0; r < N_REPS; r++)
			gn[r] = mm_flop / time_mm(pool, &mm) / 1e9;

		struct stats st[9] = {summarize(v[0], N_REPS), summarize(v[1], N_REPS), summarize(mg, N_REPS),
				      summarize(m1, N_REPS),   summarize(mn, N_REPS),   summarize(g, N_REPS),
				      summarize(g1, N_REPS),   summarize(gn, N_REPS)};
		char c[8][40];
		for (int k = 0; k < 8; k++)
			cell(c[k], sizeof(c[k]), st[k]);
		printf("%-5s | %-22s %-22s %5.1fx | %-22s %-22s %5.1fx %-22s | %-22s %-22s %5.1fx %-22s\n",
		       ml_dtype_name(t), c[0], c[1], st[1].med / st[0].med, c[2], c[3], st[3].med / st[2].med, c[4],
		       c[5], c[6], st[6].med / st[5].med, c[7]);
		fflush(stdout);
		munmap(w, wrow * (size_t)mv_rows);
		free(xq);
	}
	ml_pool_free(pool1);
	ml_pool_free(pool);
	free(wf);
	free(xf);
	free(y);
	return 0;
}
