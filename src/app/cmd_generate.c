/* `mesh-llm generate`: runs a prompt through a local model and prints the
 * continuation. The prompt goes through the model in batches of up to
 * n_batch tokens, then one token per forward call; tokens are picked by the
 * sampler and printed as they come (through the streaming detokenizer, so
 * multi-byte characters are never split), or as ids with --ids. */
#include "app/app.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"
#include "kernels/kern.h"
#include "model/model.h"
#include "sampler/smp.h"
#include "tokenizer/tok.h"

#define GEN_DEFAULT_N 128
#define GEN_DEFAULT_CTX 4096
#define GEN_N_BATCH 512

static void usage(FILE *f)
{
	struct smp_params d = smp_default_params();
	fprintf(f,
		"usage: mesh-llm generate --model FILE (--prompt TEXT | --prompt-ids 1,2,3) [OPTIONS]\n"
		"\n"
		"Runs the prompt through the model on this machine and prints the continuation\n"
		"(not the prompt) to stdout as it is generated. Stops after -n tokens or at an\n"
		"end-of-generation token (not printed) unless --ignore-eos.\n"
		"\n"
		"  --model FILE        GGUF model (llama, qwen2, qwen3)\n"
		"  --prompt TEXT       prompt text; tokenized with the model's BOS rule, special-token\n"
		"                      strings such as <|im_start|> become their tokens\n"
		"  --prompt-ids LIST   prompt as comma-separated token ids, used as given (no BOS added)\n"
		"  -n N                tokens to generate (default %d)\n"
		"  --temp T            temperature; 0 = greedy, argmax with ties to the lowest id\n"
		"                      (default %.1f)\n"
		"  --top-k K           keep the K most likely tokens, 0 = off (default %d)\n"
		"  --top-p P           keep the smallest set with probability >= P, 1 = off (default %.2f)\n"
		"  --min-p P           drop tokens below P times the best one's probability, 0 = off\n"
		"                      (default %.2f)\n"
		"  --repeat-penalty F  penalize tokens of the last --repeat-last-n ids, 1 = off (default 1)\n"
		"  --repeat-last-n N   penalty window (default %d, -1 = everything)\n"
		"  --seed S            sampling seed (default: taken from the clock, shown with -v);\n"
		"                      the same seed, prompt and options give the same output\n"
		"  --threads N         compute threads (default: number of CPUs)\n"
		"  --ctx-size N        context length in tokens, prompt included (default: the\n"
		"                      model's training context, at most %d)\n"
		"  --kv-type f16|f32   KV cache element type (default f16: half the memory; f32\n"
		"                      matches F32-KV reference outputs). llama.cpp's\n"
		"                      --cache-type-k/-ctk and --cache-type-v/-ctv are accepted;\n"
		"                      K and V share one type here. `mesh-llm serve` takes the\n"
		"                      same option and gives the same greedy tokens\n"
		"  --mmap              use the weights through a mapping of the file (loads\n"
		"                      lazily, shares the page cache) instead of reading them into\n"
		"                      huge-page memory at start (the default; decode is faster)\n"
		"  --ids               print the generated token ids, space-separated, on one line\n"
		"  --ignore-eos        keep generating past end-of-generation tokens\n"
		"  -v                  log what happens (loading, timings) to stderr\n"
		"\n"
		"Sampling order: penalties, temperature, top-k, top-p, min-p, seeded draw.\n"
		"Prompt and generation speed (tokens/s) are printed to stderr at the end.\n",
		GEN_DEFAULT_N, (double)d.temp, d.top_k, (double)d.top_p, (double)d.min_p, d.repeat_last_n,
		GEN_DEFAULT_CTX);
}

static int usage_error(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "mesh-llm generate: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\n(see mesh-llm generate --help)\n");
	return 2;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_float(const char *s, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(s, &end);
	if (errno || end == s || *end != '\0' || !(v >= lo && v <= hi))
		return false;
	*out = v;
	return true;
}

/* "1,2,3" -> ids; returns the count or -1 on a malformed list. */
static int parse_ids(const char *s, int32_t **out)
{
	int cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
	if (ids == NULL)
		return -1;
	int n = 0;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (errno || end == p || v < 0 || v > INT32_MAX || (*end != ',' && *end != '\0')) {
			free(ids);
			return -1;
		}
		ids[n++] = (int32_t)v;
		p = *end == ',' ? end + 1 : end;
		if (*end == ',' && *p == '\0') {
			free(ids);
			return -1;
		}
	}
	if (n == 0) {
		free(ids);
		return -1;
	}
	*out = ids;
	return n;
}

