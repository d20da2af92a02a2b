/* Tests for src/engine: the engine thread on real models.
 *
 * Golden data: llama.cpp's greedy continuations in ../shared/refdata. The
 * engine must reproduce them, produce the same tokens for a request whether
 * it runs alone or among others, cut stop strings (also ones spanning
 * tokens) without ever emitting them, and handle max_tokens, a full wait
 * queue, a prompt that does not fit, cancellation and shutdown. Run from the
 * repository root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ml_err.h"
#include "engine/eng.h"
#include "model/model.h"
#include "tokenizer/tok.h"

#define STORIES "models/stories260K.gguf"
#define STORIES_REF "../shared/refdata/stories260K.gguf.json"
#define SYN_LLAMA "../shared/refdata/models/syn-llama-F32.gguf"
#define SYN_LLAMA_REF "../shared/refdata/syn-llama-F32.gguf.json"
#define SYN_QWEN2 "../shared/refdata/models/syn-qwen2-F32.gguf"
#define SYN_QWEN2_REF "../shared/refdata/syn-qwen2-F32.gguf.json"

#define MAX_TOK 1024
#define MAX_TEXT 16384

/* ---- collecting a request's events --------------------------------- */

struct coll {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t id;
	int32_t tokens[MAX_TOK];
	int n_tokens;
	char text[MAX_TEXT];
	size_t n_text;
	int n_events;
	bool done;
	bool bad; /* an event broke the contract */
	enum eng_finish finish;
	int n_prompt;
	int n_completion;
	int n_cached;
	int err;
	/* gate: the first token event blocks the engine thread until opened */
	bool gated;
	bool started;
	bool open;
	/* at this request's first token, note how many tokens |watch| has */
	struct coll *watch;
	int watch_at;
};

static void coll_init(struct coll *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
}

static void coll_destroy(struct coll *c)
{
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
}

/* Whole, valid UTF-8 characters only. */
static bool utf8_whole(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		int k = p[i] < 0x80             ? 0
		        : (p[i] & 0xE0) == 0xC0 ? 1
		        : (p[i] & 0xF0) == 0xE0 ? 2
		        : (p[i] & 0xF8) == 0xF0 ? 3
		                                : -1;
		if (k < 0 || i + (size_t)k >= n)
			return false;
		for (int j = 1; j <= k; j++)
			if ((p[i + (size_t)j] & 0xC0) != 0x80)
				return false;
		i += (size_t)k + 1;
	}
	return true;
}

static void on_event(const struct eng_event *ev, void *user)
{
	struct coll *c = user;
	pthread_mutex_lock(&c->mu);
	if (c->done || !ev->text || (c->id && ev->id != c->id) || !utf8_whole(ev->text, ev->len))
		c->bad = true;
	c->n_events++;
	if (c->n_text + ev->len < MAX_TEXT) {
		memcpy(c->text + c->n_text, ev->text, ev->len);
		c->n_text += ev->len;
		c->text[c->n_text] = '\0';
	} else {
		c->bad = true;
	}
	if (ev->finish == ENG_FINISH_NONE && c->n_tokens == 0 && c->watch) {
		pthread_mutex_lock(&c->watch->mu);
		c->watch_at = c->watch->n_tokens;
		pthread_mutex_unlock(&c->watch->mu);
	}
	if (ev->finish == ENG_FINISH_NONE) {
		if (ev->token < 0 || c->n_tokens >= MAX_TOK)
			c->bad = true;
		else
			c->tokens[c->n_tokens++] = ev->token;
	} else {
		if (ev->token != -1)
			c->bad = true;
		c->done = true;
		c->finish = ev->finish;
		c->n_prompt = ev->n_prompt;
		c->n_completion = ev->n_completion;
		c->n_cached = ev->n_cached;
		c->err = ev->err;
	}
	pthread_cond_broadcast(&c->cv);
	if (c->gated && ev->finish == ENG_FINISH_NONE) {
		c->started = true;
		pthread_cond_broadcast(&c->cv);
		while (!c->open)
			pthread_cond_wait(&c->cv, &c->mu);
	}
	pthread_mutex_unlock(&c->mu);
}

