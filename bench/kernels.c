/* Kernel benchmark: per weight type, the dot product of one row (in cache)
 * and the matrix-vector product of a 4096x4096 matrix (from memory), generic
 * vs dispatched, in GB/s of weight bytes; plus the threaded, tiled
 * kern_matmul for a batch of tokens in GFLOP/s. Warm-up, then repeats;
 * prints median and spread (min..max).
 *
 *   build/bench-kernels [--quick] [--threads N] [--type NAME]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

	const int64_t rows = quick ? 1024 : 4096, cols = 4096;
	const int64_t n_tok = 32;
	struct ml_rng rng;
	ml_rng_seed(&rng, 1);
	float *wf = malloc((size_t)cols * 64 * sizeof(float));
	float *xf = malloc((size_t)cols * n_tok * sizeof(float));
	for (int64_t i = 0; i < cols * 64; i++)
		wf[i] = (float)(ml_rng_normal(&rng) * 0.05);
	for (int64_t i = 0; i < cols * n_tok; i++)
		xf[i] = (float)ml_rng_normal(&rng);
	float *y = malloc((size_t)rows * n_tok * sizeof(float));
	struct ml_pool *pool = NULL;
	if (ml_pool_init(&pool, n_threads) != 0) {
		fprintf(stderr, "ml_pool_init failed\n");
		return 1;
	}

	printf("\nmatrix %lldx%lld; dot = one row in L1, repeated; matvec = all rows from memory, 1 thread;\n"
	       "matvec-%dt = kern_matmul, 1 token, %d threads; matmul = kern_matmul, %lld tokens, %d threads.\n"
	       "GB/s of weight bytes; median [min..max] of %d runs\n\n",
	       (long long)rows, (long long)cols, n_threads, n_threads, (long long)n_tok, n_threads, N_REPS);
	printf("%-5s | %-26s %-26s %6s | %-26s %-26s %6s | %-24s | %s\n", "type", "dot generic GB/s",
	       "dot dispatched GB/s", "x", "matvec generic GB/s", "matvec dispatched GB/s", "x",
	       "matvec-Nt GB/s", "matmul GFLOP/s");

	for (size_t ti = 0; ti < sizeof(TYPES) / sizeof(TYPES[0]); ti++) {
		const enum ml_dtype t = TYPES[ti];
		if (only && strcmp(only, ml_dtype_name(t)) != 0)
			continue;
		const struct kern_type_traits *gt = kern_type_traits_generic(t);
		const struct kern_type_traits *dt = kern_type_traits(t);
		const size_t wrow = ml_dtype_row_size(t, cols);
		const size_t xrow = ml_dtype_row_size(dt->vec_dot_type, cols);
		char *w = malloc(wrow * (size_t)rows);
		/* 64 distinct rows, repeated to fill the matrix (quantizing 16M values is slow) */
		for (int64_t r = 0; r < 64; r++)
			gt->from_f32(wf + r * cols, w + (size_t)r * wrow, cols);
		for (int64_t r = 64; r < rows; r++)
			memcpy(w + (size_t)r * wrow, w + (size_t)(r % 64) * wrow, wrow);
		char *xq = malloc(xrow * (size_t)n_tok);
		kern_quantize_rows(dt->vec_dot_type, xf, cols, xq, n_tok, cols, 0, 1);

		double v[2][N_REPS], m[2][N_REPS], mm[N_REPS], mt[N_REPS];
		const int dot_iters = quick ? 200 : 2000;
		for (int which = 0; which < 2; which++) {
			kern_vec_dot_fn dot = which ? dt->vec_dot : gt->vec_dot;
			time_dot(dot, cols, w, xq, dot_iters / 10); /* warm-up */
			for (int r = 0; r < N_REPS; r++)
				v[which][r] = (double)wrow * dot_iters / time_dot(dot, cols, w, xq, dot_iters) / 1e9;
			time_matvec(dot, rows, cols, w, wrow, xq, y);
			for (int r = 0; r < N_REPS; r++)
				m[which][r] = (double)wrow * rows / time_matvec(dot, rows, cols, w, wrow, xq, y) / 1e9;
		}
		/* threaded matrix-vector product through kern_matmul */
		struct mm_job job1 = {t, w, rows, cols, 1, xq, y};
		ml_pool_run(pool, mm_fn, &job1);
		for (int r = 0; r < N_REPS; r++) {
			double t0 = ml_time_s();
			ml_pool_run(pool, mm_fn, &job1);
			mt[r] = (double)wrow * rows / (ml_time_s() - t0) / 1e9;
		}
		struct mm_job job = {t, w, rows, cols, n_tok, xq, y};
		ml_pool_run(pool, mm_fn, &job);
		for (int r = 0; r < N_REPS; r++) {
			double t0 = ml_time_s();
			ml_pool_run(pool, mm_fn, &job);
			mm[r] = 2.0 * rows * cols * n_tok / (ml_time_s() - t0) / 1e9;
		}
		struct stats dg = summarize(v[0], N_REPS), dd = summarize(v[1], N_REPS);
		struct stats mg = summarize(m[0], N_REPS), md = summarize(m[1], N_REPS);
		struct stats sm = summarize(mm, N_REPS), st = summarize(mt, N_REPS);
		char c[6][40];
		snprintf(c[0], 40, "%7.2f [%.2f..%.2f]", dg.med, dg.lo, dg.hi);
		snprintf(c[1], 40, "%7.2f [%.2f..%.2f]", dd.med, dd.lo, dd.hi);
		snprintf(c[2], 40, "%7.2f [%.2f..%.2f]", mg.med, mg.lo, mg.hi);
		snprintf(c[3], 40, "%7.2f [%.2f..%.2f]", md.med, md.lo, md.hi);
		snprintf(c[4], 40, "%6.1f [%.1f..%.1f]", sm.med, sm.lo, sm.hi);
		snprintf(c[5], 40, "%6.2f [%.2f..%.2f]", st.med, st.lo, st.hi);
		printf("%-5s | %-26s %-26s %5.1fx | %-26s %-26s %5.1fx | %-24s | %s\n", ml_dtype_name(t),
		       c[0], c[1], dd.med / dg.med, c[2], c[3], md.med / mg.med, c[5], c[4]);
		fflush(stdout);
		free(w);
		free(xq);
	}
	ml_pool_free(pool);
	free(wf);
	free(xf);
	free(y);
	return 0;
}