struct gen_opts {
	const char *model;
	const char *prompt;
	const char *prompt_ids;
	long n_predict;
	struct smp_params sp;
	bool seed_set;
	long threads;
	long ctx_size;
	enum model_kv_type kv_type;
	const char *kv_flag; /* the option that set kv_type, NULL: default */
	bool mmap;
	bool ids;
	bool ignore_eos;
	bool verbose;
};

/* Returns 0, 1 for --help, or the exit code 2 on a usage error. */
static int parse_args(int argc, char **argv, struct gen_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return 1;
		if (strcmp(a, "--ids") == 0) {
			o->ids = true;
			continue;
		}
		if (strcmp(a, "--ignore-eos") == 0) {
			o->ignore_eos = true;
			continue;
		}
		if (strcmp(a, "--mmap") == 0) {
			o->mmap = true;
			continue;
		}
		if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			o->verbose = true;
			continue;
		}
		static const char *with_value[] = {"--model",	 "--prompt", "--prompt-ids",	 "-n",
						   "--temp",	 "--top-k",  "--top-p",		 "--min-p",
						   "--seed",	 "--threads", "--ctx-size",	 "--repeat-penalty",
						   "--repeat-last-n", "--n-predict", "--kv-type", "--cache-type-k",
						   "--cache-type-v", "-ctk", "-ctv"};
		bool known = false;
		for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
			known |= strcmp(a, with_value[k]) == 0;
		if (!known)
			return usage_error("unknown option '%s'%s", a, "");
		if (i + 1 >= argc)
			return usage_error("%s needs a value%s", a, "");
		const char *v = argv[++i];
		long l;
		bool ok = true;
		if (strcmp(a, "--model") == 0) {
			o->model = v;
		} else if (strcmp(a, "--prompt") == 0) {
			o->prompt = v;
		} else if (strcmp(a, "--prompt-ids") == 0) {
			o->prompt_ids = v;
		} else if (strcmp(a, "-n") == 0 || strcmp(a, "--n-predict") == 0) {
			ok = parse_long(v, 0, 1L << 30, &o->n_predict);
		} else if (strcmp(a, "--temp") == 0) {
			ok = parse_float(v, 0.0f, 1000.0f, &o->sp.temp);
		} else if (strcmp(a, "--top-k") == 0) {
			ok = parse_long(v, 0, INT32_MAX, &l);
			o->sp.top_k = (int)l;
		} else if (strcmp(a, "--top-p") == 0) {
			ok = parse_float(v, 0.0f, 1.0f, &o->sp.top_p);
		} else if (strcmp(a, "--min-p") == 0) {
			ok = parse_float(v, 0.0f, 1.0f, &o->sp.min_p);
		} else if (strcmp(a, "--repeat-penalty") == 0) {
			ok = parse_float(v, 0.0f, 100.0f, &o->sp.repeat_penalty) && o->sp.repeat_penalty > 0.0f;
		} else if (strcmp(a, "--repeat-last-n") == 0) {
			ok = parse_long(v, -1, INT32_MAX, &l);
			o->sp.repeat_last_n = (int)l;
		} else if (strcmp(a, "--seed") == 0) {
			char *end;
			errno = 0;
			unsigned long long s = strtoull(v, &end, 10);
			ok = !errno && end != v && *end == '\0' && v[0] != '-';
			o->sp.seed = s;
			o->seed_set = true;
		} else if (strcmp(a, "--threads") == 0) {
			ok = parse_long(v, 1, 1024, &o->threads);
		} else if (strcmp(a, "--ctx-size") == 0) {
			ok = parse_long(v, 1, 1 << 24, &o->ctx_size);
		} else {
			enum model_kv_type t = MODEL_KV_F16;
			if (strcmp(v, "f32") == 0)
				t = MODEL_KV_F32;
			else if (strcmp(v, "f16") != 0)
				return usage_error("%s: '%s' is not a KV cache type (f16 or f32)", a, v);
			if (o->kv_flag && t != o->kv_type)
				return usage_error("%s: K and V share one cache type here, and %s "
						   "gave the other one",
						   a, o->kv_flag);
			o->kv_type = t;
			o->kv_flag = a;
		}
		if (!ok)
			return usage_error("%s: invalid value '%s'", a, v);
	}
	if (o->model == NULL)
		return usage_error("--model is required%s%s", "", "");
	if ((o->prompt == NULL) == (o->prompt_ids == NULL))
		return usage_error("give exactly one of --prompt and --prompt-ids%s%s", "", "");
	return 0;
}

