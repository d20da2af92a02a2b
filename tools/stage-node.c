/* stage-node: split inference across real processes, until `mesh-llm
 * serve` wires mesh_stage in.
 *
 *   stage-node worker --model PATH --token-file F [--join TOKEN] [--threads N]
 *             [--delay-ms MS]
 *       founds (or joins) a mesh, writes its invite token to F, and serves as a
 *       pipeline stage (layers assigned by the host's PLAN) until killed.
 *   stage-node host --model PATH --join TOKEN --split A[,B...] [--threads N]
 *             [--n-gen N] [--parallel N] [--f16] [--kv-f32] [--delay-ms MS]
 *       joins, waits for as many connected peers as --split has bounds
 *       (taken in node id order), runs layers [0,A) itself, the peers
 *       [A,B), ..., [last,n_layer). It first runs the same requests solo
 *       (whole model in this process) and then split, and prints the
 *       tokens, tokens/s of one request, the bytes sent per STAGE
 *       message type, and "identical: yes|no". Exit status 0 when the
 *       split tokens equal the solo tokens and no weights were sent.
 *       When a stage node dies (mesh: dead or left) the host re-plans on
 *       the nodes left (layers split evenly; the whole model here when none
 *       is left) and the running requests go on (eng_relink). --marker F:
 *       F is created when the split run has produced 3 tokens (for tests
 *       that kill a worker mid-request).
 *       --runs N: the one-request pass N times (solo and split; tokens/s of
 *       each). --bench: no concurrent pass, and a last line "bench-json:
 *       {...}" with the tokens/s of every run and where the split time went
 *       (host compute, waiting on the pipeline, output head).
 *   A worker stopped with SIGTERM or SIGINT prints "worker-json: {...}"
 *   (batches, entries, seconds in its forward pass) before it exits. */
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "engine/eng.h"
#include "engine/eng_link.h"
#include "mesh/mesh.h"
#include "mesh/mesh_stage.h"
#include "model/model.h"
#include "net/net_quic.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static struct event_base *base;
static struct mesh *mesh;
static struct mesh_stage_worker *worker;

/* host --survive: re-plan when a stage dies (loop thread) */
static struct eng *g_eng;
static struct eng_link *g_link;
static struct mesh_stage_plan g_plan;
static const char *g_path;
static uint8_t g_act;
static const char *g_marker; /* created when the split run has 3 tokens */
static volatile int g_split_phase;
static int g_replans;

/* A stage of the current plan is dead: a new plan on the stages left
 * (layers split evenly), or the whole model here when none is left. */
static void replan_without(const uint8_t id[NET_ID_LEN])
{
	int dead = mesh_stage_plan_find(&g_plan, id);
	if (!g_eng || dead <= 0)
		return;
	char b[9];
	for (int i = 0; i < 4; i++)
		snprintf(b + 2 * i, 3, "%02x", id[i]);
	mesh_stage_link_abort(g_link, "a stage node died");
	struct mesh_stage_plan np = g_plan;
	np.epoch++;
	np.n_stages = 0;
	for (uint32_t i = 0; i < g_plan.n_stages; i++)
		if ((int)i != dead)
			np.stages[np.n_stages++] = g_plan.stages[i];
	for (uint32_t i = 0; i < np.n_stages; i++) {
		np.stages[i].layer_begin = np.n_layer * i / np.n_stages;
		np.stages[i].layer_end = np.n_layer * (i + 1) / np.n_stages;
		memcpy(np.stages[i].next, g_plan.stages[0].id, NET_ID_LEN);
		if (i > 0)
			memcpy(np.stages[i - 1].next, np.stages[i].id, NET_ID_LEN);
	}
	g_plan = np;
	g_replans++;
	if (np.n_stages == 1) {
		ML_INFO("stage node %s died: the whole model runs here now", b);
		g_link = NULL;
		eng_relink(g_eng, NULL, 0, false);
		return;
	}
	struct mesh_stage_link_params lp = {.mesh = mesh,
	                                    .base = base,
	                                    .model_path = g_path,
	                                    .plan = &g_plan,
	                                    .act_dtype = g_act,
	                                    .timeout_ms = 60000};
	struct eng_link *l = NULL;
	if (mesh_stage_link_new(&l, &lp) < 0) {
		ML_ERROR("re-plan: %s", ml_last_error());
		return;
	}
	ML_INFO("stage node %s died: re-planned on %u stages (epoch %llu), layers 0-%u here", b,
	        np.n_stages, (unsigned long long)np.epoch, np.stages[0].layer_end - 1);
	g_link = l;
	eng_relink(g_eng, l, (int)np.stages[0].layer_end, true);
}

