/* In-process tests of src/mesh/mesh_stage.c over real QUIC on loopback:
 * a host engine and one or two worker stages (three mesh nodes on one
 * event loop, run by a loop thread) give exactly the solo engine's greedy
 * tokens for concurrent requests; no weight bytes travel while the stages
 * load; a stage whose file is another model refuses the plan with a clear
 * reason; the fingerprint tells models apart. Run from the repository root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "engine/eng.h"
#include "engine/eng_link.h"
#include "gguf/gguf.h"
#include "mesh/mesh.h"
#include "mesh/mesh_stage.h"
#include "model/model.h"

#define F32_MODEL "../shared/refdata/models/syn-llama-F32.gguf"
#define Q8_MODEL "../shared/refdata/models/syn-llama-Q8_0.gguf"
#define QWEN_Q4 "../shared/refdata/models/syn-qwen2-Q4_K_M.gguf"

static struct event_base *base;

struct node {
	struct mesh *m;
	struct net_ident id;
	struct mesh_stage_worker *w;
};

static void on_stream(struct mesh *m, struct mesh_stream *s, uint8_t type,
                      const uint8_t peer[NET_ID_LEN], void *u)
{
	(void)m;
	(void)peer;
	struct node *n = u;
	if (type == NET_STREAM_STAGE && n->w)
		mesh_stage_worker_accept(n->w, s);
}

static void node_start(struct node *n, uint8_t seed, const char *token)
{
	memset(n, 0, sizeof(*n));
	uint8_t s[32];
	memset(s, seed, sizeof(s));
	assert_int_equal(net_ident_from_seed(&n->id, s), 0);
	struct mesh_config cfg;
	mesh_default_config(&cfg);
	cfg.ident = &n->id;
	cfg.bind_host = "127.0.0.1";
	cfg.cb.on_stream = on_stream;
	cfg.user = n;
	if (token) {
		cfg.join = &token;
		cfg.n_join = 1;
	}
	assert_int_equal(mesh_new(&n->m, base, &cfg), 0);
}

/* ---- the loop thread -------------------------------------------------- */

static pthread_t loop_thread;
static volatile int loop_stop;

static void on_tick(evutil_socket_t fd, short w, void *a)
{
	(void)fd;
	(void)w;
	if (loop_stop)
		event_base_loopbreak(a);
}

static void *loop_main(void *a)
{
	(void)a;
	struct event *t = event_new(base, -1, EV_PERSIST, on_tick, base);
	struct timeval tv = {0, 5000};
	event_add(t, &tv);
	event_base_dispatch(base);
	event_free(t);
	return NULL;
}