static int fail(const char *what)
{
	fprintf(stderr, "mesh-llm generate: %s: %s\n", what, ml_last_error()[0] ? ml_last_error() : "failed");
	return 1;
}

int app_cmd_generate(int argc, char **argv)
{
	struct gen_opts o = {.n_predict = GEN_DEFAULT_N,
			     .sp = smp_default_params(),
			     .kv_type = model_ctx_default_params().kv_type};
	int rc = parse_args(argc, argv, &o);
	if (rc == 1) {
		usage(stdout);
		return 0;
	}
	if (rc != 0)
		return rc;
	if (o.verbose)
		ml_log_set_level(ML_LOG_INFO);
	else if (getenv("MESH_LLM_LOG") == NULL)
		ml_log_set_level(ML_LOG_WARN);
	if (!o.seed_set)
		o.sp.seed = ml_time_ns();
	if (o.threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		o.threads = n > 0 ? n : 1;
	}

	int exit_code = 1;
	struct ml_pool *pool = NULL;
	struct model *m = NULL;
	struct model_ctx *ctx = NULL;
	struct tok_vocab *v = NULL;
	struct smp *smp = NULL;
	int32_t *prompt = NULL, *hist = NULL, *pos = NULL, *seq = NULL;
	int8_t *want = NULL;
	float *logits = NULL;
	int n_prompt = 0;

	kern_init();
	if (ml_pool_init(&pool, (int)o.threads) != 0) {
		exit_code = fail("starting threads");
		goto done;
	}
	struct model_params mp = {.path = o.model, .layer_begin = 0, .layer_end = -1, .mmap = o.mmap};
	if (model_load(&m, &mp) != 0) {
		exit_code = fail(o.model);
		goto done;
	}
	const struct model_hparams *hp = model_hparams(m);
	if (tok_vocab_load(&v, model_gguf(m)) != 0) {
		exit_code = fail("loading the tokenizer");
		goto done;
	}

	if (o.prompt_ids) {
		n_prompt = parse_ids(o.prompt_ids, &prompt);
		if (n_prompt < 0) {
			exit_code = usage_error("--prompt-ids: expected comma-separated token ids, got '%s'%s",
						o.prompt_ids, "");
			goto done;
		}
	} else {
		size_t len = strlen(o.prompt), cap = len + 16, n = 0;
		prompt = malloc(cap * sizeof(int32_t));
		rc = prompt ? tok_encode(v, o.prompt, len, true, true, prompt, cap, &n) : ML_ERR_NOMEM;
		if (rc == ML_ERR_RANGE) {
			free(prompt);
			cap = n;
			prompt = malloc(cap * sizeof(int32_t));
			rc = prompt ? tok_encode(v, o.prompt, len, true, true, prompt, cap, &n) : ML_ERR_NOMEM;
		}
		if (rc != 0) {
			exit_code = fail("tokenizing the prompt");
			goto done;
		}
		n_prompt = (int)n;
	}
	if (n_prompt == 0) {
		fprintf(stderr, "mesh-llm generate: the prompt is empty (no tokens)\n");
		goto done;
	}
	for (int i = 0; i < n_prompt; i++) {
		if (prompt[i] < 0 || prompt[i] >= hp->n_vocab) {
			fprintf(stderr, "mesh-llm generate: prompt token id %d is outside the vocabulary [0, %d)\n",
				prompt[i], hp->n_vocab);
			exit_code = 2;
			goto done;
		}
	}

	long n_ctx = o.ctx_size;
	if (n_ctx == 0)
		n_ctx = hp->n_ctx_train < GEN_DEFAULT_CTX ? hp->n_ctx_train : GEN_DEFAULT_CTX;
	if (n_prompt > n_ctx) {
		fprintf(stderr, "mesh-llm generate: the prompt has %d tokens, the context only %ld (--ctx-size)\n",
			n_prompt, n_ctx);
		goto done;
	}
	const int n_batch = n_ctx < GEN_N_BATCH ? (int)n_ctx : GEN_N_BATCH;
	struct model_ctx_params cp = {.n_seq = 1, .n_ctx = (int)n_ctx, .n_batch = n_batch, .kv_type = o.kv_type};
	if (model_ctx_init_params(&ctx, m, pool, &cp) != 0) {
		exit_code = fail("allocating the context");
		goto done;
	}
	if (smp_init(&smp, &o.sp, hp->n_vocab) != 0) {
		exit_code = fail("sampler");
		goto done;
	}
	ML_INFO("prompt: %d tokens; generating up to %ld with temp %g, top-k %d, top-p %g, min-p %g, seed %llu, "
		"%ld threads, context %ld, %s KV cache",
		n_prompt, o.n_predict, (double)o.sp.temp, o.sp.top_k, (double)o.sp.top_p, (double)o.sp.min_p,
		(unsigned long long)o.sp.seed, o.threads, n_ctx, o.kv_type == MODEL_KV_F16 ? "F16" : "F32");

	hist = malloc((size_t)(n_prompt + o.n_predict + 1) * sizeof(int32_t));
	pos = malloc((size_t)n_batch * sizeof(int32_t));
	seq = calloc((size_t)n_batch, sizeof(int32_t));
	want = calloc((size_t)n_batch, 1);
	logits = malloc((size_t)hp->n_vocab * sizeof(float));
	if (!hist || !pos || !seq || !want || !logits) {
		fprintf(stderr, "mesh-llm generate: out of memory\n");
		goto done;
	}
	memcpy(hist, prompt, (size_t)n_prompt * sizeof(int32_t));

	/* Prompt, in batches; logits for its last token only. */
	const double t0 = ml_time_s();
	for (int b0 = 0; b0 < n_prompt; b0 += n_batch) {
		const int nb = n_prompt - b0 < n_batch ? n_prompt - b0 : n_batch;
		for (int i = 0; i < nb; i++) {
			pos[i] = b0 + i;
			want[i] = b0 + i == n_prompt - 1;
		}
		struct model_batch b = {.n_tokens = nb, .tokens = prompt + b0, .pos = pos, .seq = seq, .logits = want};
		if (model_forward(ctx, &b, logits) != 0) {
			exit_code = fail("running the prompt");
			goto done;
		}
	}
	const double t_prompt = ml_time_s() - t0;

	/* The detokenizer sees the prompt first (its output discarded), so
	 * the continuation's first piece keeps its leading space. */
	struct tok_stream ts;
	char text[512];
	tok_stream_init(&ts, v, false);
	for (int i = 0; i < n_prompt; i++)
		tok_stream_push(&ts, prompt[i], text, sizeof(text));

	int n_gen = 0, n_hist = n_prompt;
	const char *stop = "length";
	const double t1 = ml_time_s();
	while (n_gen < o.n_predict) {
		const int32_t tok = smp_sample(smp, logits, hist, n_hist);
		if (!o.ignore_eos && tok_is_eog(v, tok)) {
			stop = "end of generation token";
			break;
		}
		hist[n_hist++] = tok;
		n_gen++;
		if (o.ids) {
			printf(n_gen > 1 ? " %d" : "%d", tok);
		} else {
			int len = tok_stream_push(&ts, tok, text, sizeof(text));
			if (len > 0)
				fwrite(text, 1, (size_t)len, stdout);
		}
		fflush(stdout);
		if (n_gen == o.n_predict)
			break;
		if (n_hist > n_ctx) { /* no position left for this token */
			stop = "context full";
			break;
		}
		int32_t p = n_hist - 1, s0 = 0;
		int8_t w = 1;
		struct model_batch b = {.n_tokens = 1, .tokens = &tok, .pos = &p, .seq = &s0, .logits = &w};
		if (model_forward(ctx, &b, logits) != 0) {
			exit_code = fail("generating");
			goto done;
		}
	}
	const double t_gen = ml_time_s() - t1;
	if (!o.ids) {
		int len = tok_stream_flush(&ts, text, sizeof(text));
		if (len > 0)
			fwrite(text, 1, (size_t)len, stdout);
	}
	printf("\n");
	fflush(stdout);
	fprintf(stderr,
		"mesh-llm generate: prompt %d tokens in %.3f s (%.1f tokens/s); generated %d tokens in %.3f s "
		"(%.1f tokens/s); stopped: %s\n",
		n_prompt, t_prompt, t_prompt > 0 ? n_prompt / t_prompt : 0.0, n_gen, t_gen,
		t_gen > 0 ? n_gen / t_gen : 0.0, stop);
	exit_code = 0;
done:
	free(prompt);
	free(hist);
	free(pos);
	free(seq);
	free(want);
	free(logits);
	smp_free(smp);
	tok_vocab_free(v);
	model_ctx_free(ctx);
	model_free(m);
	ml_pool_free(pool);
	return exit_code;
}
