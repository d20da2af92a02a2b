/* Tests for the engine's stage_link (src/engine/eng_link*.h): the engine
 * running layers [0, a) itself and the rest through an in-process link of
 * one or two more stages gives exactly the tokens of the solo engine, for
 * F32 and quantized refdata models, with concurrent requests, chunked
 * prompts, prompt-cache reuse (KV truncation on every stage) and
 * cancellation. Run from the repository root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ml_err.h"
#include "engine/eng.h"
#include "engine/eng_link_loop.h"
#include "model/model.h"

#define MAX_TOK 256

struct coll {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int32_t tokens[MAX_TOK];
	int n_tokens;
	bool done;
	enum eng_finish finish;
	int n_cached;
	int err;
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

static void on_event(const struct eng_event *ev, void *user)
{
	struct coll *c = user;
	pthread_mutex_lock(&c->mu);
	if (ev->finish == ENG_FINISH_NONE) {
		if (c->n_tokens < MAX_TOK)
			c->tokens[c->n_tokens++] = ev->token;
	} else {
		c->done = true;
		c->finish = ev->finish;
		c->n_cached = ev->n_cached;
		c->err = ev->err;
		if (ev->finish == ENG_FINISH_ERROR)
			fprintf(stderr, "request failed: %s\n", ev->message ? ev->message : "?");
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static bool coll_wait(struct coll *c, int n_tokens)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 120;
	pthread_mutex_lock(&c->mu);
	int rc = 0;
	while (!c->done && (n_tokens <= 0 || c->n_tokens < n_tokens) && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
	bool ok = c->done || (n_tokens > 0 && c->n_tokens >= n_tokens);
	pthread_mutex_unlock(&c->mu);
	return ok;
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

static uint64_t submit(struct eng *e, const struct eng_request *r, struct coll *c)
{
	uint64_t id = 0;
	coll_init(c);
	assert_int_equal(eng_submit(e, r, on_event, c, &id), 0);
	return id;
}

/* |n_stages| 1: solo. Otherwise the engine keeps layers [0, bounds[0]) and
 * an in-process link runs the rest from bounds[0], bounds[1], ... The
 * engine's KV cache is |kv|; the link's stages take it from the setup. */
static struct eng *open_split(const char *path, int n_stages, const int *bounds,
                              enum model_kv_type kv)
{
	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.kv_type = kv;
	p.n_parallel = 4;
	p.n_ctx = 256;
	p.n_batch = 16; /* small: prompts are chunked and share steps with decoding */
	p.n_queue = 8;
	p.n_threads = 2;
	if (n_stages > 1) {
		assert_int_equal(eng_link_loop_new(&p.link, path, bounds, n_stages - 1), 0);
		p.layer_end = bounds[0];
		p.link_owned = true;
	}
	struct eng *e = NULL;
	int rc = eng_init(&e, &p);
	if (rc != 0)
		fprintf(stderr, "eng_init(%s, %d stages): %s: %s\n", path, n_stages,
		        ml_strerror(rc), ml_last_error());
	assert_int_equal(rc, 0);
	return e;
}

static int model_layers(const char *path)
{
	struct model *m = NULL;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	assert_int_equal(model_load(&m, &mp), 0);
	int n = model_hparams(m)->n_layer;
	model_free(m);
	return n;
}

enum { N_REQ = 6, GEN = 24 };

struct workload {
	int32_t prompts[N_REQ][128];
	int n_prompt[N_REQ];
	struct coll solo[N_REQ];
	/* second turn of request 0: its prompt, its answer, two more tokens */
	int32_t turn[200];
	int n_turn;
	struct coll solo_turn;
};

static void workload_make(struct workload *w, int n_vocab)
{
	static const int n_prompt[N_REQ] = {5, 64, 1, 37, 100, 9};
	for (int i = 0; i < N_REQ; i++) {
		w->n_prompt[i] = n_prompt[i];
		w->prompts[i][0] = 1;
		for (int j = 1; j < n_prompt[i]; j++)
			w->prompts[i][j] = 3 + (j * 97 + 13 * i) % (n_vocab - 3);
	}
}