static void loop_start(void)
{
	loop_stop = 0;
	assert_int_equal(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void loop_end(void)
{
	loop_stop = 1;
	pthread_join(loop_thread, NULL);
}

/* Runs fn(arg) on the loop thread and waits for it. */
struct on_loop_job {
	void (*fn)(void *);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

static void on_loop_cb(evutil_socket_t fd, short w, void *u)
{
	(void)fd;
	(void)w;
	struct on_loop_job *j = u;
	j->fn(j->arg);
	pthread_mutex_lock(&j->mu);
	j->done = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

static void on_loop(void (*fn)(void *), void *arg)
{
	struct on_loop_job j = {.fn = fn, .arg = arg};
	pthread_mutex_init(&j.mu, NULL);
	pthread_cond_init(&j.cv, NULL);
	struct timeval tv = {0, 0};
	assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, on_loop_cb, &j, &tv), 0);
	pthread_mutex_lock(&j.mu);
	while (!j.done)
		pthread_cond_wait(&j.cv, &j.mu);
	pthread_mutex_unlock(&j.mu);
	pthread_mutex_destroy(&j.mu);
	pthread_cond_destroy(&j.cv);
}

/* ---- mesh setup -------------------------------------------------------- */

static struct node nodes[3];
static int n_nodes;

static bool all_connected(void)
{
	for (int i = 0; i < n_nodes; i++)
		for (int k = 0; k < n_nodes; k++)
			if (i != k && !mesh_peer_connected(nodes[i].m, nodes[k].id.pk))
				return false;
	return true;
}

static void on_wake(evutil_socket_t fd, short w, void *a)
{
	(void)fd;
	(void)w;
	(void)a;
}

/* Starts |n| nodes (node 0 founds the mesh) and waits until all are
 * connected, running the loop on this thread; workers load |paths[i]|. */
static void mesh_up(int n, const char *const *paths)
{
	n_nodes = n;
	node_start(&nodes[0], 1, NULL);
	char tok[MESH_TOKEN_MAX_LEN];
	assert_true(mesh_invite_token(nodes[0].m, tok, sizeof(tok)) > 0);
	for (int i = 1; i < n; i++) {
		node_start(&nodes[i], (uint8_t)(1 + i), tok);
		struct mesh_stage_worker_params wp = {
		    .base = base, .model_path = paths[i], .n_threads = 1};
		assert_int_equal(mesh_stage_worker_new(&nodes[i].w, nodes[i].m, &wp), 0);
	}
	struct event *t = event_new(base, -1, EV_PERSIST, on_wake, NULL);
	struct timeval tv = {0, 2000};
	event_add(t, &tv);
	uint64_t end = ml_time_ns() + 10000ull * 1000000ull;
	while (!all_connected() && ml_time_ns() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	assert_true(all_connected());
}

static void mesh_down(void)
{
	for (int i = n_nodes - 1; i >= 0; i--) {
		mesh_free(nodes[i].m);
		mesh_stage_worker_free(nodes[i].w);
		nodes[i].m = NULL;
		nodes[i].w = NULL;
	}
	n_nodes = 0;
}

/* ---- traffic ----------------------------------------------------------- */

struct traffic_sum {
	uint64_t tx_bytes[256];
	uint64_t tx_msgs[256];
};

static void traffic_read(void *u)
{
	struct traffic_sum *t = u;
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < n_nodes; i++) {
		const struct mesh_traffic *m = mesh_get_traffic(nodes[i].m);
		for (int k = 0; k < 256; k++) {
			t->tx_bytes[k] += m->tx_bytes[k];
			t->tx_msgs[k] += m->tx_msgs[k];
		}
	}
}

static void traffic_get(struct traffic_sum *t)
{
	on_loop(traffic_read, t);
}

/* ---- requests ------------------------------------------------------------ */

#define MAX_TOK 64

struct coll {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int32_t tokens[MAX_TOK];
	int n_tokens;
	bool done;
	enum eng_finish finish;
};

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
		if (ev->finish == ENG_FINISH_ERROR)
			fprintf(stderr, "request failed: %s\n", ev->message ? ev->message : "?");
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

enum { N_REQ = 4, GEN = 20 };
static int32_t prompts[N_REQ][80];
static const int n_prompt[N_REQ] = {5, 64, 1, 23};

/* Runs the N_REQ requests at once on |e| into |out|. */
static void run_all(struct eng *e, struct coll *out)
{
	for (int i = 0; i < N_REQ; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < n_prompt[i]; j++)
			prompts[i][j] = 3 + (j * 97 + 13 * i) % 400;
	}
	for (int i = 0; i < N_REQ; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		pthread_mutex_init(&out[i].mu, NULL);
		pthread_cond_init(&out[i].cv, NULL);
		struct eng_request r;
		memset(&r, 0, sizeof(r));
		r.prompt = prompts[i];
		r.n_prompt = n_prompt[i];
		r.max_tokens = GEN;
		r.sampling = smp_default_params();
		r.sampling.temp = 0.0f;
		r.ignore_eos = true;
		assert_int_equal(eng_submit(e, &r, on_event, &out[i], NULL), 0);
	}
	for (int i = 0; i < N_REQ; i++) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 60;
		pthread_mutex_lock(&out[i].mu);
		int rc = 0;
		while (!out[i].done && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&out[i].cv, &out[i].mu, &ts);
		pthread_mutex_unlock(&out[i].mu);
		assert_true(out[i].done);
	}
}

/* Releases what run_all() initialized in |c|. */
static void colls_destroy(struct coll *c)
{
	for (int i = 0; i < N_REQ; i++) {
		pthread_mutex_destroy(&c[i].mu);
		pthread_cond_destroy(&c[i].cv);
	}
}

/* The KV type of the engines below (solo and split alike). */
static enum model_kv_type test_kv = MODEL_KV_F16;

static struct eng_params engine_params(const char *path)
{
	struct eng_params p = eng_default_params();
	p.model_path = path;
	p.kv_type = test_kv;
	p.n_parallel = 4;
	p.n_ctx = 128;
	p.n_batch = 16;
	p.n_threads = 2;
	return p;
}

/* The solo engine's tokens for the test requests on |path|, into |out|. */
static void run_solo(const char *path, struct coll *out)
{
	struct eng_params sp = engine_params(path);
	struct eng *solo = NULL;
	assert_int_equal(eng_init(&solo, &sp), 0);
	run_all(solo, out);
	eng_free(solo);
}

/* The plan: node 0 is the host with [0, bounds[0]), node i runs
 * [bounds[i-1], bounds[i]). */
static void make_plan(struct mesh_stage_plan *plan, int n_stages, const int *bounds, int n_layer,
                      uint64_t epoch)
{
	memset(plan, 0, sizeof(*plan));
	plan->epoch = epoch;
	plan->n_layer = (uint32_t)n_layer;
	plan->n_stages = (uint32_t)n_stages;
	for (int i = 0; i < n_stages; i++) {
		memcpy(plan->stages[i].id, nodes[i].id.pk, NET_ID_LEN);
		plan->stages[i].layer_begin = i == 0 ? 0 : (uint32_t)bounds[i - 1];
		plan->stages[i].layer_end =
		    i + 1 == n_stages ? (uint32_t)n_layer : (uint32_t)bounds[i];
		memcpy(plan->stages[i].next, nodes[(i + 1) % n_stages].id.pk, NET_ID_LEN);
	}
}

