/* `mesh-llm bench`: prompt-processing and generation speed of a model, and a
 * memory-bandwidth probe so that generation speed can be read as a fraction
 * of the roofline (decode reads every weight once per token).
 *
 * Output: one JSON object per line, e.g.
 *   {"test":"pp512","threads":2,"tokens_per_s":812.5,"stddev":3.1,...}
 *   {"test":"tg128","threads":2,"tokens_per_s":30.2,"stddev":0.4,
 *    "weight_bytes":...,"gb_per_s":...,"roofline":0.93}
 *   {"test":"membw","threads":2,"gb_per_s":29.8,"stddev":0.2} */
#include "app/app.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"
#include "kernels/kern.h"
#include "model/model.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct bench_stats {
	double median;
	double mean;
	double stddev;
	double min;
	double max;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct bench_stats stats_of(double *v, int n)
{
	struct bench_stats s = {0};
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	for (int i = 0; i < n; i++)
		s.mean += v[i] / n;
	for (int i = 0; i < n; i++)
		s.stddev += (v[i] - s.mean) * (v[i] - s.mean);
	s.stddev = n > 1 ? sqrt(s.stddev / (n - 1)) : 0.0;
	s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
	s.min = v[0];
	s.max = v[n - 1];
	return s;
}

/* ---- memory bandwidth probe ---- */

struct membw_job {
	const uint64_t *buf;
	size_t n_words;
	uint64_t sink[64]; /* one slot per thread, keeps the reads alive */
};

static void membw_read(void *arg, int ith, int nth)
{
	struct membw_job *job = arg;
	size_t per = job->n_words / (size_t)nth;
	const uint64_t *p = job->buf + per * (size_t)ith;
	uint64_t acc[8] = {0};
	/* eight independent accumulators so the compiler vectorizes the loop;
	 * software prefetch 4 KiB ahead, as kern_matmul streams weights */
	for (size_t i = 0; i + 8 <= per; i += 8) {
		__builtin_prefetch(p + i + 512, 0, 3);
		for (int k = 0; k < 8; k++)
			acc[k] ^= p[i + k];
	}
	job->sink[ith % 64] = acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

/* Read bandwidth in GB/s with |n_threads|, median over |reps| passes over a
 * buffer much larger than the caches, in huge pages like resident weights. */
static int membw_measure(int n_threads, int reps, struct bench_stats *out)
{
	const size_t bytes = (size_t)1 << 30;
	struct ml_pool *pool = NULL;
	double *gbs = calloc((size_t)reps, sizeof(double));
	uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int rc = ML_ERR_NOMEM;
	if (gbs == NULL || buf == MAP_FAILED)
		goto fail;
	madvise(buf, bytes, MADV_HUGEPAGE);
	memset(buf, 1, bytes);
	rc = ml_pool_init(&pool, n_threads);
	if (rc < 0)
		goto fail;
	struct membw_job job = {.buf = buf, .n_words = bytes / 8};
	ml_pool_run(pool, membw_read, &job); /* warm-up */
	for (int r = 0; r < reps; r++) {
		double t0 = ml_time_s();
		ml_pool_run(pool, membw_read, &job);
		gbs[r] = (double)bytes / (ml_time_s() - t0) / 1e9;
	}
	*out = stats_of(gbs, reps);
	rc = 0;
fail:
	ml_pool_free(pool);
	if (buf != MAP_FAILED && buf != NULL)
		munmap(buf, bytes);
	free(gbs);
	return rc;
}

/* ---- model speed ---- */

/* A /proc/self/status field in kB (VmRSS:, VmHWM:), as MB; 0 if absent. */
static double status_mb(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	double mb = 0;
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		long kb;
		if (strncmp(line, field, strlen(field)) == 0 && sscanf(line + strlen(field), "%ld", &kb) == 1)
			mb = kb / 1e3;
	}
	if (f != NULL)
		fclose(f);
	return mb;
}

/* Bytes the C heap holds in use (arena + mmap'd chunks). */
static size_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

struct bench_opts {
	const char *model;
	int n_prompt;
	int n_gen;
	int threads[8];
	int n_threads_list;
	int reps;
	int membw;
	bool mmap;
	enum model_kv_type kv_type;
};