static void on_change(struct mesh *m, const struct mesh_member *mm, enum mesh_event ev, void *u)
{
	(void)m, (void)u;
	if ((ev == MESH_EV_DEAD || ev == MESH_EV_LEFT) && !mm->self)
		replan_without(mm->id);
}

static void on_stream(struct mesh *m, struct mesh_stream *s, uint8_t type,
                      const uint8_t peer[NET_ID_LEN], void *u)
{
	(void)m, (void)peer, (void)u;
	if (type == NET_STREAM_STAGE && worker)
		mesh_stage_worker_accept(worker, s);
}

static int start_mesh(const char *join, int delay_ms)
{
	static struct net_ident id;
	uint8_t seed[32];
	randombytes_buf(seed, sizeof(seed));
	if (net_ident_from_seed(&id, seed) < 0)
		return -1;
	struct mesh_config cfg;
	mesh_default_config(&cfg);
	cfg.ident = &id;
	cfg.bind_host = "127.0.0.1";
	cfg.cb.on_stream = on_stream;
	cfg.cb.on_change = on_change;
	cfg.ping_ms = 200;
	cfg.suspect_ms = 1000;
	cfg.dead_ms = 2000;
	if (join) {
		cfg.join = &join;
		cfg.n_join = 1;
	}
	int rc = mesh_new(&mesh, base, &cfg);
	if (rc < 0) {
		fprintf(stderr, "stage-node: %s\n", ml_last_error());
		return rc;
	}
	if (delay_ms > 0)
		net_endpoint_set_netem(mesh_endpoint(mesh), (uint32_t)delay_ms * 1000u, 0, 0.0);
	return 0;
}

/* ---- requests -------------------------------------------------------------- */

#define MAX_GEN 512
struct coll {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int32_t tokens[MAX_GEN];
	int n;
	bool done;
	enum eng_finish finish;
	double t_first, t_last;
};

