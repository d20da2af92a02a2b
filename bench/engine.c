/* Engine throughput: aggregate generated tokens per second with 1, 2, 4 and
 * 8 concurrent greedy requests through the continuous-batching engine, the
 * single-request run being the baseline. Beside each, the same work done by
 * calling model_forward() directly (all prompts in one pass, then one pass
 * per token for all sequences, argmax on the logits): the engine's own cost
 * (thread hand-off, sampling, detokenizing, events) is the difference.
 *
 *   build/bench-engine [model.gguf] [n_gen] [n_threads]
 *
 * Default model: ../shared/refdata/models/syn-llama-Q8_0.gguf (run from the
 * repository root). Each configuration gets one warm-up run and 5 measured
 * runs; the median and the spread (min..max) are printed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"
#include "engine/eng.h"
#include "kernels/kern.h"
#include "model/model.h"

#define MAX_CONC 8
#define N_PROMPT 16
#define N_RUNS 5

struct done_count {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int n_done;
	int n_tokens;
	int n_bad;
};

static void on_event(const struct eng_event *ev, void *user)
{
	struct done_count *d = user;
	if (ev->finish == ENG_FINISH_NONE)
		return;
	pthread_mutex_lock(&d->mu);
	d->n_done++;
	d->n_tokens += ev->n_completion;
	if (ev->finish != ENG_FINISH_LENGTH)
		d->n_bad++;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* One run of |conc| concurrent requests; returns aggregate tokens/s or < 0. */
static double run_once(struct eng *e, int conc, int n_gen, int n_vocab)
{
	static int32_t prompts[MAX_CONC][N_PROMPT];
	static int run_no; /* new prompts every run: no reuse of cached prefixes */
	struct done_count d = {.n_done = 0};
	run_no++;
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);

	double t0 = ml_time_s();
	for (int i = 0; i < conc; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < N_PROMPT; j++)
			prompts[i][j] = 3 + (j * 97 + 31 * i + 7 * run_no) % (n_vocab - 3);
		struct eng_request r;
		memset(&r, 0, sizeof(r));
		r.prompt = prompts[i];
		r.n_prompt = N_PROMPT;
		r.max_tokens = n_gen;
		r.sampling = smp_default_params();
		r.sampling.temp = 0.0f;
		r.ignore_eos = true;
		int rc = eng_submit(e, &r, on_event, &d, NULL);
		if (rc < 0) {
			fprintf(stderr, "submit: %s: %s\n", ml_strerror(rc), ml_last_error());
			conc = i;
			break;
		}
	}
	pthread_mutex_lock(&d.mu);
	while (d.n_done < conc)
		pthread_cond_wait(&d.cv, &d.mu);
	pthread_mutex_unlock(&d.mu);
	double dt = ml_time_s() - t0;
	pthread_mutex_destroy(&d.mu);
	pthread_cond_destroy(&d.cv);
	if (d.n_bad || d.n_tokens != conc * n_gen || conc == 0)
		return -1.0;
	return d.n_tokens / dt;
}