/* Every request alone on the solo engine; then the second turn. */
static void workload_solo(struct workload *w, const char *path, enum model_kv_type kv)
{
	struct eng *e = open_split(path, 1, NULL, kv);
	for (int i = 0; i < N_REQ; i++) {
		struct eng_request r = greedy_req(w->prompts[i], w->n_prompt[i], GEN);
		submit(e, &r, &w->solo[i]);
		assert_true(coll_wait(&w->solo[i], 0));
		assert_int_equal(w->solo[i].finish, ENG_FINISH_LENGTH);
	}
	w->n_turn = 0;
	memcpy(w->turn, w->prompts[0], (size_t)w->n_prompt[0] * sizeof(int32_t));
	w->n_turn = w->n_prompt[0];
	memcpy(w->turn + w->n_turn, w->solo[0].tokens, GEN * sizeof(int32_t));
	w->n_turn += GEN;
	w->turn[w->n_turn++] = 13;
	w->turn[w->n_turn++] = 40;
	eng_free(e);
	/* a fresh engine: no cache */
	e = open_split(path, 1, NULL, kv);
	struct eng_request r = greedy_req(w->turn, w->n_turn, GEN);
	submit(e, &r, &w->solo_turn);
	assert_true(coll_wait(&w->solo_turn, 0));
	assert_int_equal(w->solo_turn.n_cached, 0);
	eng_free(e);
}

/* All requests at once on the split engine, then the second turn (which
 * reuses the cache of request 0's slot on every stage), then a cancelled
 * request followed by the same request again. */