static int bench_model(const struct bench_opts *o, int n_threads, double membw_gbs)
{
	struct model_params mp = {.path = o->model, .layer_begin = 0, .layer_end = -1, .mmap = o->mmap};
	struct model *m = NULL;
	struct model_ctx *ctx = NULL;
	struct ml_pool *pool = NULL;
	int n_ctx = o->n_prompt + o->n_gen + 1;
	int n_batch = o->n_prompt > 0 ? o->n_prompt : 1;
	int32_t *tokens = NULL, *pos = NULL, *seq = NULL;
	int8_t *want = NULL;
	float *logits = NULL;
	double *pp = NULL, *tg = NULL;
	/* peak RSS from here on only (not the bandwidth probe's buffer) */
	FILE *cr = fopen("/proc/self/clear_refs", "w");
	if (cr != NULL) {
		fputs("5", cr);
		fclose(cr);
	}
	const double t_load = ml_time_s();
	int rc = model_load(&m, &mp);
	if (rc < 0)
		goto fail;
	const struct model_hparams *hp = model_hparams(m);
	rc = ml_pool_init(&pool, n_threads);
	if (rc < 0)
		goto fail;
	/* F16 KV cache by default, as serving uses it and as llama-bench does */
	struct model_ctx_params cp = model_ctx_default_params();
	cp.n_seq = 1;
	cp.n_ctx = n_ctx;
	cp.n_batch = n_batch;
	cp.kv_type = o->kv_type;
	rc = model_ctx_init_params(&ctx, m, pool, &cp);
	if (rc < 0)
		goto fail;
	const double load_s = ml_time_s() - t_load;
	const double rss_load = status_mb("VmRSS:");
	size_t tg_alloc = 0; /* heap bytes that appeared during generation (want 0) */
	rc = ML_ERR_NOMEM;
	tokens = calloc((size_t)n_batch, sizeof(*tokens));
	pos = calloc((size_t)n_batch, sizeof(*pos));
	seq = calloc((size_t)n_batch, sizeof(*seq));
	want = calloc((size_t)n_batch, sizeof(*want));
	logits = calloc((size_t)hp->n_vocab, sizeof(*logits));
	pp = calloc((size_t)o->reps + 1, sizeof(*pp));
	tg = calloc((size_t)o->reps + 1, sizeof(*tg));
	if (!tokens || !pos || !seq || !want || !logits || !pp || !tg)
		goto fail;
	for (int i = 0; i < n_batch; i++)
		tokens[i] = (int32_t)((i * 7919 + 13) % hp->n_vocab);
	/* rep 0 is a warm-up and is not counted */
	for (int r = 0; r <= o->reps; r++) {
		model_kv_truncate(ctx, 0, 0);
		if (o->n_prompt > 0) {
			for (int i = 0; i < o->n_prompt; i++) {
				pos[i] = i;
				want[i] = i == o->n_prompt - 1;
			}
			struct model_batch b = {.n_tokens = o->n_prompt, .tokens = tokens, .pos = pos,
						.seq = seq, .logits = want};
			double t0 = ml_time_s();
			rc = model_forward(ctx, &b, logits);
			if (rc < 0)
				goto fail;
			pp[r] = o->n_prompt / (ml_time_s() - t0);
		}
		if (o->n_gen > 0) {
			int p0 = o->n_prompt;
			const size_t heap0 = heap_bytes();
			double t0 = ml_time_s();
			for (int i = 0; i < o->n_gen; i++) {
				int32_t tok = tokens[i % n_batch], p = p0 + i, s = 0;
				int8_t w = 1;
				struct model_batch b = {.n_tokens = 1, .tokens = &tok, .pos = &p, .seq = &s,
							.logits = &w};
				rc = model_forward(ctx, &b, logits);
				if (rc < 0)
					goto fail;
			}
			tg[r] = o->n_gen / (ml_time_s() - t0);
			if (heap_bytes() > heap0)
				tg_alloc += heap_bytes() - heap0;
		}
	}
	uint64_t wbytes = model_weight_bytes(m);
	printf("{\"test\":\"load\",\"threads\":%d,\"seconds\":%.3f,\"weights\":\"%s\",\"weight_mb\":%.1f,"
	       "\"rss_mb_after_load\":%.1f,\"rss_mb_peak\":%.1f,\"heap_bytes_allocated_in_tg\":%zu}\n",
	       n_threads, load_s, o->mmap ? "mapped" : "resident", (double)wbytes / 1e6, rss_load,
	       status_mb("VmHWM:"), tg_alloc);
	if (o->n_prompt > 0) {
		struct bench_stats s = stats_of(pp + 1, o->reps);
		printf("{\"test\":\"pp%d\",\"threads\":%d,\"tokens_per_s\":%.2f,\"stddev\":%.2f,"
		       "\"min\":%.2f,\"max\":%.2f,\"reps\":%d,\"weight_bytes\":%llu}\n",
		       o->n_prompt, n_threads, s.median, s.stddev, s.min, s.max, o->reps,
		       (unsigned long long)wbytes);
	}
	if (o->n_gen > 0) {
		struct bench_stats s = stats_of(tg + 1, o->reps);
		double gbs = s.median * (double)wbytes / 1e9;
		printf("{\"test\":\"tg%d\",\"threads\":%d,\"tokens_per_s\":%.2f,\"stddev\":%.2f,"
		       "\"min\":%.2f,\"max\":%.2f,\"reps\":%d,\"weight_bytes\":%llu,\"gb_per_s\":%.2f",
		       o->n_gen, n_threads, s.median, s.stddev, s.min, s.max, o->reps,
		       (unsigned long long)wbytes, gbs);
		if (membw_gbs > 0)
			printf(",\"membw_gb_per_s\":%.2f,\"roofline\":%.3f", membw_gbs, gbs / membw_gbs);
		printf("}\n");
	}
	fflush(stdout);
	rc = 0;
fail:
	if (rc < 0)
		fprintf(stderr, "mesh-llm bench: %s\n",
			ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
	free(tokens);
	free(pos);
	free(seq);
	free(want);
	free(logits);
	free(pp);
	free(tg);
	model_ctx_free(ctx);
	ml_pool_free(pool);
	model_free(m);
	return rc;
}

static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: mesh-llm bench --model FILE [-p N] [-n N] [-t T[,T...]] [-r REPS] [--membw] [--mmap]\n"
		"                      [--kv-type f16|f32]\n"
		"       mesh-llm bench --membw [-t T[,T...]] [-r REPS]\n\n"
		"  --model FILE   GGUF model to measure\n"
		"  -p N           prompt tokens processed in one batch (default 512; 0 skips)\n"
		"  -n N           tokens generated one at a time (default 128; 0 skips)\n"
		"  -t LIST        thread counts, comma-separated (default: 1 and all cores)\n"
		"  -r REPS        repetitions after one warm-up (default 5)\n"
		"  --membw        also measure memory read bandwidth; tg lines then show the\n"
		"                 fraction of the bandwidth roofline they reach\n"
		"  --kv-type T    KV cache element type, f16 (default) or f32\n"
		"  --mmap         weights as views of the file mapping (default: read into\n"
		"                 huge-page memory at load, faster to stream)\n"
		"Prints one JSON object per line; figures are medians over the repetitions.\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
	char *end;
	long x;
	errno = 0;
	x = v ? strtol(v, &end, 10) : 0;
	if (v == NULL || errno || *end || end == v || x < lo || x > hi) {
		fprintf(stderr, "mesh-llm bench: %s needs an integer in [%d, %d], got '%s'\n", flag,
			lo, hi, v ? v : "");
		return ML_ERR_INVALID;
	}
	*out = (int)x;
	return 0;
}