/* The same work without the engine: returns tokens/s or < 0. */
static double raw_once(struct model_ctx *c, int conc, int n_gen, int n_vocab, float *logits)
{
	static int32_t tok[MAX_CONC * N_PROMPT], pos[MAX_CONC * N_PROMPT], seq[MAX_CONC * N_PROMPT];
	static int8_t want[MAX_CONC * N_PROMPT];
	int n = 0;

	double t0 = ml_time_s();
	for (int i = 0; i < conc; i++) {
		model_kv_truncate(c, i, 0);
		for (int j = 0; j < N_PROMPT; j++, n++) {
			tok[n] = j == 0 ? 1 : 3 + (j * 97 + 31 * i) % (n_vocab - 3);
			pos[n] = j;
			seq[n] = i;
			want[n] = j == N_PROMPT - 1;
		}
	}
	for (int step = 0; step < n_gen; step++) {
		struct model_batch b = {n, tok, NULL, pos, seq, want};
		if (model_forward(c, &b, logits) < 0)
			return -1.0;
		for (int i = 0; i < conc; i++) {
			const float *l = logits + (size_t)i * (size_t)n_vocab;
			int best = 0;
			for (int v = 1; v < n_vocab; v++)
				if (l[v] > l[best])
					best = v;
			tok[i] = best;
			pos[i] = N_PROMPT + step;
			seq[i] = i;
			want[i] = 1;
		}
		n = conc;
	}
	return conc * n_gen / (ml_time_s() - t0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "../shared/refdata/models/syn-llama-Q8_0.gguf";
	int n_gen = argc > 2 ? atoi(argv[2]) : 128;
	int n_threads = argc > 3 ? atoi(argv[3]) : 0;
	if (n_gen < 1)
		n_gen = 128;

	ml_log_set_level(ML_LOG_INFO);
	kern_init();
	char rev[64] = "unknown";
	FILE *g = popen("git rev-parse --short HEAD 2>/dev/null", "r");
	if (g) {
		if (fgets(rev, sizeof(rev), g))
			rev[strcspn(rev, "\n")] = '\0';
		pclose(g);
	}

	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.n_parallel = MAX_CONC;
	p.n_ctx = N_PROMPT + n_gen + 1;
	p.n_threads = n_threads;
	struct eng *e = NULL;
	int rc = eng_init(&e, &p);
	if (rc < 0) {
		fprintf(stderr, "bench-engine: cannot load %s: %s\n", path, ml_last_error());
		return 1;
	}
	const struct model_hparams *hp = eng_hparams(e);
	struct model *m = NULL;
	struct ml_pool *pool = NULL;
	struct model_ctx *mc = NULL;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	float *logits = malloc((size_t)MAX_CONC * (size_t)hp->n_vocab * sizeof(float));
	if (!logits || model_load(&m, &mp) < 0 ||
	    ml_pool_init(&pool, n_threads > 0     ? n_threads
	                        : p.n_threads > 0 ? p.n_threads
	                                          : 2) < 0 ||
	    model_ctx_init(&mc, m, pool, MAX_CONC, N_PROMPT + n_gen + 1, MAX_CONC * N_PROMPT) < 0) {
		fprintf(stderr, "bench-engine: cannot set up the direct baseline: %s\n",
		        ml_last_error());
		return 1;
	}
	printf("bench-engine: %s (%s, %d layers, n_embd %d, vocab %d), git %s, kernels: %s\n",
	       eng_model_name(e), hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab, rev,
	       kern_isa_names());
	printf("  %d-token prompts, %d greedy tokens per request, %d runs after 1 warm-up\n",
	       N_PROMPT, n_gen, N_RUNS);
	printf("  %-11s %16s %22s %8s %17s %9s\n", "concurrent", "tokens/s median",
	       "spread (min..max)", "vs 1", "model_forward only", "engine %");

	double base = 0.0;
	int status = 0;
	static const int concs[] = {1, 2, 4, 8};
	for (size_t c = 0; c < sizeof(concs) / sizeof(concs[0]); c++) {
		double v[N_RUNS], raw[N_RUNS];
		if (run_once(e, concs[c], n_gen, hp->n_vocab) < 0 ||
		    raw_once(mc, concs[c], n_gen, hp->n_vocab, logits) < 0)
			status = 1;
		/* alternate so that load changes on the machine hit both alike */
		for (int i = 0; i < N_RUNS; i++) {
			v[i] = run_once(e, concs[c], n_gen, hp->n_vocab);
			raw[i] = raw_once(mc, concs[c], n_gen, hp->n_vocab, logits);
			if (v[i] < 0 || raw[i] < 0)
				status = 1;
		}
		qsort(v, N_RUNS, sizeof(v[0]), cmp_double);
		qsort(raw, N_RUNS, sizeof(raw[0]), cmp_double);
		double med = v[N_RUNS / 2], raw_med = raw[N_RUNS / 2];
		if (c == 0)
			base = med;
		printf("  %-11d %16.1f %10.1f..%-10.1f %7.2fx %17.1f %8.0f%%\n", concs[c], med,
		       v[0], v[N_RUNS - 1], base > 0 ? med / base : 0.0, raw_med,
		       raw_med > 0 ? 100.0 * med / raw_med : 0.0);
	}
	eng_free(e);
	model_ctx_free(mc);
	ml_pool_free(pool);
	model_free(m);
	free(logits);
	if (status)
		fprintf(stderr, "bench-engine: some requests did not finish with LENGTH\n");
	return status;
}