static int split_engine_epoch(struct eng **e, const char *path, int n_stages, const int *bounds,
                              int n_layer, uint8_t act_dtype, struct eng_link **link_out,
                              uint64_t epoch)
{
	struct mesh_stage_plan plan;
	make_plan(&plan, n_stages, bounds, n_layer, epoch);
	struct mesh_stage_link_params lp = {
	    .mesh = nodes[0].m,
	    .base = base,
	    .model_path = path,
	    .plan = &plan,
	    .act_dtype = act_dtype,
	    .timeout_ms = 20000,
	};
	struct eng_params p = engine_params(path);
	int rc = mesh_stage_link_new(&p.link, &lp);
	if (rc < 0)
		return rc;
	*link_out = p.link;
	p.layer_end = bounds[0];
	p.link_owned = true;
	return eng_init(e, &p);
}

static int split_engine(struct eng **e, const char *path, int n_stages, const int *bounds,
                        int n_layer, uint8_t act_dtype, struct eng_link **link_out)
{
	return split_engine_epoch(e, path, n_stages, bounds, n_layer, act_dtype, link_out, 1);
}

static void split_equals_solo(const char *path, int n_stages, const int *bounds, int n_layer)
{
	/* solo reference */
	struct eng_params sp = engine_params(path);
	struct eng *solo = NULL;
	assert_int_equal(eng_init(&solo, &sp), 0);
	static struct coll ref[N_REQ], got[N_REQ];
	run_all(solo, ref);
	struct eng_stats sst;
	eng_get_stats(solo, &sst);
	eng_free(solo);

	const char *paths[3] = {path, path, path};
	mesh_up(n_stages, paths);
	loop_start();
	struct traffic_sum t0, t1, t2;
	traffic_get(&t0);
	struct eng *e = NULL;
	struct eng_link *link = NULL;
	int rc = split_engine(&e, path, n_stages, bounds, n_layer, ML_DTYPE_F32, &link);
	if (rc != 0)
		fprintf(stderr, "split engine: %s: %s\n", ml_strerror(rc), ml_last_error());
	assert_int_equal(rc, 0);
	traffic_get(&t1);

	/* Loading: only PLAN and its acks on STAGE streams, no weights. */
	uint64_t load_stage_bytes = 0;
	for (int k = NET_MSG_STAGE_OPEN; k <= NET_MSG_STAGE_ACK; k++)
		load_stage_bytes += t1.tx_bytes[k] - t0.tx_bytes[k];
	uint64_t plan_bytes = t1.tx_bytes[NET_MSG_STAGE_OPEN] - t0.tx_bytes[NET_MSG_STAGE_OPEN];
	uint64_t ack_bytes = t1.tx_bytes[NET_MSG_STAGE_ACK] - t0.tx_bytes[NET_MSG_STAGE_ACK];
	assert_int_equal(load_stage_bytes, plan_bytes + ack_bytes);
	assert_int_equal(t1.tx_msgs[NET_MSG_STAGE_OPEN] - t0.tx_msgs[NET_MSG_STAGE_OPEN],
	                 (uint64_t)(n_stages - 1));
	uint64_t all_bytes = 0;
	for (int k = 0; k < 256; k++)
		all_bytes += t1.tx_bytes[k] - t0.tx_bytes[k];
	/* The smallest stage maps > 1 MB; everything sent while loading
	 * (gossip and pings included) is a few kB. */
	assert_true(all_bytes < 64 * 1024);
	printf("load: %u stages acknowledged the plan; %llu bytes of STAGE messages (PLAN %llu, "
	       "ACK %llu), %llu bytes in all, 0 weight bytes\n",
	       n_stages - 1, (unsigned long long)load_stage_bytes, (unsigned long long)plan_bytes,
	       (unsigned long long)ack_bytes, (unsigned long long)all_bytes);

	double t_start = ml_time_s();
	run_all(e, got);
	double dt = ml_time_s() - t_start;
	traffic_get(&t2);
	for (int i = 0; i < N_REQ; i++) {
		assert_int_equal(got[i].finish, ENG_FINISH_LENGTH);
		assert_int_equal(got[i].n_tokens, GEN);
		if (memcmp(got[i].tokens, ref[i].tokens, GEN * sizeof(int32_t)) != 0) {
			fprintf(stderr, "%s, %d stages: request %d differs from solo\n", path,
			        n_stages, i);
			fail();
		}
	}
	struct eng_stats st;
	eng_get_stats(e, &st);
	struct mesh_stage_link_stats ls;
	mesh_stage_link_get_stats(link, &ls);
	uint64_t fwd = t2.tx_bytes[NET_MSG_STAGE_FORWARD] - t1.tx_bytes[NET_MSG_STAGE_FORWARD];
	uint64_t res = t2.tx_bytes[NET_MSG_STAGE_RESULT] - t1.tx_bytes[NET_MSG_STAGE_RESULT];
	uint64_t kv = t2.tx_bytes[NET_MSG_STAGE_KV] - t1.tx_bytes[NET_MSG_STAGE_KV];
	printf("%s, %d stages: %llu batch entries, %llu generated tokens in %.2f s (solo %.2f s "
	       "computing); RUN_BATCH %llu B (%.0f B per entry), RESULT %llu B (%.0f B per "
	       "generated token), KV %llu B; head on host %.3f s\n",
	       path, n_stages, (unsigned long long)st.n_step_tokens,
	       (unsigned long long)(N_REQ * GEN), dt, sst.busy_s, (unsigned long long)fwd,
	       (double)fwd / (double)st.n_step_tokens, (unsigned long long)res,
	       (double)res / (double)(N_REQ * GEN), (unsigned long long)kv, ls.head_s);
	assert_true(fwd > 0 && res > 0);
	eng_free(e);
	loop_end();
	mesh_down();
	colls_destroy(ref);
	colls_destroy(got);
}