static void on_event(const struct eng_event *ev, void *u)
{
	struct coll *c = u;
	pthread_mutex_lock(&c->mu);
	if (ev->finish == ENG_FINISH_NONE) {
		double now = ml_time_s();
		if (c->n == 0)
			c->t_first = now;
		c->t_last = now;
		if (c->n < MAX_GEN)
			c->tokens[c->n++] = ev->token;
		if (c->n == 3 && g_split_phase && g_marker) {
			FILE *f = fopen(g_marker, "w");
			if (f)
				fclose(f);
		}
	} else {
		c->done = true;
		c->finish = ev->finish;
		if (ev->finish == ENG_FINISH_ERROR)
			fprintf(stderr, "request failed: %s\n", ev->message ? ev->message : "?");
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

enum { N_REQ = 4 };
static int32_t prompts[N_REQ][64];
static const int n_prompt[N_REQ] = {5, 40, 1, 23};

#define MAX_RUNS 16

/* Request 0 alone (its decode speed) |runs| times, then (|concurrent|) all
 * N_REQ at once. tps[r]: decode tokens/s of run r. */
static int run(struct eng *e, int n_gen, int n_vocab, struct coll *alone, struct coll *all,
               int runs, bool concurrent, double *tps)
{
	for (int i = 0; i < N_REQ; i++) {
		prompts[i][0] = 1;
		for (int j = 1; j < n_prompt[i]; j++)
			prompts[i][j] = 3 + (j * 97 + 13 * i) % (n_vocab - 3);
	}
	for (int pass = 0; pass < runs + (concurrent ? 1 : 0); pass++) {
		int n = pass < runs ? 1 : N_REQ;
		struct coll *cs = pass < runs ? &alone[pass] : all;
		for (int i = 0; i < n; i++) {
			memset(&cs[i], 0, sizeof(cs[i]));
			pthread_mutex_init(&cs[i].mu, NULL);
			pthread_cond_init(&cs[i].cv, NULL);
			struct eng_request r;
			memset(&r, 0, sizeof(r));
			r.prompt = prompts[i];
			r.n_prompt = n_prompt[i];
			r.max_tokens = n_gen;
			r.sampling = smp_default_params();
			r.sampling.temp = 0.0f;
			r.ignore_eos = true;
			if (eng_submit(e, &r, on_event, &cs[i], NULL) < 0) {
				fprintf(stderr, "submit: %s\n", ml_last_error());
				return -1;
			}
		}
		for (int i = 0; i < n; i++) {
			pthread_mutex_lock(&cs[i].mu);
			while (!cs[i].done)
				pthread_cond_wait(&cs[i].cv, &cs[i].mu);
			pthread_mutex_unlock(&cs[i].mu);
			if (cs[i].finish != ENG_FINISH_LENGTH)
				return -1;
		}
		if (pass < runs)
			tps[pass] = cs[0].n > 1 ? (cs[0].n - 1) / (cs[0].t_last - cs[0].t_first) : 0;
	}
	return 0;
}

static void print_tokens(const char *what, const struct coll *c)
{
	printf("%s:", what);
	for (int i = 0; i < c->n; i++)
		printf(" %d", c->tokens[i]);
	printf("\n");
}

/* ---- the loop thread --------------------------------------------------------- */

static volatile int loop_stop;
static void on_tick(evutil_socket_t fd, short w, void *a)
{
	(void)fd, (void)w;
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

struct snap {
	struct mesh_traffic t;
	bool done;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};
static void snap_cb(evutil_socket_t fd, short w, void *u)
{
	(void)fd, (void)w;
	struct snap *s = u;
	s->t = *mesh_get_traffic(mesh);
	pthread_mutex_lock(&s->mu);
	s->done = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}
static void traffic(struct mesh_traffic *out)
{
	static struct snap s;
	s.done = false;
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	struct timeval tv = {0, 0};
	event_base_once(base, -1, EV_TIMEOUT, snap_cb, &s, &tv);
	pthread_mutex_lock(&s.mu);
	while (!s.done)
		pthread_cond_wait(&s.cv, &s.mu);
	pthread_mutex_unlock(&s.mu);
	*out = s.t;
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, NET_ID_LEN);
}

static void print_list(const char *key, const double *v, int n)
{
	printf("\"%s\": [", key);
	for (int i = 0; i < n; i++)
		printf("%s%.3f", i ? ", " : "", v[i]);
	printf("]");
}

static int host_main(const char *path, const char *join, const char *split, int n_threads,
                     int n_gen, int n_parallel, bool f16, bool kv_f32, int delay_ms, int runs,
                     bool bench)
{
	int bounds[MESH_STAGE_MAX_STAGES], n_bounds = 0;
	for (const char *p = split; *p && n_bounds < MESH_STAGE_MAX_STAGES - 1;) {
		bounds[n_bounds++] = atoi(p);
		const char *c = strchr(p, ',');
		if (!c)
			break;
		p = c + 1;
	}
	if (start_mesh(join, delay_ms) < 0)
		return 1;
	/* wait for n_bounds connected peers */
	static uint8_t peers[MESH_STAGE_MAX_STAGES][NET_ID_LEN];
	int n_peers = 0;
	uint64_t end = ml_time_ns() + 20000000000ull;
	while (ml_time_ns() < end) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		const struct mesh_members *mm = mesh_members(mesh);
		n_peers = 0;
		for (size_t i = 0; i < mm->n && n_peers < MESH_STAGE_MAX_STAGES; i++)
			if (!mm->v[i]->self && mesh_peer_connected(mesh, mm->v[i]->id))
				memcpy(peers[n_peers++], mm->v[i]->id, NET_ID_LEN);
		if (n_peers >= n_bounds)
			break;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	if (n_peers < n_bounds) {
		fprintf(stderr, "stage-node: %d peers connected, %d needed\n", n_peers, n_bounds);
		return 1;
	}
	qsort(peers, (size_t)n_peers, NET_ID_LEN, cmp_id);

	struct model *m = NULL;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	if (model_load(&m, &mp) < 0) {
		fprintf(stderr, "stage-node: %s\n", ml_last_error());
		return 1;
	}
	int n_layer = model_hparams(m)->n_layer, n_vocab = model_hparams(m)->n_vocab;
	model_free(m);

	struct eng_params ep = eng_default_params();
	ep.model_path = path;
	ep.n_parallel = n_parallel;
	ep.n_ctx = 256;
	ep.n_batch = 64;
	ep.n_threads = n_threads;
	if (kv_f32) /* solo and split alike; the PLAN gives the workers this type */
		ep.kv_type = MODEL_KV_F32;
	/* the mesh keeps answering pings while we compute */
	pthread_t th;
	pthread_create(&th, NULL, loop_main, NULL);
	static struct coll solo_alone[MAX_RUNS], solo_all[N_REQ], split_alone[MAX_RUNS],
	    split_all[N_REQ];
	double solo_tps[MAX_RUNS] = {0}, split_tps[MAX_RUNS] = {0};
	struct eng *e = NULL;
	if (eng_init(&e, &ep) < 0 ||
	    run(e, n_gen, n_vocab, solo_alone, solo_all, runs, !bench, solo_tps) < 0) {
		fprintf(stderr, "stage-node: solo: %s\n", ml_last_error());
		return 1;
	}
	eng_free(e);

	struct mesh_stage_plan plan;
	memset(&plan, 0, sizeof(plan));
	plan.epoch = 1;
	plan.n_layer = (uint32_t)n_layer;
	plan.n_stages = (uint32_t)n_bounds + 1;
	for (uint32_t i = 0; i < plan.n_stages; i++) {
		memcpy(plan.stages[i].id, i == 0 ? mesh_node_id(mesh) : peers[i - 1], NET_ID_LEN);
		plan.stages[i].layer_begin = i == 0 ? 0 : (uint32_t)bounds[i - 1];
		plan.stages[i].layer_end =
		    i + 1 == plan.n_stages ? (uint32_t)n_layer : (uint32_t)bounds[i];
	}
	for (uint32_t i = 0; i < plan.n_stages; i++)
		memcpy(plan.stages[i].next, plan.stages[(i + 1) % plan.n_stages].id, NET_ID_LEN);
	struct mesh_stage_link_params lp = {
	    .mesh = mesh,
	    .base = base,
	    .model_path = path,
	    .plan = &plan,
	    .act_dtype = f16 ? ML_DTYPE_F16 : ML_DTYPE_F32,
	    .timeout_ms = 60000,
	};
	struct mesh_traffic t0, t1, t2;
	traffic(&t0);
	if (mesh_stage_link_new(&ep.link, &lp) < 0) {
		fprintf(stderr, "stage-node: %s\n", ml_last_error());
		return 1;
	}
	struct eng_link *link = ep.link;
	g_link = link;
	g_plan = plan;
	g_path = path;
	g_act = lp.act_dtype;
	ep.link_wait_ms = 60000;
	ep.layer_end = bounds[0];
	ep.link_owned = true;
	int rc = eng_init(&e, &ep);
	if (rc < 0) {
		fprintf(stderr, "stage-node: split engine: %s\n", ml_last_error());
		return 1;
	}
	traffic(&t1);
	g_eng = e;
	g_split_phase = 1;
	if (run(e, n_gen, n_vocab, split_alone, split_all, runs, !bench, split_tps) < 0) {
		fprintf(stderr, "stage-node: split run failed\n");
		return 1;
	}
	traffic(&t2);
	struct eng_stats st;
	eng_get_stats(e, &st);
	struct mesh_stage_link_stats ls;
	memset(&ls, 0, sizeof(ls));
	g_eng = NULL;
	if (g_replans == 0)
		mesh_stage_link_get_stats(link, &ls);
	eng_free(e);

	bool same = true;
	for (int r = 0; r < runs; r++)
		same = same && memcmp(solo_alone[r].tokens, split_alone[r].tokens,
		                      sizeof(int32_t) * (size_t)n_gen) == 0;
	for (int i = 0; i < (bench ? 0 : N_REQ); i++)
		same = same && solo_all[i].n == split_all[i].n &&
		       memcmp(solo_all[i].tokens, split_all[i].tokens,
		              sizeof(int32_t) * (size_t)solo_all[i].n) == 0;
	uint64_t load_bytes = 0, load_other = 0;
	for (int k = 0; k < 256; k++) {
		uint64_t d = t1.tx_bytes[k] - t0.tx_bytes[k];
		if (k == NET_MSG_STAGE_OPEN || k == NET_MSG_STAGE_ACK)
			load_bytes += d;
		else if (k >= NET_MSG_STAGE_OPEN && k <= NET_MSG_STAGE_ACK)
			load_other += d;
	}
	print_tokens("solo tokens", &solo_alone[0]);
	print_tokens("split tokens", &split_alone[0]);
	printf("plan: %u stages, layers 0-%d here\n", plan.n_stages, bounds[0] - 1);
	printf("load: %llu bytes of PLAN/ACK sent by the host, %llu other STAGE bytes, 0 weight "
	       "bytes\n",
	       (unsigned long long)load_bytes, (unsigned long long)load_other);
	uint64_t fwd = t2.tx_bytes[NET_MSG_STAGE_FORWARD] - t1.tx_bytes[NET_MSG_STAGE_FORWARD];
	printf("activations: host sent %llu RUN_BATCH bytes for %llu batch entries (%.0f bytes "
	       "per entry, %s), head on host %.3f s of %.3f s waiting\n",
	       (unsigned long long)fwd, (unsigned long long)st.n_step_tokens,
	       (double)fwd / (double)(st.n_step_tokens ? st.n_step_tokens : 1), f16 ? "f16" : "f32",
	       ls.head_s, ls.wait_s);
	printf("tokens/s (one request, decode): solo %.1f, split %.1f\n", solo_tps[0], split_tps[0]);
	if (bench) {
		/* Where the split time went, over every forward pass of the split
		 * engine: host = its own layers (+ embedding), wait = blocked on the
		 * pipeline (workers' layers, the hops, the head), head = the
		 * output head on the host. */
		printf("bench-json: {\"stages\": %u, \"delay_ms\": %d, \"n_gen\": %d, \"runs\": %d, ",
		       plan.n_stages, delay_ms, n_gen, runs);
		print_list("solo_tps", solo_tps, runs);
		printf(", ");
		print_list("split_tps", split_tps, runs);
		printf(", \"steps\": %llu, \"step_tokens\": %llu, \"busy_s\": %.6f, "
		       "\"link_batches\": %llu, \"wait_s\": %.6f, \"head_s\": %.6f, "
		       "\"fwd_bytes\": %llu, \"identical\": %s}\n",
		       (unsigned long long)st.n_steps, (unsigned long long)st.n_step_tokens,
		       st.busy_s, (unsigned long long)ls.n_batches, ls.wait_s, ls.head_s,
		       (unsigned long long)fwd, same ? "true" : "false");
	}
	if (g_replans)
		printf("re-planned %d time(s) after a stage died; now %u stage(s)\n", g_replans,
		       g_plan.n_stages);
	printf("identical: %s\n", same ? "yes" : "no");
	fflush(stdout);
	loop_stop = 1;
	pthread_join(th, NULL);
	mesh_free(mesh);
	return same && load_other == 0 ? 0 : 2;
}

static void on_term(evutil_socket_t fd, short w, void *u)
{
	(void)fd, (void)w;
	event_base_loopbreak(u);
}

static int worker_main(const char *path, const char *join, const char *token_file, int n_threads,
                       int delay_ms)
{
	if (start_mesh(join, delay_ms) < 0)
		return 1;
	struct mesh_stage_worker_params wp = {
	    .base = base, .model_path = path, .n_threads = n_threads};
	if (mesh_stage_worker_new(&worker, mesh, &wp) < 0) {
		fprintf(stderr, "stage-node: %s\n", ml_last_error());
		return 1;
	}
	char tok[MESH_TOKEN_MAX_LEN];
	if (mesh_invite_token(mesh, tok, sizeof(tok)) < 0)
		return 1;
	if (token_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp", token_file);
		FILE *f = fopen(tmp, "w");
		if (!f)
			return 1;
		fprintf(f, "%s\n", tok);
		fclose(f);
		rename(tmp, token_file);
	}
	struct event *sig_term = evsignal_new(base, SIGTERM, on_term, base);
	struct event *sig_int = evsignal_new(base, SIGINT, on_term, base);
	event_add(sig_term, NULL);
	event_add(sig_int, NULL);
	event_base_dispatch(base);
	struct mesh_stage_worker_stats st;
	mesh_stage_worker_get_stats(worker, &st);
	printf("worker-json: {\"stage\": %d, \"n_stages\": %d, \"layers\": [%d, %d], "
	       "\"batches\": %llu, \"tokens\": %llu, \"compute_s\": %.6f}\n",
	       st.stage, st.n_stages, st.layer_begin, st.layer_end,
	       (unsigned long long)st.n_batches, (unsigned long long)st.n_tokens, st.compute_s);
	fflush(stdout);
	_exit(0); /* the compute thread may still be busy: no orderly teardown */
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr,
		        "usage: stage-node worker|host --model PATH ... (see the source)\n");
		return 1;
	}
	const char *mode = argv[1], *path = NULL, *token_file = NULL, *join = NULL, *split = "1";
	int n_threads = 1, n_gen = 32, n_parallel = 4, delay_ms = 0, runs = 1;
	bool f16 = false, bench = false, kv_f32 = false;
	const char *marker = NULL;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--f16")) {
			f16 = true;
			continue;
		}
		if (!strcmp(a, "--kv-f32")) {
			kv_f32 = true;
			continue;
		}
		if (!strcmp(a, "--bench")) {
			bench = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "stage-node: %s needs a value\n", a);
			return 1;
		}
		i++;
		if (!strcmp(a, "--model"))
			path = v;
		else if (!strcmp(a, "--token-file"))
			token_file = v;
		else if (!strcmp(a, "--join"))
			join = v;
		else if (!strcmp(a, "--split"))
			split = v;
		else if (!strcmp(a, "--threads"))
			n_threads = atoi(v);
		else if (!strcmp(a, "--n-gen"))
			n_gen = atoi(v);
		else if (!strcmp(a, "--parallel"))
			n_parallel = atoi(v);
		else if (!strcmp(a, "--marker"))
			marker = v;
		else if (!strcmp(a, "--delay-ms"))
			delay_ms = atoi(v);
		else if (!strcmp(a, "--runs"))
			runs = atoi(v);
		else {
			fprintf(stderr, "stage-node: unknown option %s\n", a);
			return 1;
		}
	}
	if (!path || n_gen < 2 || n_gen > MAX_GEN || n_parallel < 1 || runs < 1 || runs > MAX_RUNS) {
		fprintf(stderr, "stage-node: --model is required; --n-gen 2..%d, --runs 1..%d\n",
		        MAX_GEN, MAX_RUNS);
		return 1;
	}
	if (sodium_init() < 0)
		return 1;
	evthread_use_pthreads();
	base = event_base_new();
	if (!strcmp(mode, "worker"))
		return worker_main(path, join, token_file, n_threads, delay_ms);
	g_marker = marker;
	if (!strcmp(mode, "host") && join)
		return host_main(path, join, split, n_threads, n_gen, n_parallel, f16, kv_f32,
		                 delay_ms, runs, bench);
	fprintf(stderr, "stage-node: mode worker, or host with --join\n");
	return 1;
}