int app_cmd_bench(int argc, char **argv)
{
	struct bench_opts o = {.n_prompt = 512, .n_gen = 128, .reps = 5, .kv_type = MODEL_KV_F16};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			bench_usage(stdout);
			return 0;
		} else if (strcmp(a, "--model") == 0 || strcmp(a, "-m") == 0) {
			if (v == NULL)
				goto usage;
			o.model = v;
			i++;
		} else if (strcmp(a, "-p") == 0) {
			if (parse_int(a, v, 0, 65536, &o.n_prompt) < 0)
				return 2;
			i++;
		} else if (strcmp(a, "-n") == 0) {
			if (parse_int(a, v, 0, 65536, &o.n_gen) < 0)
				return 2;
			i++;
		} else if (strcmp(a, "-r") == 0) {
			if (parse_int(a, v, 1, 1000, &o.reps) < 0)
				return 2;
			i++;
		} else if (strcmp(a, "-t") == 0) {
			char buf[128], *save = NULL;
			if (v == NULL)
				goto usage;
			snprintf(buf, sizeof(buf), "%s", v);
			o.n_threads_list = 0;
			for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (o.n_threads_list == 8 ||
				    parse_int("-t", t, 1, 256, &o.threads[o.n_threads_list++]) < 0)
					return 2;
			}
			i++;
		} else if (strcmp(a, "--membw") == 0) {
			o.membw = 1;
		} else if (strcmp(a, "--mmap") == 0) {
			o.mmap = true;
		} else if (strcmp(a, "--kv-type") == 0) {
			if (v == NULL || (strcmp(v, "f16") != 0 && strcmp(v, "f32") != 0)) {
				fprintf(stderr, "mesh-llm bench: --kv-type wants f16 or f32, got '%s'\n",
					v ? v : "");
				goto usage;
			}
			o.kv_type = strcmp(v, "f32") == 0 ? MODEL_KV_F32 : MODEL_KV_F16;
			i++;
		} else {
			fprintf(stderr, "mesh-llm bench: unknown option '%s'\n", a);
			goto usage;
		}
	}
	if (o.model == NULL && !o.membw) {
		fprintf(stderr, "mesh-llm bench: --model or --membw is required\n");
		goto usage;
	}
	if (o.n_threads_list == 0) {
		o.threads[o.n_threads_list++] = 1;
		if (ncpu > 1)
			o.threads[o.n_threads_list++] = (int)ncpu;
	}
	kern_init();
	fprintf(stderr, "mesh-llm bench: kernels: %s\n", kern_isa_names());
	for (int k = 0; k < o.n_threads_list; k++) {
		struct bench_stats bw = {0};
		if (o.membw) {
			if (membw_measure(o.threads[k], o.reps, &bw) < 0) {
				fprintf(stderr, "mesh-llm bench: memory probe failed\n");
				return 1;
			}
			printf("{\"test\":\"membw\",\"threads\":%d,\"gb_per_s\":%.2f,\"stddev\":%.2f}\n",
			       o.threads[k], bw.median, bw.stddev);
			fflush(stdout);
		}
		if (o.model && bench_model(&o, o.threads[k], bw.median) < 0)
			return 1;
	}
	return 0;
usage:
	bench_usage(stderr);
	return 2;
}