static void test_mesh_stage_two_f32(void **state)
{
	(void)state;
	int b[1] = {2};
	split_equals_solo(F32_MODEL, 2, b, 4);
}

static void test_mesh_stage_three_f32(void **state)
{
	(void)state;
	int b[2] = {1, 3};
	split_equals_solo(F32_MODEL, 3, b, 4);
}

static void test_mesh_stage_three_quant(void **state)
{
	(void)state;
	int b[2] = {2, 3};
	split_equals_solo(Q8_MODEL, 3, b, 4);
	int c[1] = {1};
	split_equals_solo(QWEN_Q4, 2, c, 4);
}

static bool same_tokens(const struct coll *a, const struct coll *b)
{
	for (int i = 0; i < N_REQ; i++)
		if (a[i].n_tokens != b[i].n_tokens ||
		    memcmp(a[i].tokens, b[i].tokens, sizeof(int32_t) * (size_t)a[i].n_tokens) != 0)
			return false;
	return true;
}

/* An engine with an F32 KV cache: the PLAN gives the workers that type,
 * and split output equals solo output with F32 KV. For this model F16 KV
 * gives other tokens (small logit margins), so a stage that kept F16
 * would show. */
static void test_mesh_stage_kv_f32(void **state)
{
	(void)state;
	static struct coll r16[N_REQ], r32[N_REQ];
	run_solo(Q8_MODEL, r16);
	test_kv = MODEL_KV_F32;
	run_solo(Q8_MODEL, r32);
	assert_false(same_tokens(r16, r32));
	int b[2] = {2, 3};
	split_equals_solo(Q8_MODEL, 3, b, 4);
	test_kv = MODEL_KV_F16;
	colls_destroy(r16);
	colls_destroy(r32);
}

/* The same workers take a new plan (epoch 2, other layer ranges: they drop
 * and load layers) and still give the solo tokens; a plan of an older
 * epoch is then refused; f16 activations halve the bytes per entry. */