static void workload_split(struct workload *w, const char *path, int n_stages, const int *bounds,
                           enum model_kv_type kv)
{
	struct eng *e = open_split(path, n_stages, bounds, kv);
	static struct coll cs[N_REQ];
	for (int i = 0; i < N_REQ; i++) {
		struct eng_request r = greedy_req(w->prompts[i], w->n_prompt[i], GEN);
		submit(e, &r, &cs[i]);
	}
	for (int i = 0; i < N_REQ; i++) {
		assert_true(coll_wait(&cs[i], 0));
		assert_int_equal(cs[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(cs[i].n_tokens, GEN);
		if (memcmp(cs[i].tokens, w->solo[i].tokens, GEN * sizeof(int32_t)) != 0) {
			fprintf(stderr, "%s, %d stages: request %d differs from solo\n", path,
			        n_stages, i);
			fail();
		}
		coll_destroy(&cs[i]);
	}

	/* request 0 again, then its next turn reuses its slot's cache */
	struct coll t;
	struct eng_request r = greedy_req(w->prompts[0], w->n_prompt[0], GEN);
	submit(e, &r, &t);
	assert_true(coll_wait(&t, 0));
	assert_memory_equal(t.tokens, w->solo[0].tokens, GEN * sizeof(int32_t));
	coll_destroy(&t);
	r = greedy_req(w->turn, w->n_turn, GEN);
	submit(e, &r, &t);
	assert_true(coll_wait(&t, 0));
	assert_int_equal(t.n_cached, w->n_prompt[0] + GEN - 1);
	assert_memory_equal(t.tokens, w->solo_turn.tokens, GEN * sizeof(int32_t));
	coll_destroy(&t);

	/* cancel request 1 after a few tokens: its KV is cleared everywhere */
	struct coll c1;
	r = greedy_req(w->prompts[1], w->n_prompt[1], GEN);
	uint64_t id = submit(e, &r, &c1);
	assert_true(coll_wait(&c1, 3));
	eng_cancel(e, id);
	assert_true(coll_wait(&c1, 0));
	coll_destroy(&c1);
	r = greedy_req(w->prompts[1], w->n_prompt[1], GEN);
	submit(e, &r, &c1);
	assert_true(coll_wait(&c1, 0));
	assert_memory_equal(c1.tokens, w->solo[1].tokens, GEN * sizeof(int32_t));
	coll_destroy(&c1);
	eng_free(e);
}

static void split_equals_solo_kv(const char *path, int n_vocab, enum model_kv_type kv)
{
	static struct workload w;
	memset(&w, 0, sizeof(w));
	int n_layer = model_layers(path);
	assert_true(n_layer >= 3);
	workload_make(&w, n_vocab);
	workload_solo(&w, path, kv);
	int two[1] = {n_layer / 2};
	workload_split(&w, path, 2, two, kv);
	int three[2] = {1, n_layer - 1};
	workload_split(&w, path, 3, three, kv);
	for (int i = 0; i < N_REQ; i++)
		coll_destroy(&w.solo[i]);
	coll_destroy(&w.solo_turn);
}

/* With the engine's default KV cache (F16). */
static void split_equals_solo(const char *path, int n_vocab)
{
	split_equals_solo_kv(path, n_vocab, MODEL_KV_F16);
}

static void test_eng_link_stories(void **state)
{
	(void)state;
	split_equals_solo("models/stories260K.gguf", 512);
}

static void test_eng_link_syn_f32(void **state)
{
	(void)state;
	split_equals_solo("../shared/refdata/models/syn-llama-F32.gguf", 512);
	split_equals_solo("../shared/refdata/models/syn-qwen2-F32.gguf", 459);
}

/* random weights, quantized: small logit margins show any difference */
static void test_eng_link_syn_quant(void **state)
{
	(void)state;
	split_equals_solo("../shared/refdata/models/syn-llama-Q8_0.gguf", 512);
	split_equals_solo("../shared/refdata/models/syn-qwen2-Q4_K_M.gguf", 459);
	split_equals_solo("../shared/refdata/models/syn-qwen3-Q8_0.gguf", 459);
}

/* --kv-type f32: the stages get the engine's F32 KV cache too. The two
 * types give other tokens for these models (small logit margins), so a
 * stage that kept another type than the engine would show here. */
static void test_eng_link_kv_f32(void **state)
{
	(void)state;
	static const char *const paths[] = {"../shared/refdata/models/syn-qwen2-Q4_K_M.gguf",
	                                    "../shared/refdata/models/syn-llama-Q8_0.gguf"};
	static const int n_vocab[] = {459, 512};
	for (int m = 0; m < 2; m++) {
		static struct workload w16, w32;
		memset(&w16, 0, sizeof(w16));
		memset(&w32, 0, sizeof(w32));
		workload_make(&w16, n_vocab[m]);
		workload_make(&w32, n_vocab[m]);
		workload_solo(&w16, paths[m], MODEL_KV_F16);
		workload_solo(&w32, paths[m], MODEL_KV_F32);
		int n_diff = 0;
		for (int i = 0; i < N_REQ; i++) {
			n_diff += memcmp(w16.solo[i].tokens, w32.solo[i].tokens,
			                 GEN * sizeof(int32_t)) != 0;
			coll_destroy(&w16.solo[i]);
			coll_destroy(&w32.solo[i]);
		}
		coll_destroy(&w16.solo_turn);
		coll_destroy(&w32.solo_turn);
		fprintf(stderr, "%s: %d of %d requests differ between F16 and F32 KV\n", paths[m],
		        n_diff, N_REQ);
		assert_true(n_diff > 0);
		split_equals_solo_kv(paths[m], n_vocab[m], MODEL_KV_F32);
	}
}

static void test_eng_link_bad_ranges(void **state)
{
	(void)state;
	const char *path = "../shared/refdata/models/syn-llama-F32.gguf";
	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.n_threads = 1;
	p.n_ctx = 64;
	struct eng *e = NULL;

	/* the engine keeps every layer: nothing left for the link */
	int b4[1] = {4};
	assert_int_equal(eng_link_loop_new(&p.link, path, b4, 1), 0);
	p.layer_end = 4;
	p.link_owned = true;
	assert_int_equal(eng_init(&e, &p), ML_ERR_INVALID);
	assert_null(e);

	/* the link starts elsewhere than where the engine stops */
	int b3[1] = {3};
	assert_int_equal(eng_link_loop_new(&p.link, path, b3, 1), 0);
	p.layer_end = 2;
	assert_int_equal(eng_init(&e, &p), ML_ERR_INVALID);
	assert_null(e);

	/* bounds out of order */
	int bad[2] = {2, 2};
	struct eng_link *l = NULL;
	assert_int_equal(eng_link_loop_new(&l, path, bad, 2), ML_ERR_INVALID);
	assert_null(l);
}

/* A link that dies after |fail_after| forwards, like a killed stage. */
struct flaky {
	struct eng_link link;
	struct eng_link *inner;
	int fail_after, n;
};

static int flaky_start(struct eng_link *l, const struct eng_link_setup *s)
{
	struct flaky *f = (struct flaky *)l;
	return f->inner->start(f->inner, s);
}

static int flaky_forward(struct eng_link *l, const struct eng_link_batch *b, const float *h,
                         float *logits)
{
	struct flaky *f = (struct flaky *)l;
	if (++f->n > f->fail_after)
		return ml_error(ML_ERR_CLOSED, "stage 2/2 stopped answering (test)");
	return f->inner->forward(f->inner, b, h, logits);
}

static void flaky_kv(struct eng_link *l, int seq, int pos)
{
	struct flaky *f = (struct flaky *)l;
	f->inner->kv_truncate(f->inner, seq, pos);
}

static void flaky_free(struct eng_link *l)
{
	struct flaky *f = (struct flaky *)l;
	f->inner->free(f->inner);
	free(f);
}

static struct eng_link *flaky_new(const char *path, int bound, int fail_after)
{
	struct flaky *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(eng_link_loop_new(&f->inner, path, &bound, 1), 0);
	f->fail_after = fail_after;
	f->link.start = flaky_start;
	f->link.forward = flaky_forward;
	f->link.kv_truncate = flaky_kv;
	f->link.free = flaky_free;
	return &f->link;
}

static void wait_link(struct eng *e, bool down)
{
	for (int i = 0; i < 6000; i++) {
		struct eng_stats st;
		eng_get_stats(e, &st);
		if (st.link_down == down)
			return;
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
	}
	fail_msg("the engine never saw the link %s", down ? "fail" : "come back");
}

/* A stage dies in the middle of four requests; the engine holds them, a
 * new plan (other ranges, a different host range, then the whole model on
 * the host) comes in, and every request completes with the solo tokens. */
static void test_eng_link_relink(void **state)
{
	(void)state;
	const char *path = "../shared/refdata/models/syn-qwen2-Q4_K_M.gguf";
	static struct workload w;
	memset(&w, 0, sizeof(w));
	workload_make(&w, 459);
	workload_solo(&w, path, MODEL_KV_F16);

	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.n_parallel = 4;
	p.n_ctx = 256;
	p.n_batch = 16;
	p.n_queue = 8;
	p.n_threads = 2;
	p.link = flaky_new(path, 2, 12);
	p.layer_end = 2;
	p.link_owned = true;
	p.link_wait_ms = 20000;
	struct eng *e = NULL;
	assert_int_equal(eng_init(&e, &p), 0);
	static struct coll cs[N_REQ];
	for (int i = 0; i < N_REQ; i++) {
		struct eng_request r = greedy_req(w.prompts[i], w.n_prompt[i], GEN);
		submit(e, &r, &cs[i]);
	}
	wait_link(e, true);
	/* the new plan moves the host's boundary too (2 -> 1) and dies again */
	struct eng_link *l2 = flaky_new(path, 1, 40);
	assert_int_equal(eng_relink(e, l2, 1, true), 0);
	wait_link(e, false);
	wait_link(e, true);
	/* the survivors hold the whole model: solo */
	assert_int_equal(eng_relink(e, NULL, 0, false), 0);
	for (int i = 0; i < N_REQ; i++) {
		assert_true(coll_wait(&cs[i], 0));
		assert_int_equal(cs[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(cs[i].n_tokens, GEN);
		assert_memory_equal(cs[i].tokens, w.solo[i].tokens, GEN * sizeof(int32_t));
		coll_destroy(&cs[i]);
	}
	/* a bad range is refused */
	assert_int_equal(eng_relink(e, NULL, 2, false), ML_ERR_INVALID);
	eng_free(e);

	/* no new plan in time: the requests fail with the link's error */
	p.link = flaky_new(path, 2, 3);
	p.link_wait_ms = 300;
	assert_int_equal(eng_init(&e, &p), 0);
	struct coll c;
	struct eng_request r = greedy_req(w.prompts[1], w.n_prompt[1], GEN);
	submit(e, &r, &c);
	assert_true(coll_wait(&c, 0));
	assert_int_equal(c.finish, ENG_FINISH_ERROR);
	coll_destroy(&c);
	eng_free(e);
	for (int i = 0; i < N_REQ; i++)
		coll_destroy(&w.solo[i]);
	coll_destroy(&w.solo_turn);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_eng_link_bad_ranges), cmocka_unit_test(test_eng_link_stories),
	    cmocka_unit_test(test_eng_link_syn_f32),    cmocka_unit_test(test_eng_link_syn_quant),
	    cmocka_unit_test(test_eng_link_relink),     cmocka_unit_test(test_eng_link_kv_f32),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
