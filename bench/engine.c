/* Engine throughput: aggregate generated tokens per second with 1, 2, 4 and
 * 8 concurrent greedy requests through the continuous-batching engine, the
 * single-request run being the baseline.
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
	struct done_count d = {.n_done = 0};
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);

	double t0 = ml_time_s();
	for (int i = 0; i < conc; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < N_PROMPT; j++)
			prompts[i][j] = 3 + (j * 97 + 31 * i) % (n_vocab - 3);
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
	printf("bench-engine: %s (%s, %d layers, n_embd %d, vocab %d), git %s, kernels: %s\n",
	       eng_model_name(e), hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab, rev,
	       kern_isa_names());
	printf("  %d-token prompts, %d greedy tokens per request, %d runs after 1 warm-up\n",
	       N_PROMPT, n_gen, N_RUNS);
	printf("  %-11s %16s %22s %10s\n", "concurrent", "tokens/s median", "spread (min..max)",
	       "vs 1");

	double base = 0.0;
	int status = 0;
	static const int concs[] = {1, 2, 4, 8};
	for (size_t c = 0; c < sizeof(concs) / sizeof(concs[0]); c++) {
		double v[N_RUNS];
		if (run_once(e, concs[c], n_gen, hp->n_vocab) < 0)
			status = 1;
		for (int i = 0; i < N_RUNS; i++) {
			v[i] = run_once(e, concs[c], n_gen, hp->n_vocab);
			if (v[i] < 0)
				status = 1;
		}
		qsort(v, N_RUNS, sizeof(v[0]), cmp_double);
		double med = v[N_RUNS / 2];
		if (c == 0)
			base = med;
		printf("  %-11d %16.1f %10.1f..%-10.1f %9.2fx\n", concs[c], med, v[0],
		       v[N_RUNS - 1], base > 0 ? med / base : 0.0);
	}
	eng_free(e);
	if (status)
		fprintf(stderr, "bench-engine: some requests did not finish with LENGTH\n");
	return status;
}