static void test_mesh_stage_replan(void **state)
{
	(void)state;
	static struct coll ref[N_REQ], got[N_REQ];
	run_solo(F32_MODEL, ref);

	const char *paths[3] = {F32_MODEL, F32_MODEL, F32_MODEL};
	mesh_up(3, paths);
	loop_start();
	struct eng *e = NULL;
	struct eng_link *link = NULL;
	int b1[2] = {1, 3};
	assert_int_equal(split_engine_epoch(&e, F32_MODEL, 3, b1, 4, ML_DTYPE_F32, &link, 1), 0);
	run_all(e, got);
	assert_true(same_tokens(ref, got));
	eng_free(e);

	int b2[2] = {2, 3};
	struct traffic_sum t0, t1;
	assert_int_equal(split_engine_epoch(&e, F32_MODEL, 3, b2, 4, ML_DTYPE_F16, &link, 2), 0);
	traffic_get(&t0);
	run_all(e, got);
	traffic_get(&t1);
	struct eng_stats st;
	eng_get_stats(e, &st);
	uint64_t fwd = t1.tx_bytes[NET_MSG_STAGE_FORWARD] - t0.tx_bytes[NET_MSG_STAGE_FORWARD];
	/* 2 hops of n_embd (256) f16 rows + 9 bytes per entry, + headers */
	printf("f16 activations: %.0f RUN_BATCH bytes per entry over 2 hops\n",
	       (double)fwd / (double)st.n_step_tokens);
	assert_true(fwd < st.n_step_tokens * 2 * (256 * 2 + 9 + 40));
	/* f16 rounding may move a near tie; the synthetic model has none here */
	assert_true(same_tokens(ref, got));
	eng_free(e);
	struct mesh_stage_worker_stats ws;
	mesh_stage_worker_get_stats(nodes[1].w, &ws);
	assert_int_equal(ws.epoch, 2);
	assert_int_equal(ws.layer_begin, 2);
	assert_int_equal(ws.layer_end, 3);
	assert_int_equal(ws.n_plans, 2);
	/* the last stage maps no output head (the host computes the logits) */
	mesh_stage_worker_get_stats(nodes[2].w, &ws);
	struct model *full = NULL;
	struct model_params mp = {.path = F32_MODEL, .layer_begin = 3, .layer_end = 4};
	assert_int_equal(model_load(&full, &mp), 0);
	const struct gguf_tensor *head = gguf_find_tensor(model_gguf(full), "output.weight");
	assert_non_null(head);
	assert_int_equal(ws.layer_begin, 3);
	assert_int_equal(ws.weight_bytes_mapped, model_weight_bytes(full) - head->n_bytes);
	model_free(full);

	/* an older plan is refused */
	int rc = split_engine_epoch(&e, F32_MODEL, 3, b1, 4, ML_DTYPE_F32, &link, 1);
	assert_int_not_equal(rc, 0);
	assert_null(e);
	printf("old epoch: %s\n", ml_last_error());
	assert_non_null(strstr(ml_last_error(), "older than the current plan"));

	/* another node elected host counts its own epochs: its epoch 1 is
	 * taken (node 2 hosts layers 0-1, node 1 runs 2-3) */
	struct mesh_stage_plan other;
	memset(&other, 0, sizeof(other));
	other.epoch = 1;
	other.n_layer = 4;
	other.n_stages = 2;
	memcpy(other.stages[0].id, nodes[2].id.pk, NET_ID_LEN);
	memcpy(other.stages[1].id, nodes[1].id.pk, NET_ID_LEN);
	other.stages[0].layer_end = other.stages[1].layer_begin = 2;
	other.stages[1].layer_end = 4;
	memcpy(other.stages[0].next, nodes[1].id.pk, NET_ID_LEN);
	memcpy(other.stages[1].next, nodes[2].id.pk, NET_ID_LEN);
	struct mesh_stage_link_params lp = {.mesh = nodes[2].m,
	                                    .base = base,
	                                    .model_path = F32_MODEL,
	                                    .plan = &other,
	                                    .act_dtype = ML_DTYPE_F32,
	                                    .timeout_ms = 20000};
	struct eng_params p = engine_params(F32_MODEL);
	assert_int_equal(mesh_stage_link_new(&p.link, &lp), 0);
	p.layer_end = 2;
	p.link_owned = true;
	rc = eng_init(&e, &p);
	if (rc != 0)
		fprintf(stderr, "new host: %s\n", ml_last_error());
	assert_int_equal(rc, 0);
	run_all(e, got);
	assert_true(same_tokens(ref, got));
	eng_free(e);
	loop_end();
	mesh_down();
	colls_destroy(ref);
	colls_destroy(got);
}

/* Election: node 2 is the new host and gives node 1 a plan while the old
 * host (node 0) still runs its pipeline through node 1, with the same
 * epoch number (each host counts its own). The old host's late batches
 * (and KV commands) must not reach the new pipeline: node 1 drops them,
 * counts them, and tells the old host on its own stream, whose requests
 * fail at once; the new host's requests give the solo tokens. */