/* Waits (at most 60 s) until |c| has its final event, or until it has
 * started when |started_only|. */
static bool coll_wait(struct coll *c, bool started_only)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 60;
	pthread_mutex_lock(&c->mu);
	int rc = 0;
	while (!(started_only ? (c->started || c->done) : c->done) && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
	bool ok = started_only ? (c->started || c->done) : c->done;
	pthread_mutex_unlock(&c->mu);
	return ok;
}

static void coll_open(struct coll *c)
{
	pthread_mutex_lock(&c->mu);
	c->open = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static struct eng_request greedy_req(const int32_t *prompt, int n, int max_tokens)
{
	struct eng_request r;
	memset(&r, 0, sizeof(r));
	r.prompt = prompt;
	r.n_prompt = n;
	r.max_tokens = max_tokens;
	r.sampling = smp_default_params();
	r.sampling.temp = 0.0f;
	r.ignore_eos = true;
	return r;
}

static int submit(struct eng *e, const struct eng_request *r, struct coll *c)
{
	uint64_t id = 0;
	pthread_mutex_lock(&c->mu);
	int rc = eng_submit(e, r, on_event, c, &id);
	if (rc == 0)
		c->id = id;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* Runs one request to its end. */
static void run_one(struct eng *e, const struct eng_request *r, struct coll *c)
{
	coll_init(c);
	assert_int_equal(submit(e, r, c), 0);
	assert_true(coll_wait(c, false));
	assert_false(c->bad);
}

static struct eng *open_engine(const char *path, int n_parallel, int n_ctx, int n_batch,
                               int n_queue)
{
	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.n_parallel = n_parallel;
	p.n_ctx = n_ctx;
	p.n_batch = n_batch;
	p.n_queue = n_queue;
	p.n_threads = 2;
	struct eng *e = NULL;
	int rc = eng_init(&e, &p);
	if (rc != 0)
		fprintf(stderr, "eng_init(%s): %s: %s\n", path, ml_strerror(rc), ml_last_error());
	assert_int_equal(rc, 0);
	return e;
}

/* ---- reference data ------------------------------------------------- */

struct ref_prompt {
	int32_t ids[128];
	int n_ids;
	int32_t greedy[128];
	double margin[128];
	int n_greedy;
	char text[4096]; /* greedy_text, text prompts only */
};

static int json_ids(json_t *arr, int32_t *out, int cap)
{
	size_t n = json_array_size(arr);
	assert_true(n > 0 && n <= (size_t)cap);
	for (size_t i = 0; i < n; i++)
		out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
	return (int)n;
}

/* Loads entry |idx| of "prompts" (or of "text_prompts" when |text|). */
static void ref_load(const char *path, bool text, size_t idx, struct ref_prompt *rp)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (!root)
		fprintf(stderr, "%s:%d: %s\n", path, jerr.line, jerr.text);
	assert_non_null(root);
	json_t *p = json_array_get(json_object_get(root, text ? "text_prompts" : "prompts"), idx);
	assert_non_null(p);
	memset(rp, 0, sizeof(*rp));
	rp->n_ids = json_ids(json_object_get(p, "ids"), rp->ids, 128);
	rp->n_greedy = json_ids(json_object_get(p, "greedy_ids"), rp->greedy, 128);
	json_t *m = json_object_get(p, "greedy_top2_margin");
	for (int i = 0; i < rp->n_greedy; i++)
		rp->margin[i] = json_number_value(json_array_get(m, (size_t)i));
	json_t *t = json_object_get(p, "greedy_text");
	if (t)
		snprintf(rp->text, sizeof(rp->text), "%s", json_string_value(t));
	json_decref(root);
}

/* ---- tests ---------------------------------------------------------- */

static void test_eng_accessors(void **state)
{
	(void)state;
	struct eng *e = open_engine(STORIES, 2, 128, 64, 4);
	assert_string_equal(eng_model_name(e), "stories260K");
	assert_int_equal(eng_n_ctx(e), 128);
	assert_non_null(eng_vocab(e));
	assert_int_equal(eng_hparams(e)->n_vocab, 512);
	assert_int_equal(tok_n_vocab(eng_vocab(e)), 512);
	eng_free(e);
	eng_free(NULL);

	struct eng_params p = eng_default_params();
	p.model_path = "models/no-such-model.gguf";
	e = (struct eng *)&p;
	assert_true(eng_init(&e, &p) < 0);
	assert_null(e);
}

/* "Once upon a time" + 64 greedy tokens: ids and text as llama.cpp. */
static void test_eng_greedy_matches_reference(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	assert_int_equal(rp.n_greedy, 64);
	struct eng *e = open_engine(STORIES, 4, 512, 512, 16);
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 64);
	struct coll c;
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_int_equal(c.n_prompt, rp.n_ids);
	assert_int_equal(c.n_completion, 64);
	assert_int_equal(c.n_tokens, 64);
	assert_memory_equal(c.tokens, rp.greedy, 64 * sizeof(int32_t));
	assert_string_equal(c.text, rp.text);
	coll_destroy(&c);

	/* The id prompts, all three at once. */
	struct ref_prompt ids[3];
	struct coll cs[3];
	for (int i = 0; i < 3; i++) {
		ref_load(STORIES_REF, false, (size_t)i, &ids[i]);
		coll_init(&cs[i]);
		r = greedy_req(ids[i].ids, ids[i].n_ids, ids[i].n_greedy);
		assert_int_equal(submit(e, &r, &cs[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_true(coll_wait(&cs[i], false));
		assert_false(cs[i].bad);
		assert_int_equal(cs[i].n_tokens, ids[i].n_greedy);
		assert_memory_equal(cs[i].tokens, ids[i].greedy,
		                    (size_t)ids[i].n_greedy * sizeof(int32_t));
		coll_destroy(&cs[i]);
	}
	eng_free(e);
}

/* The KV cache is F16 unless asked otherwise; F32 (what the reference
 * was made with) is still there, and both give the reference tokens on
 * stories260K. An unknown type is refused. */
static void test_eng_kv_type(void **state)
{
	(void)state;
	assert_int_equal(eng_default_params().kv_type, MODEL_KV_F16);
	/* `mesh-llm generate` takes the model's default: the same type, so its
	 * greedy output equals the API's (tests/e2e/openai_test.mjs) */
	assert_int_equal(model_ctx_default_params().kv_type, MODEL_KV_F16);
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	static const enum model_kv_type types[] = {MODEL_KV_F16, MODEL_KV_F32};
	for (int t = 0; t < 2; t++) {
		struct eng_params p = eng_default_params();
		p.model_path = STORIES;
		p.n_parallel = 1;
		p.n_ctx = 256;
		p.n_threads = 2;
		p.kv_type = types[t];
		struct eng *e = NULL;
		assert_int_equal(eng_init(&e, &p), 0);
		assert_int_equal(eng_kv_type(e), types[t]);
		struct eng_request r = greedy_req(rp.ids, rp.n_ids, 64);
		struct coll c;
		run_one(e, &r, &c);
		assert_int_equal(c.n_tokens, 64);
		assert_memory_equal(c.tokens, rp.greedy, 64 * sizeof(int32_t));
		coll_destroy(&c);
		eng_free(e);
	}
	struct eng_params p = eng_default_params();
	p.model_path = STORIES;
	p.kv_type = (enum model_kv_type)7;
	struct eng *e = NULL;
	assert_int_equal(eng_init(&e, &p), ML_ERR_INVALID);
	assert_null(e);
}

/* A refdata synthetic model: greedy tokens agree while the reference's
 * top-2 margin is clear of float rounding. */
static void test_eng_greedy_syn_llama(void **state)
{
	(void)state;
	struct eng *e = open_engine(SYN_LLAMA, 3, 512, 512, 16);
	struct ref_prompt rp[3];
	struct coll cs[3];
	for (int i = 0; i < 3; i++) {
		ref_load(SYN_LLAMA_REF, false, (size_t)i, &rp[i]);
		coll_init(&cs[i]);
		struct eng_request r = greedy_req(rp[i].ids, rp[i].n_ids, rp[i].n_greedy);
		assert_int_equal(submit(e, &r, &cs[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_true(coll_wait(&cs[i], false));
		assert_false(cs[i].bad);
		assert_int_equal(cs[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(cs[i].n_tokens, rp[i].n_greedy);
		int same = 0;
		while (same < rp[i].n_greedy && cs[i].tokens[same] == rp[i].greedy[same])
			same++;
		int clear = 0;
		while (clear < rp[i].n_greedy && rp[i].margin[clear] > 1e-3)
			clear++;
		printf("syn-llama prompt %d: %d of %d greedy tokens as llama.cpp (margin clear for "
		       "%d)\n",
		       i, same, rp[i].n_greedy, clear);
		assert_true(same >= clear);
		coll_destroy(&cs[i]);
	}
	eng_free(e);
}

/* A byte-level BPE model (random weights emit stray bytes: every event
 * must still carry whole characters), three prompts at once. */
static void test_eng_greedy_syn_qwen2(void **state)
{
	(void)state;
	struct eng *e = open_engine(SYN_QWEN2, 4, 512, 32, 16);
	struct ref_prompt rp[3];
	struct coll cs[3];
	for (int i = 0; i < 3; i++) {
		ref_load(SYN_QWEN2_REF, false, (size_t)i, &rp[i]);
		coll_init(&cs[i]);
		struct eng_request r = greedy_req(rp[i].ids, rp[i].n_ids, rp[i].n_greedy);
		assert_int_equal(submit(e, &r, &cs[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_true(coll_wait(&cs[i], false));
		assert_false(cs[i].bad);
		assert_int_equal(cs[i].n_tokens, rp[i].n_greedy);
		int same = 0;
		while (same < rp[i].n_greedy && cs[i].tokens[same] == rp[i].greedy[same])
			same++;
		int clear = 0;
		while (clear < rp[i].n_greedy && rp[i].margin[clear] > 1e-3)
			clear++;
		printf("syn-qwen2 prompt %d: %d of %d greedy tokens as llama.cpp (margin clear for "
		       "%d)\n",
		       i, same, rp[i].n_greedy, clear);
		assert_true(same >= clear);
		coll_destroy(&cs[i]);
	}
	eng_free(e);
}

/* Eight requests, four slots, a small batch (so prompts are chunked and
 * share steps with decoding slots): every request gets exactly the tokens
 * it gets alone. One of them samples with temperature and a seed. */
static void concurrent_equals_alone(const char *model, int n_vocab)
{
	enum { N = 8, GEN = 40 };
	static int32_t prompts[N][160];
	int n_prompt[N] = {5, 64, 1, 5, 100, 150, 37, 9};
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	memcpy(prompts[0], rp.ids, 5 * sizeof(int32_t));
	for (int i = 1; i < N; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < n_prompt[i]; j++)
			prompts[i][j] = 3 + (j * 97 + 13 * i) % (n_vocab - 3);
	}
	struct eng *e = open_engine(model, 4, 256, 16, 8);
	struct eng_request reqs[N];
	for (int i = 0; i < N; i++) {
		reqs[i] = greedy_req(prompts[i], n_prompt[i], GEN - i);
		if (i == 3) {
			reqs[i].sampling.temp = 0.9f;
			reqs[i].sampling.seed = 1234;
		}
	}
	static struct coll alone[N], together[N];
	for (int i = 0; i < N; i++)
		run_one(e, &reqs[i], &alone[i]);
	for (int i = 0; i < N; i++) {
		coll_init(&together[i]);
		assert_int_equal(submit(e, &reqs[i], &together[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		assert_true(coll_wait(&together[i], false));
		assert_false(together[i].bad);
		assert_int_equal(alone[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(together[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(together[i].n_tokens, GEN - i);
		assert_int_equal(alone[i].n_tokens, GEN - i);
		assert_memory_equal(together[i].tokens, alone[i].tokens,
		                    (size_t)(GEN - i) * sizeof(int32_t));
		assert_string_equal(together[i].text, alone[i].text);
		coll_destroy(&alone[i]);
		coll_destroy(&together[i]);
	}
	eng_free(e);
}

static void test_eng_concurrent_equals_alone(void **state)
{
	(void)state;
	concurrent_equals_alone(STORIES, 512);
	/* random weights, quantized: small logit margins show any dependence
	 * of a row's arithmetic on the batch around it */
	concurrent_equals_alone("../shared/refdata/models/syn-llama-Q8_0.gguf", 512);
	concurrent_equals_alone("../shared/refdata/models/syn-qwen2-Q4_K_M.gguf", 459);
}

/* A long prompt is processed in chunks of what n_batch leaves, and the
 * generating slot gets a token at every one of those steps. Tiny batches
 * still give the reference continuation. */
static void test_eng_chunked_prefill(void **state)
{
	(void)state;
	static int32_t prompt[150];
	prompt[0] = 1;
	for (int j = 1; j < 150; j++)
		prompt[j] = 3 + (j * 89 + 5) % 447;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 2, 256, 16, 4);
	struct coll a, b;
	coll_init(&a);
	coll_init(&b);
	a.gated = true;
	b.watch = &a;
	struct eng_request ra = greedy_req(rp.ids, rp.n_ids, 100);
	struct eng_request rb = greedy_req(prompt, 150, 4);
	assert_int_equal(submit(e, &ra, &a), 0);
	assert_true(coll_wait(&a, true));
	assert_int_equal(submit(e, &rb, &b), 0);
	coll_open(&a);
	assert_true(coll_wait(&b, false));
	assert_true(coll_wait(&a, false));
	assert_false(a.bad);
	assert_false(b.bad);
	/* 150 prompt tokens at 15 per step: 10 steps, each with a token for a */
	assert_true(b.watch_at >= 10 && b.watch_at <= 12);
	assert_memory_equal(a.tokens, rp.greedy, 64 * sizeof(int32_t));
	coll_destroy(&a);
	coll_destroy(&b);
	eng_free(e);

	for (int nb = 1; nb <= 3; nb++) {
		e = open_engine(STORIES, 1, 128, nb, 4);
		struct eng_request r = greedy_req(rp.ids, rp.n_ids, 16);
		run_one(e, &r, &a);
		assert_memory_equal(a.tokens, rp.greedy, 16 * sizeof(int32_t));
		coll_destroy(&a);
		eng_free(e);
	}
}

/* A finished request's KV stays in its slot; the next turn of the same
 * conversation reuses it and gets what a fresh engine gives. */
static void test_eng_prompt_cache(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 2, 256, 64, 4);
	struct eng *fresh = open_engine(STORIES, 1, 256, 64, 4);
	struct coll a, b, b0, c, d;
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 20);
	run_one(e, &r, &a);
	assert_int_equal(a.n_cached, 0);
	assert_memory_equal(a.tokens, rp.greedy, 20 * sizeof(int32_t));

	/* an unrelated request takes the other (least recently used) slot */
	int32_t other[3] = {1, 50, 60};
	r = greedy_req(other, 3, 8);
	run_one(e, &r, &d);
	assert_int_equal(d.n_cached, 0);

	/* next turn: prompt, answer, two more tokens */
	int32_t turn[64];
	int n = 0;
	memcpy(turn, rp.ids, (size_t)rp.n_ids * sizeof(int32_t));
	n = rp.n_ids;
	memcpy(turn + n, a.tokens, 20 * sizeof(int32_t));
	n += 20;
	turn[n++] = 13;
	turn[n++] = 400;
	r = greedy_req(turn, n, 24);
	run_one(e, &r, &b);
	assert_int_equal(b.n_cached, rp.n_ids + 19); /* the last answer token was never decoded */
	run_one(fresh, &r, &b0);
	assert_int_equal(b0.n_cached, 0);
	assert_memory_equal(b.tokens, b0.tokens, 24 * sizeof(int32_t));

	/* the very same prompt again: all but its last token come from the cache */
	r = greedy_req(turn, n, 24);
	run_one(e, &r, &c);
	assert_int_equal(c.n_cached, n - 1);
	assert_memory_equal(c.tokens, b0.tokens, 24 * sizeof(int32_t));
	coll_destroy(&a);

	/* a prompt sharing only BOS with both caches overwrites the least
	 * recently used one (d's) */
	r = greedy_req(rp.ids, rp.n_ids, 20);
	run_one(e, &r, &a);
	assert_int_equal(a.n_cached, 1);
	assert_memory_equal(a.tokens, rp.greedy, 20 * sizeof(int32_t));
	coll_destroy(&c);
	r = greedy_req(turn, n, 4);
	run_one(e, &r, &c);
	assert_int_equal(c.n_cached, n - 1);

	struct eng_stats st;
	eng_get_stats(e, &st);
	assert_int_equal(st.n_parallel, 2);
	assert_int_equal(st.n_active, 0);
	assert_int_equal(st.n_queued, 0);
	assert_int_equal(st.n_requests, 6);
	assert_int_equal(st.n_generated, 20 + 8 + 24 + 24 + 20 + 4);
	assert_int_equal(st.n_prompt_tokens, (uint64_t)(rp.n_ids * 2 + 3 + n * 3));
	assert_int_equal(st.n_cached_tokens, (uint64_t)(rp.n_ids + 19 + 1 + 2 * (n - 1)));
	assert_true(st.n_steps > 0 && st.busy_s > 0);
	assert_int_equal(st.n_step_tokens,
	                 st.n_prompt_tokens - st.n_cached_tokens + st.n_generated - st.n_requests);
	coll_destroy(&a);
	coll_destroy(&b);
	coll_destroy(&b0);
	coll_destroy(&c);
	coll_destroy(&d);
	eng_free(fresh);
	eng_free(e);
}

static void test_eng_stop_strings(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 2, 256, 64, 4);
	struct coll c;

	/* Spans tokens ("little" / " girl"): text ends just before it. */
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 64);
	r.stop[0] = "tle gir";
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_STOP);
	assert_string_equal(c.text, ", there was a lit");
	assert_true(c.n_completion < 64);
	coll_destroy(&c);

	/* Earliest of several; the stop string is a whole later sentence. */
	r.stop[0] = "She loved";
	r.stop[1] = "Lily";
	r.stop[2] = NULL;
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_STOP);
	assert_string_equal(c.text, ", there was a little girl named ");
	coll_destroy(&c);

	/* Partial matches ("Lily" then "." not "!") are held back and then
	 * released: the whole continuation comes out. */
	r.stop[0] = "Lily!";
	r.stop[1] = "park,";
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_string_equal(c.text, rp.text);
	assert_int_equal(c.n_tokens, 64);
	coll_destroy(&c);

	/* Stop at the very first character. */
	r.stop[0] = ",";
	r.stop[1] = NULL;
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_STOP);
	assert_int_equal(c.n_text, 0);
	assert_int_equal(c.n_completion, 1);
	coll_destroy(&c);

	/* Held text at max_tokens is released with the final event: after 2
	 * tokens the text is ", there"; "there is" may still come. */
	r = greedy_req(rp.ids, rp.n_ids, 2);
	r.stop[0] = "there is";
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_int_equal(c.n_completion, 2);
	assert_true(c.n_text > 0);
	assert_memory_equal(c.text, rp.text, c.n_text);
	coll_destroy(&c);
	eng_free(e);
}

static void test_eng_max_tokens_and_eos(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 1, 512, 512, 4);
	struct coll c;
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 5);
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_int_equal(c.n_tokens, 5);
	assert_int_equal(c.n_completion, 5);
	assert_memory_equal(c.tokens, rp.greedy, 5 * sizeof(int32_t));
	coll_destroy(&c);

	/* Without ignore_eos a story ends with EOS (STOP) or runs to the limit. */
	r = greedy_req(rp.ids, rp.n_ids, 400);
	r.ignore_eos = false;
	run_one(e, &r, &c);
	assert_true(c.finish == ENG_FINISH_STOP || c.finish == ENG_FINISH_LENGTH);
	if (c.finish == ENG_FINISH_STOP) {
		/* the EOS token is counted but not part of the text events */
		assert_int_equal(c.n_completion, c.n_tokens + 1);
		for (int i = 0; i < c.n_tokens; i++)
			assert_false(tok_is_eog(eng_vocab(e), c.tokens[i]));
	}
	coll_destroy(&c);
	eng_free(e);
}

/* Context full -> LENGTH; prompt + 1 over the context -> ML_ERR_RANGE. */
static void test_eng_context_limits(void **state)
{
	(void)state;
	int32_t prompt[64];
	prompt[0] = 1;
	for (int i = 1; i < 64; i++)
		prompt[i] = 3 + (i * 31) % 400;
	struct eng *e = open_engine(STORIES, 2, 64, 32, 4);
	struct coll c;
	coll_init(&c);
	struct eng_request r = greedy_req(prompt, 64, 10);
	assert_int_equal(submit(e, &r, &c), ML_ERR_RANGE);
	assert_non_null(strstr(ml_last_error(), "64"));
	r.n_prompt = 0;
	assert_int_equal(submit(e, &r, &c), ML_ERR_INVALID);
	r.n_prompt = 3;
	prompt[1] = 512;
	assert_int_equal(submit(e, &r, &c), ML_ERR_INVALID);
	prompt[1] = -1;
	assert_int_equal(submit(e, &r, &c), ML_ERR_INVALID);
	prompt[1] = 34;
	coll_destroy(&c);

	r = greedy_req(prompt, 63, 10);
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_int_equal(c.n_completion, 1);
	coll_destroy(&c);

	r = greedy_req(prompt, 50, 0);
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_int_equal(c.n_completion, 14);
	coll_destroy(&c);
	eng_free(e);
}

/* One slot, one waiting place: the third request is refused. */
static void test_eng_busy(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 1, 256, 64, 1);
	struct coll a, b, c;
	coll_init(&a);
	coll_init(&b);
	coll_init(&c);
	a.gated = true;
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 16);
	assert_int_equal(submit(e, &r, &a), 0);
	assert_true(coll_wait(&a, true)); /* a holds the slot */
	assert_int_equal(submit(e, &r, &b), 0);
	assert_int_equal(submit(e, &r, &c), ML_ERR_BUSY);
	coll_open(&a);
	assert_true(coll_wait(&a, false));
	assert_true(coll_wait(&b, false));
	assert_int_equal(a.finish, ENG_FINISH_LENGTH);
	assert_int_equal(b.finish, ENG_FINISH_LENGTH);
	assert_memory_equal(a.tokens, b.tokens, 16 * sizeof(int32_t));
	/* room again */
	coll_destroy(&c);
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	coll_destroy(&a);
	coll_destroy(&b);
	coll_destroy(&c);
	eng_free(e);

	/* n_queue 0: nothing waits */
	e = open_engine(STORIES, 1, 256, 64, 0);
	coll_init(&a);
	coll_init(&b);
	a.gated = true;
	assert_int_equal(submit(e, &r, &a), 0);
	assert_true(coll_wait(&a, true));
	assert_int_equal(submit(e, &r, &b), ML_ERR_BUSY);
	coll_open(&a);
	assert_true(coll_wait(&a, false));
	coll_destroy(&a);
	coll_destroy(&b);
	eng_free(e);
}

/* Cancelling a running request frees its slot at once (the next request
 * gets the same tokens as on a fresh engine); a waiting one is dropped. */
static void test_eng_cancel(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 1, 512, 64, 4);
	struct coll a, b, c;
	coll_init(&a);
	coll_init(&b);
	a.gated = true;
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 0);
	assert_int_equal(submit(e, &r, &a), 0);
	assert_true(coll_wait(&a, true));
	assert_int_equal(submit(e, &r, &b), 0);
	eng_cancel(e, b.id);
	eng_cancel(e, a.id);
	eng_cancel(e, 999999); /* unknown: ignored */
	coll_open(&a);
	assert_true(coll_wait(&a, false));
	assert_true(coll_wait(&b, false));
	assert_false(a.bad);
	assert_false(b.bad);
	assert_int_equal(a.finish, ENG_FINISH_CANCELLED);
	assert_int_equal(b.finish, ENG_FINISH_CANCELLED);
	assert_true(a.n_tokens < 100);
	assert_int_equal(b.n_tokens, 0);

	r = greedy_req(rp.ids, rp.n_ids, 32);
	run_one(e, &r, &c);
	assert_int_equal(c.finish, ENG_FINISH_LENGTH);
	assert_memory_equal(c.tokens, rp.greedy, 32 * sizeof(int32_t));
	coll_destroy(&a);
	coll_destroy(&b);
	coll_destroy(&c);
	eng_free(e);
}

/* eng_free() with requests running and waiting: all end CANCELLED. */
static void test_eng_free_cancels(void **state)
{
	(void)state;
	struct ref_prompt rp;
	ref_load(STORIES_REF, true, 0, &rp);
	struct eng *e = open_engine(STORIES, 2, 512, 64, 4);
	struct coll cs[4];
	struct eng_request r = greedy_req(rp.ids, rp.n_ids, 0);
	for (int i = 0; i < 4; i++) {
		coll_init(&cs[i]);
		assert_int_equal(submit(e, &r, &cs[i]), 0);
	}
	eng_free(e);
	for (int i = 0; i < 4; i++) {
		assert_true(cs[i].done);
		assert_false(cs[i].bad);
		assert_true(cs[i].finish == ENG_FINISH_CANCELLED ||
		            cs[i].finish == ENG_FINISH_LENGTH);
		coll_destroy(&cs[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_eng_accessors),
	    cmocka_unit_test(test_eng_greedy_matches_reference),
	    cmocka_unit_test(test_eng_kv_type),
	    cmocka_unit_test(test_eng_greedy_syn_llama),
	    cmocka_unit_test(test_eng_greedy_syn_qwen2),
	    cmocka_unit_test(test_eng_concurrent_equals_alone),
	    cmocka_unit_test(test_eng_chunked_prefill),
	    cmocka_unit_test(test_eng_prompt_cache),
	    cmocka_unit_test(test_eng_stop_strings),
	    cmocka_unit_test(test_eng_max_tokens_and_eos),
	    cmocka_unit_test(test_eng_context_limits),
	    cmocka_unit_test(test_eng_busy),
	    cmocka_unit_test(test_eng_cancel),
	    cmocka_unit_test(test_eng_free_cancels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