static void test_mesh_stage_stale_host(void **state)
{
	(void)state;
	static struct coll ref[N_REQ], got[N_REQ], old[N_REQ];
	run_solo(F32_MODEL, ref);

	const char *paths[3] = {F32_MODEL, F32_MODEL, F32_MODEL};
	mesh_up(3, paths);
	loop_start();
	/* the old host: node 0 runs 0-1, node 1 2-3, epoch 3 */
	struct mesh_stage_plan plan;
	int b1[1] = {2};
	make_plan(&plan, 2, b1, 4, 3);
	struct mesh_stage_link_params lp = {.mesh = nodes[0].m,
	                                    .base = base,
	                                    .model_path = F32_MODEL,
	                                    .plan = &plan,
	                                    .act_dtype = ML_DTYPE_F32,
	                                    .timeout_ms = 20000};
	struct eng_params p = engine_params(F32_MODEL);
	assert_int_equal(mesh_stage_link_new(&p.link, &lp), 0);
	p.layer_end = 2;
	p.link_owned = true;
	p.link_wait_ms = 0;
	struct eng *e_old = NULL;
	assert_int_equal(eng_init(&e_old, &p), 0);

	/* the new host: node 2 runs 0-1, node 1 2-3, also epoch 3 */
	struct mesh_stage_plan other;
	memset(&other, 0, sizeof(other));
	other.epoch = 3;
	other.n_layer = 4;
	other.n_stages = 2;
	memcpy(other.stages[0].id, nodes[2].id.pk, NET_ID_LEN);
	memcpy(other.stages[1].id, nodes[1].id.pk, NET_ID_LEN);
	other.stages[0].layer_end = other.stages[1].layer_begin = 2;
	other.stages[1].layer_end = 4;
	memcpy(other.stages[0].next, nodes[1].id.pk, NET_ID_LEN);
	memcpy(other.stages[1].next, nodes[2].id.pk, NET_ID_LEN);
	lp.mesh = nodes[2].m;
	lp.plan = &other;
	struct eng_params p2 = engine_params(F32_MODEL);
	assert_int_equal(mesh_stage_link_new(&p2.link, &lp), 0);
	p2.layer_end = 2;
	p2.link_owned = true;
	struct eng *e_new = NULL;
	assert_int_equal(eng_init(&e_new, &p2), 0);

	/* the old host's requests go first, then the new host's run */
	for (int i = 0; i < N_REQ; i++) {
		memset(&old[i], 0, sizeof(old[i]));
		pthread_mutex_init(&old[i].mu, NULL);
		pthread_cond_init(&old[i].cv, NULL);
		struct eng_request r;
		memset(&r, 0, sizeof(r));
		r.prompt = prompts[i];
		r.n_prompt = n_prompt[i];
		r.max_tokens = GEN;
		r.sampling = smp_default_params();
		r.sampling.temp = 0.0f;
		r.ignore_eos = true;
		assert_int_equal(eng_submit(e_old, &r, on_event, &old[i], NULL), 0);
	}
	run_all(e_new, got);
	for (int i = 0; i < N_REQ; i++)
		assert_int_equal(got[i].finish, ENG_FINISH_LENGTH);
	assert_true(same_tokens(ref, got));
	for (int i = 0; i < N_REQ; i++) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 10; /* well under the link's 20 s timeout */
		pthread_mutex_lock(&old[i].mu);
		int rc = 0;
		while (!old[i].done && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&old[i].cv, &old[i].mu, &ts);
		pthread_mutex_unlock(&old[i].mu);
		assert_true(old[i].done);
		assert_int_equal(old[i].finish, ENG_FINISH_ERROR);
	}
	struct mesh_stage_worker_stats ws;
	mesh_stage_worker_get_stats(nodes[1].w, &ws);
	printf("stale host: node 1 dropped %llu messages of the old host, ran %llu batches\n",
	       (unsigned long long)ws.n_stale, (unsigned long long)ws.n_batches);
	assert_true(ws.n_stale >= 1);
	assert_int_equal(ws.epoch, 3);
	eng_free(e_old);
	eng_free(e_new);
	loop_end();
	mesh_down();
	colls_destroy(ref);
	colls_destroy(got);
	colls_destroy(old);
}

/* The PLAN sent before the engine loads its layers
 * (mesh_stage_link_send_plan): the stage has loaded its own before
 * eng_init() starts; with the setup guessed right the stage loads once,
 * with a wrong guess start() sends the plan again with the engine's
 * values; the tokens are the solo ones either way. */
static void test_mesh_stage_plan_early(void **state)
{
	(void)state;
	static struct coll ref[N_REQ], got[N_REQ];
	run_solo(F32_MODEL, ref);

	const char *paths[2] = {F32_MODEL, F32_MODEL};
	mesh_up(2, paths);
	loop_start();
	for (int round = 0; round < 2; round++) {
		struct mesh_stage_plan plan;
		int b[1] = {2};
		make_plan(&plan, 2, b, 4, (uint64_t)round + 1);
		struct mesh_stage_link_params lp = {.mesh = nodes[0].m,
		                                    .base = base,
		                                    .model_path = F32_MODEL,
		                                    .plan = &plan,
		                                    .act_dtype = ML_DTYPE_F32,
		                                    .timeout_ms = 20000};
		struct eng_params p = engine_params(F32_MODEL);
		assert_int_equal(mesh_stage_link_new(&p.link, &lp), 0);
		struct eng_link_setup ex = {.n_seq = p.n_parallel,
		                            .n_ctx = round == 0 ? p.n_ctx : p.n_ctx / 2,
		                            .n_batch = p.n_batch,
		                            .kv_type = p.kv_type};
		assert_int_equal(mesh_stage_link_send_plan(p.link, &ex), 0);
		assert_int_equal(mesh_stage_link_send_plan(p.link, &ex), ML_ERR_INVALID);
		struct mesh_stage_worker_stats ws;
		for (int i = 0; i < 2000; i++) {
			mesh_stage_worker_get_stats(nodes[1].w, &ws);
			if (ws.epoch == (uint64_t)round + 1)
				break;
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, NULL);
		}
		assert_int_equal(ws.epoch, round + 1); /* loaded before the engine starts */
		p.layer_end = 2;
		p.link_owned = true;
		struct eng *e = NULL;
		assert_int_equal(eng_init(&e, &p), 0);
		run_all(e, got);
		assert_true(same_tokens(ref, got));
		eng_free(e);
		mesh_stage_worker_get_stats(nodes[1].w, &ws);
		/* round 0: one plan; round 1: the early one and the engine's */
		assert_int_equal(ws.n_plans, round == 0 ? 1 : 3);
	}
	loop_end();
	mesh_down();
	colls_destroy(ref);
	colls_destroy(got);
}

static void kill_node2(void *u)
{
	(void)u;
	mesh_free(nodes[2].m);
	nodes[2].m = NULL;
}

static void wait_link(struct eng *e, bool down)
{
	for (int i = 0; i < 4000; i++) {
		struct eng_stats st;
		eng_get_stats(e, &st);
		if (st.link_down == down)
			return;
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
	}
	fail_msg("the engine never saw the link %s", down ? "fail" : "come back");
}

/* Stage 3 of 3 disappears (its node closes every connection) while four
 * requests run; the engine holds them, the host re-plans on the two nodes
 * left (epoch 2, other ranges) and every request completes with the solo
 * tokens. */
static void test_mesh_stage_dead_stage(void **state)
{
	(void)state;
	static struct coll ref[N_REQ], got[N_REQ];
	run_solo(F32_MODEL, ref);

	const char *paths[3] = {F32_MODEL, F32_MODEL, F32_MODEL};
	mesh_up(3, paths);
	loop_start();
	struct mesh_stage_plan plan;
	int b1[2] = {1, 3};
	make_plan(&plan, 3, b1, 4, 1);
	struct mesh_stage_link_params lp = {.mesh = nodes[0].m,
	                                    .base = base,
	                                    .model_path = F32_MODEL,
	                                    .plan = &plan,
	                                    .act_dtype = ML_DTYPE_F32,
	                                    .timeout_ms = 20000};
	struct eng_params p = engine_params(F32_MODEL);
	assert_int_equal(mesh_stage_link_new(&p.link, &lp), 0);
	p.layer_end = 1;
	p.link_owned = true;
	p.link_wait_ms = 30000;
	struct eng *e = NULL;
	assert_int_equal(eng_init(&e, &p), 0);

	for (int i = 0; i < N_REQ; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < n_prompt[i]; j++)
			prompts[i][j] = 3 + (j * 97 + 13 * i) % 400;
		memset(&got[i], 0, sizeof(got[i]));
		pthread_mutex_init(&got[i].mu, NULL);
		pthread_cond_init(&got[i].cv, NULL);
		struct eng_request r;
		memset(&r, 0, sizeof(r));
		r.prompt = prompts[i];
		r.n_prompt = n_prompt[i];
		r.max_tokens = GEN;
		r.sampling = smp_default_params();
		r.sampling.temp = 0.0f;
		r.ignore_eos = true;
		assert_int_equal(eng_submit(e, &r, on_event, &got[i], NULL), 0);
	}
	/* once request 0 has a few tokens, stage 3's node goes away */
	for (int i = 0; i < 2000; i++) {
		pthread_mutex_lock(&got[0].mu);
		int n = got[0].n_tokens;
		pthread_mutex_unlock(&got[0].mu);
		if (n >= 3)
			break;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	on_loop(kill_node2, NULL);
	wait_link(e, true);

	/* re-plan on the survivors: host 0-1, node 1 2-3 */
	struct mesh_stage_plan plan2;
	int b2[1] = {2};
	make_plan(&plan2, 2, b2, 4, 2);
	lp.plan = &plan2;
	struct eng_link *l2 = NULL;
	assert_int_equal(mesh_stage_link_new(&l2, &lp), 0);
	assert_int_equal(eng_relink(e, l2, 2, true), 0);
	for (int i = 0; i < N_REQ; i++) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 60;
		pthread_mutex_lock(&got[i].mu);
		int rc = 0;
		while (!got[i].done && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&got[i].cv, &got[i].mu, &ts);
		pthread_mutex_unlock(&got[i].mu);
		assert_true(got[i].done);
		assert_int_equal(got[i].finish, ENG_FINISH_LENGTH);
	}
	assert_true(same_tokens(ref, got));
	eng_free(e);
	loop_end();
	mesh_down();
	colls_destroy(ref);
	colls_destroy(got);
}

/* A worker whose file is another model refuses the plan, naming both
 * fingerprints; eng_init() fails with that reason. */
static void test_mesh_stage_model_mismatch(void **state)
{
	(void)state;
	const char *paths[2] = {F32_MODEL, Q8_MODEL};
	mesh_up(2, paths);
	loop_start();
	struct eng *e = NULL;
	struct eng_link *link = NULL;
	int b[1] = {2};
	int rc = split_engine(&e, F32_MODEL, 2, b, 4, ML_DTYPE_F32, &link);
	assert_int_equal(rc, ML_ERR_INVALID);
	assert_null(e);
	printf("refused: %s\n", ml_last_error());
	assert_non_null(strstr(ml_last_error(), "refused plan epoch 1"));
	assert_non_null(strstr(ml_last_error(), "model mismatch"));
	loop_end();
	mesh_down();
}

static void test_mesh_stage_fingerprint(void **state)
{
	(void)state;
	uint8_t a[MESH_STAGE_FP_LEN], b[MESH_STAGE_FP_LEN], c[MESH_STAGE_FP_LEN];
	assert_int_equal(mesh_stage_fingerprint_file(F32_MODEL, a), 0);
	assert_int_equal(mesh_stage_fingerprint_file(F32_MODEL, b), 0);
	assert_int_equal(mesh_stage_fingerprint_file(Q8_MODEL, c), 0);
	assert_memory_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, c, sizeof(a));
	char hex[2 * MESH_STAGE_FP_LEN + 1];
	mesh_stage_fingerprint_hex(a, hex);
	assert_int_equal(strlen(hex), 64);
	assert_int_equal(mesh_stage_fingerprint_file("no/such/file.gguf", a), ML_ERR_NOT_FOUND);
}

/* What a worker stage relies on: model_forward() with no output buffer
 * leaves the same rows in model_ctx_hidden() (middle stage) and
 * model_ctx_result_norm() (last stage, the output head skipped) as a call
 * that writes hidden states or logits. */
static void forward_null_out(const char *path, int lb, int le)
{
	struct model *m = NULL;
	struct model_params mp = {.path = path, .layer_begin = lb, .layer_end = le};
	assert_int_equal(model_load(&m, &mp), 0);
	const struct model_hparams *hp = model_hparams(m);
	const int n = 5, E = hp->n_embd;
	struct model_ctx *ca = NULL, *cb = NULL;
	assert_int_equal(model_ctx_init(&ca, m, NULL, 2, 32, 8), 0);
	assert_int_equal(model_ctx_init(&cb, m, NULL, 2, 32, 8), 0);
	float *in = malloc((size_t)n * (size_t)E * sizeof(float));
	float *out = malloc((size_t)n * (size_t)(hp->n_vocab > E ? hp->n_vocab : E) * sizeof(float));
	assert_non_null(in);
	assert_non_null(out);
	for (int i = 0; i < n * E; i++)
		in[i] = (float)((i * 37) % 101 - 50) / 50.0f;
	int32_t pos[5] = {0, 1, 2, 0, 1}, seq[5] = {0, 0, 0, 1, 1};
	int8_t want[5] = {0, 0, 1, 0, 1};
	struct model_batch b = {.n_tokens = n, .embd = in, .pos = pos, .seq = seq, .logits = want};
	assert_int_equal(model_forward(ca, &b, out), 0);
	assert_int_equal(model_forward(cb, &b, NULL), 0);
	if (model_is_last(m)) {
		assert_memory_equal(model_ctx_result_norm(ca), model_ctx_result_norm(cb),
		                    2 * (size_t)E * sizeof(float));
	} else {
		assert_memory_equal(model_ctx_hidden(cb), out, (size_t)n * (size_t)E * sizeof(float));
		assert_memory_equal(model_ctx_hidden(ca), out, (size_t)n * (size_t)E * sizeof(float));
	}
	free(in);
	free(out);
	model_ctx_free(ca);
	model_ctx_free(cb);
	model_free(m);
}

static void test_mesh_stage_forward_null_out(void **state)
{
	(void)state;
	forward_null_out(Q8_MODEL, 1, 2);  /* a middle stage */
	forward_null_out(Q8_MODEL, 2, -1); /* the last stage */
	forward_null_out(F32_MODEL, 3, -1);
}

int main(void)
{
	evthread_use_pthreads();
	base = event_base_new();
	ml_log_set_level(ML_LOG_WARN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_stage_fingerprint),
	    cmocka_unit_test(test_mesh_stage_forward_null_out),
	    cmocka_unit_test(test_mesh_stage_model_mismatch),
	    cmocka_unit_test(test_mesh_stage_two_f32),
	    cmocka_unit_test(test_mesh_stage_three_f32),
	    cmocka_unit_test(test_mesh_stage_three_quant),
	    cmocka_unit_test(test_mesh_stage_replan),
	    cmocka_unit_test(test_mesh_stage_dead_stage),
	    cmocka_unit_test(test_mesh_stage_stale_host),
	    cmocka_unit_test(test_mesh_stage_kv_f32),
	    cmocka_unit_test(test_mesh_stage_plan_early),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	event_base_free(base);
	return rc;
}
