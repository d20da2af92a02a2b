/* The mesh inside `mesh-llm` serve (see app_mesh.h): wiring only; the
 * protocol lives in src/mesh, the HTTP tunnel in src/api/api_tunnel.c. */
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <sys/time.h>

#include "api/api.h"
#include "api/api_request.h"
#include "api/api_tunnel.h"
#include "app/app_mesh.h"
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "engine/eng.h"
#include "engine/eng_link.h"
#include "gguf/gguf.h"
#include "mesh/mesh.h"
#include "mesh/mesh_local.h"
#include "mesh/mesh_plan.h"
#include "mesh/mesh_stage.h"
#include "net/net_quic.h"

/* Share of physical memory a CPU node advertises by default. */
#define APP_MESH_RAM_SHARE 0.75

struct app_mesh {
	struct event_base *base;
	struct mesh *mesh;
	struct api_server *api;
	struct api_tunnel *tun;
	char token[MESH_TOKEN_MAX_LEN];
	char model_id[MESH_NAME_MAX + 1];
	struct api_front front; /* ours: the split's status and 503, then the tunnel's */
	bool model_ready;
	uint64_t vram;

	/* split inference */
	struct app_mesh_opts o;
	char model_path[PATH_MAX];
	char fp_hex[2 * MESH_STAGE_FP_LEN + 1];
	struct mesh_stage_worker *worker;
	uint64_t worker_epoch;
	bool is_host;                  /* plans the model (app_mesh_host_begin) */
	bool engine_started;           /* start_engine called */
	struct eng *eng;               /* loaded; relink target */
	struct eng_link *link;         /* current pipeline (owned by the engine) */
	struct mesh_plan *plan, *cand; /* current plan (status OK or NO_FIT) */
	bool have_plan;
	uint64_t epoch;
	struct mesh_plan_model pm;
	uint64_t *layer_bytes;
	struct event *timer;
	double replan_at; /* monotonic seconds; 0 = none pending */
	char waiting[256];
	bool waiting_banner;
	double adopt_next;
	uint8_t refused_id[NET_ID_LEN];
	char refused_fp[MESH_FP_MAX + 1];
	char plan_words[1024];

	/* election (nodes started with --model; see app_mesh_host_begin) */
	bool candidate;       /* votes and may be elected for model_id */
	bool elect_started;   /* the first election is scheduled */
	double started_at;    /* app_mesh_host_begin, monotonic seconds */
	struct mesh_plan_election el;
	bool standby_banner;  /* printed "served by the mesh" with the API address */
	bool stepping_down;   /* not elected any more; the engine still runs */
	bool released;        /* ... and the API tunnels to the new host now */
	double release_by;    /* release even if the new host is not ready by then */
	double drain_by;      /* cancel requests still running then */
	bool drain_cancelled;
	double first_plan_by; /* newly elected: plan by then even if the old host still splits */
};

/* What a node started with --model puts in its announcement's extra JSON:
 * it may be elected host of the model it serves (a node that only offers
 * its ~/.models copy as a stage does not). */
#define APP_MESH_EXTRA_CANDIDATE "{\"host_candidate\":true}"
/* A node that steps down waits this long for the new host to announce it
 * is ready, then this long for its running requests. */
#define APP_MESH_RELEASE_WAIT_S 60.0
#define APP_MESH_DRAIN_WAIT_S 30.0
/* A newly elected host gives the old host at most this long to leave its
 * pipeline before it sends its own plan to the stages. Only a courtesy: a
 * stage drops (and refuses on the old host's stream) whatever an old plan
 * still sends once it has our plan (mesh_stage.h, stale messages), so our
 * pipeline is safe either way; the grace only spares the old host's running
 * requests a failed batch when it steps down at about the same time. */
#define APP_MESH_OLD_HOST_WAIT_S 0.5

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_stream(struct mesh *mesh, struct mesh_stream *s, uint8_t stream_type,
                      const uint8_t peer[NET_ID_LEN], void *user)
{
	struct app_mesh *am = user;
	(void)mesh, (void)peer;
	if (stream_type == NET_STREAM_HTTP && am->tun)
		api_tunnel_accept(am->tun, s);
	else if (stream_type == NET_STREAM_STAGE && am->worker)
		mesh_stage_worker_accept(am->worker, s);
	/* anything else is reset on return */
}

static bool plan_has_stage(const struct mesh_plan *p, const uint8_t id[NET_ID_LEN])
{
	for (uint32_t i = 1; p && i < p->n_stages; i++)
		if (memcmp(p->stages[i].id, id, NET_ID_LEN) == 0)
			return true;
	return false;
}

static uint64_t now_ms(void)
{
	return (uint64_t)(now_s() * 1000.0);
}

static void on_change(struct mesh *mesh, const struct mesh_member *m, enum mesh_event ev,
                      void *user)
{
	struct app_mesh *am = user;
	(void)mesh;
	if (m->self)
		return;
	if (am->candidate && am->elect_started)
		mesh_plan_election_touch(&am->el, now_ms());
	if (!am->is_host)
		return;
	if ((ev == MESH_EV_DEAD || ev == MESH_EV_LEFT) && am->have_plan && am->link &&
	    plan_has_stage(am->plan, m->id)) {
		char hex[NET_ID_HEX_LEN + 1];
		net_id_to_hex(m->id, hex);
		ML_WARN("split: stage node %.8s is %s; re-planning", hex,
		        ev == MESH_EV_DEAD ? "dead" : "gone");
		mesh_stage_link_abort(am->link, "a stage node left the mesh");
		am->replan_at = now_s(); /* at once */
		return;
	}
	if (am->replan_at == 0)
		am->replan_at = now_s() + 1.0; /* settle */
}

static uint64_t physical_ram(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	if (pages <= 0 || psz <= 0)
		return 0;
	return (uint64_t)pages * (uint64_t)psz;
}

/* $HOME/.mesh-llm/mesh: the mesh a first node started, kept across
 * restarts so its invite tokens stay valid. */
static const char *mesh_file(char *out, size_t cap)
{
	const char *home = getenv("HOME");
	if (!home || !*home)
		return NULL;
	int n = snprintf(out, cap, "%s/.mesh-llm/mesh", home);
	return n > 0 && (size_t)n < cap ? out : NULL;
}

static int load_model_info(struct app_mesh *am);

/* ---- split inference: planning on the host -------------------------------- */

/* GB (10^9) with one decimal, or two significant digits below 0.1 GB. */
static void fmt_gb(char *out, size_t cap, uint64_t bytes)
{
	double gb = (double)bytes / 1e9;
	snprintf(out, cap, gb >= 0.1 || gb == 0 ? "%.1f" : "%.2g", gb);
}

static void set_waiting(struct app_mesh *am, const char *msg)
{
	if (strcmp(am->waiting, msg ? msg : "") == 0)
		return;
	snprintf(am->waiting, sizeof(am->waiting), "%s", msg ? msg : "");
	if (msg && *msg) {
		printf("%s\n", msg);
		fflush(stdout);
		ML_WARN("split: %s", msg);
	}
}

/* The candidate nodes: this one (the host, index 0) and every alive,
 * connected peer. */
static size_t gather_nodes(struct app_mesh *am, struct mesh_plan_node *nodes, size_t cap)
{
	size_t n = 0;
	memset(&nodes[0], 0, sizeof(nodes[0]));
	memcpy(nodes[0].id, mesh_node_id(am->mesh), NET_ID_LEN);
	nodes[0].budget = am->vram;
	nodes[0].has_model = true;
	n = 1;
	const struct mesh_members *ms = mesh_members(am->mesh);
	for (size_t i = 0; ms && i < ms->n && n < cap; i++) {
		const struct mesh_member *m = ms->v[i];
		if (m->self || !m->ann || m->state != MESH_ALIVE ||
		    !mesh_peer_connected(am->mesh, m->id))
			continue;
		struct mesh_plan_node *d = &nodes[n++];
		memset(d, 0, sizeof(*d));
		memcpy(d->id, m->id, NET_ID_LEN);
		d->budget = m->ann->vram_bytes;
		d->rtt_us = m->rtt_us ? m->rtt_us : MESH_PLAN_RTT_UNKNOWN;
		d->client = m->ann->role == MESH_ROLE_CLIENT;
		bool same_name = strcmp(m->ann->serving, am->model_id) == 0;
		d->has_model = same_name && (!m->ann->fingerprint[0] ||
		                             strcmp(m->ann->fingerprint, am->fp_hex) == 0);
		if (same_name && !d->has_model && memcmp(am->refused_id, m->id, NET_ID_LEN) != 0) {
			char hex[NET_ID_HEX_LEN + 1];
			net_id_to_hex(m->id, hex);
			memcpy(am->refused_id, m->id, NET_ID_LEN);
			ML_ERROR(
			    "split: node %.8s has a different file for %s (fingerprint %.16s..., "
			    "ours %.16s...): not used as a stage",
			    hex, am->model_id, m->ann->fingerprint, am->fp_hex);
		}
	}
	return n;
}

static void replan(struct app_mesh *am)
{
	static struct mesh_plan_node nodes[MESH_PLAN_MAX_NODES];
	size_t n = gather_nodes(am, nodes, MESH_PLAN_MAX_NODES);
	/* the running stages stay while usable: no re-plan on RTT jitter */
	static uint8_t keep[MESH_PLAN_MAX_STAGES * NET_ID_LEN];
	uint32_t n_keep = 0;
	for (uint32_t i = 1; am->have_plan && am->plan->status == MESH_PLAN_OK &&
	                     i < am->plan->n_stages && n_keep < MESH_PLAN_MAX_STAGES;
	     i++)
		memcpy(keep + (size_t)n_keep++ * NET_ID_LEN, am->plan->stages[i].id, NET_ID_LEN);
	struct mesh_plan_params pp = {
	    .epoch = am->epoch + 1,
	    .force_split = am->o.force_split,
	    .ratios = am->o.n_ratios ? am->o.ratios : NULL,
	    .n_ratios = am->o.n_ratios,
	    .keep = n_keep ? keep : NULL,
	    .n_keep = n_keep,
	};
	int rc = mesh_plan_build(am->cand, &am->pm, nodes, n, 0, &pp);
	if (rc) {
		ML_WARN("split: cannot plan: %s", ml_last_error());
		return;
	}
	if (am->have_plan && mesh_plan_equal(am->cand, am->plan)) {
		/* same stages, same ranges: the running pipeline stays */
		if (am->plan->status == MESH_PLAN_OK && am->link)
			ML_INFO("split: membership changed, plan unchanged (epoch %llu): the "
			        "pipeline keeps running",
			        (unsigned long long)am->plan->epoch);
		return;
	}
	mesh_plan_describe(am->cand, am->plan_words, sizeof(am->plan_words));
	if (am->cand->status != MESH_PLAN_OK) {
		char msg[256];
		if (am->cand->status == MESH_PLAN_NO_FIT && am->cand->bad_stage < 0) {
			char need[32], have[32];
			fmt_gb(need, sizeof(need), am->cand->need_bytes);
			fmt_gb(have, sizeof(have), am->cand->have_bytes);
			snprintf(msg, sizeof(msg),
			         "Waiting for more peers — need %s GB, have %s GB", need, have);
		} else {
			mesh_plan_describe(am->cand, msg, sizeof(msg));
			char *semi = strstr(msg, "; not used");
			if (semi)
				*semi = '\0';
		}
		set_waiting(am, msg);
		snprintf(am->plan_words, sizeof(am->plan_words), "%s", msg);
		if (!am->waiting_banner) {
			am->waiting_banner = true;
			int port = api_server_port(am->api);
			printf("mesh-llm waiting for peers: %s\n", am->model_id);
			printf("  API:   http://localhost:%d/v1  (503 until the model fits)\n",
			       port);
			printf("  mesh:  http://localhost:%d/mesh/status\n", port);
			fflush(stdout);
		}
		struct mesh_plan *t = am->plan;
		am->plan = am->cand;
		am->cand = t;
		am->have_plan = true;
		am->epoch++;
		if (am->link) {
			mesh_stage_link_abort(am->link, "not enough memory left in the mesh");
			am->link = NULL;
		}
		mesh_set_role(am->mesh, MESH_ROLE_STANDBY);
		return;
	}
	/* a plan that runs */
	if (am->engine_started && !am->eng)
		return; /* loading: re-plan when it is up */
	struct eng_link *link = NULL;
	int layer_end = 0;
	if (am->cand->n_stages > 1) {
		struct mesh_stage_plan sp;
		if (mesh_stage_plan_from(&sp, am->cand)) {
			ML_WARN("split: %s", ml_last_error());
			return;
		}
		struct mesh_stage_link_params lp = {.mesh = am->mesh,
		                                    .base = am->base,
		                                    .model_path = am->model_path,
		                                    .plan = &sp,
		                                    .act_dtype = ML_DTYPE_F32,
		                                    .timeout_ms = 60000};
		if (mesh_stage_link_new(&link, &lp)) {
			ML_WARN("split: cannot set up the pipeline: %s", ml_last_error());
			return;
		}
		layer_end = (int)sp.stages[0].layer_end;
	}
	struct mesh_plan *t = am->plan;
	am->plan = am->cand;
	am->cand = t;
	am->have_plan = true;
	am->epoch++;
	set_waiting(am, "");
	printf("split plan (epoch %llu): %s\n", (unsigned long long)am->plan->epoch,
	       am->plan_words);
	fflush(stdout);
	ML_INFO("split: plan %s", am->plan_words);
	uint32_t end = am->plan->stages[0].layer_end;
	mesh_set_serving(am->mesh, am->model_id, am->fp_hex, NULL, 0, end, am->plan->n_layer);
	struct eng_link_setup prev = {0};
	if (am->link) { /* the old pipeline goes; the engine frees it */
		mesh_stage_link_get_setup(am->link, &prev);
		mesh_stage_link_abort(am->link, "re-planned");
	}
	am->link = link;
	/* A running engine keeps its slots, context and KV type: the stages get
	 * the plan now and load while the engine loads its new range (the
	 * first plan goes from start_engine, which knows the engine's setup). */
	if (link && am->engine_started && prev.n_seq > 0 && mesh_stage_link_send_plan(link, &prev))
		ML_WARN("split: cannot send the plan early (%s); it goes when this node has "
		        "loaded its layers",
		        ml_last_error());
	if (!am->engine_started) {
		am->engine_started = true;
		am->o.start_engine(am->o.start_user, link, layer_end);
		return;
	}
	if (eng_relink(am->eng, link, layer_end, true))
		ML_WARN("split: relink failed: %s", ml_last_error());
}

/* A standby node (--join, no --model) with the file of a model a host
 * serves in ~/.models offers itself as a pipeline stage for it: it checks
 * the content fingerprint against the host's and refuses (once, in words)
 * a different file of the same name. */
static void adopt_model(struct app_mesh *am)
{
	if (am->o.client || am->o.model_id || am->worker || now_s() < am->adopt_next)
		return;
	am->adopt_next = now_s() + 1.0;
	const char *home = getenv("HOME");
	if (!home || !*home)
		return;
	struct mesh_model_info *local = calloc(MESH_ANN_MAX_MODELS, sizeof(*local));
	if (!local)
		return;
	int nl = mesh_models_scan(NULL, local, MESH_ANN_MAX_MODELS);
	const struct mesh_members *ms = mesh_members(am->mesh);
	for (size_t i = 0; ms && i < ms->n && !am->worker; i++) {
		const struct mesh_member *m = ms->v[i];
		if (m->self || !m->ann || m->state != MESH_ALIVE ||
		    m->ann->role == MESH_ROLE_CLIENT || !m->ann->serving[0] ||
		    !m->ann->fingerprint[0])
			continue;
		for (int k = 0; k < nl; k++) {
			const char *name = local[k].name;
			const char *b = strrchr(name, '/');
			b = b ? b + 1 : name;
			size_t bl = strlen(b);
			if (bl > 5 && strcmp(b + bl - 5, ".gguf") == 0)
				bl -= 5;
			if (bl != strlen(m->ann->serving) || strncmp(b, m->ann->serving, bl) != 0)
				continue;
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s/.models/%s", home, name);
			uint8_t fp[MESH_STAGE_FP_LEN];
			char hex[2 * MESH_STAGE_FP_LEN + 1];
			if (mesh_stage_fingerprint_file(path, fp))
				continue;
			mesh_stage_fingerprint_hex(fp, hex);
			if (strcmp(hex, m->ann->fingerprint) != 0) {
				if (strcmp(am->refused_fp, m->ann->fingerprint) != 0) {
					snprintf(am->refused_fp, sizeof(am->refused_fp), "%s",
					         m->ann->fingerprint);
					ML_ERROR("split: %s is not the same model as the mesh's %s "
					         "(fingerprint %.16s..., the host's %.16s...); not "
					         "offering it as a pipeline stage",
					         path, m->ann->serving, hex, m->ann->fingerprint);
				}
				continue;
			}
			struct mesh_stage_worker_params wp = {
			    .base = am->base,
			    .model_path = path,
			    .n_threads = am->o.n_threads > 0 ? am->o.n_threads
			                                     : (int)sysconf(_SC_NPROCESSORS_ONLN)};
			snprintf(am->model_path, sizeof(am->model_path), "%s", path);
			if (mesh_stage_worker_new(&am->worker, am->mesh, &wp) ||
			    load_model_info(am)) {
				ML_WARN("split: cannot serve %s as a stage: %s", path,
				        ml_last_error());
				mesh_stage_worker_free(am->worker);
				am->worker = NULL;
				continue;
			}
			snprintf(am->model_id, sizeof(am->model_id), "%s", m->ann->serving);
			memcpy(am->fp_hex, hex, sizeof(hex));
			mesh_set_serving(am->mesh, am->model_id, am->fp_hex, NULL, 0, 0, 0);
			ML_INFO("split: offering %s (model %s) as a pipeline stage", path,
			        am->model_id);
			break;
		}
	}
	free(local);
}

/* ---- election of the model's host ----------------------------------------- */

static bool ann_candidate(const struct mesh_ann *a)
{
	if (!a->extra[0])
		return false;
	json_t *j = json_loads(a->extra, 0, NULL);
	bool yes = j && json_is_true(json_object_get(j, "host_candidate"));
	json_decref(j);
	return yes;
}

/* The voters for our model, the same on every node that sees the same
 * gossip: this node and every alive (or merely suspect) member started
 * with the same file (name and fingerprint) that may be elected. */
static size_t gather_voters(struct app_mesh *am, struct mesh_plan_node *nodes, size_t cap)
{
	memset(&nodes[0], 0, sizeof(nodes[0]));
	memcpy(nodes[0].id, mesh_node_id(am->mesh), NET_ID_LEN);
	nodes[0].budget = am->vram;
	nodes[0].has_model = true;
	size_t n = 1;
	const struct mesh_members *ms = mesh_members(am->mesh);
	for (size_t i = 0; ms && i < ms->n && n < cap; i++) {
		const struct mesh_member *m = ms->v[i];
		if (m->self || !m->ann || (m->state != MESH_ALIVE && m->state != MESH_SUSPECT) ||
		    m->ann->role == MESH_ROLE_CLIENT || strcmp(m->ann->serving, am->model_id) != 0 ||
		    strcmp(m->ann->fingerprint, am->fp_hex) != 0 || !ann_candidate(m->ann))
			continue;
		struct mesh_plan_node *d = &nodes[n++];
		memset(d, 0, sizeof(*d));
		memcpy(d->id, m->id, NET_ID_LEN);
		d->budget = m->ann->vram_bytes;
		d->has_model = true;
	}
	return n;
}

/* What a node that does not host says it is: a worker while a host's plan
 * gives its stage layers, standby otherwise. */
static void announce_not_host(struct app_mesh *am)
{
	struct mesh_stage_worker_stats st = {0};
	if (am->worker)
		mesh_stage_worker_get_stats(am->worker, &st);
	bool layers = st.layer_end > st.layer_begin;
	mesh_set_role(am->mesh, layers ? MESH_ROLE_WORKER : MESH_ROLE_STANDBY);
	mesh_set_serving(am->mesh, am->model_id, am->fp_hex, NULL,
	                 layers ? (uint32_t)st.layer_begin : 0, layers ? (uint32_t)st.layer_end : 0,
	                 layers ? am->pm.n_layer : 0);
}

static void print_standby_banner(struct app_mesh *am, const char *host_hex, const char *gb)
{
	if (am->standby_banner)
		return;
	am->standby_banner = true;
	int port = api_server_port(am->api);
	printf("mesh-llm ready: %s is served by the mesh (host: node %.8s, %s GB); this node "
	       "stands by as a pipeline stage\n",
	       am->model_id, host_hex, gb);
	printf("  API:   http://localhost:%d/v1\n", port);
	printf("  mesh:  http://localhost:%d/mesh/status\n", port);
	fflush(stdout);
}

/* True while another node still announces it hosts our model over a split
 * pipeline (a host that just lost the election and has not left its
 * pipeline yet): its batches must not reach stages we give new work. */
static bool old_host_splits(struct app_mesh *am)
{
	const struct mesh_members *ms = mesh_members(am->mesh);
	for (size_t i = 0; ms && i < ms->n; i++) {
		const struct mesh_member *m = ms->v[i];
		if (m->self || !m->ann || m->state != MESH_ALIVE ||
		    m->ann->role != MESH_ROLE_HOST || strcmp(m->ann->serving, am->model_id) != 0 ||
		    strcmp(m->ann->fingerprint, am->fp_hex) != 0)
			continue;
		if (m->ann->n_layers > 0 && m->ann->layer_end < m->ann->n_layers)
			return true;
	}
	return false;
}

static void become_host(struct app_mesh *am)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	/* epochs survive restarts and changes of host: stages refuse plans
	 * older than they saw from the same host */
	uint64_t ep = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	am->epoch = ep > am->epoch ? ep : am->epoch + 1;
	am->is_host = true;
	am->have_plan = false;
	am->waiting_banner = false;
	am->first_plan_by = now_s() + APP_MESH_OLD_HOST_WAIT_S;
	am->replan_at = now_s();
	if (!old_host_splits(am)) {
		am->replan_at = 0;
		replan(am);
	}
}

/* True when the whole model fits this node's own budget (headroom as the
 * planner counts it). */
static bool fits_here(struct app_mesh *am)
{
	struct mesh_plan_node self;
	memset(&self, 0, sizeof(self));
	memcpy(self.id, mesh_node_id(am->mesh), NET_ID_LEN);
	self.budget = am->vram;
	self.has_model = true;
	struct mesh_plan_params pp = {.epoch = am->epoch};
	return mesh_plan_build(am->cand, &am->pm, &self, 1, 0, &pp) == 0 &&
	       am->cand->status == MESH_PLAN_OK && am->cand->n_stages == 1;
}

/* A host that lost the election stops using its pipeline at once: the new
 * host may give its stages other work, and our batches of an older plan
 * would then reach them. Running requests go on with the whole model here
 * (recomputed, same greedy output) when it fits, else they are cancelled. */
static void leave_pipeline(struct app_mesh *am)
{
	mesh_stage_link_abort(am->link, "this node is stepping down as host");
	am->link = NULL;
	am->have_plan = false; /* elected again: plan afresh */
	if (fits_here(am)) {
		ML_INFO("split: stepping down: the running requests finish here on the whole model");
		if (eng_relink(am->eng, NULL, 0, true))
			ML_WARN("split: relink failed: %s", ml_last_error());
		/* tells the new host our pipeline is gone */
		mesh_set_serving(am->mesh, am->model_id, am->fp_hex, NULL, 0, am->pm.n_layer,
		                 am->pm.n_layer);
		return;
	}
	ML_WARN("split: stepping down: the model does not fit here alone; cancelling %d running "
	        "requests",
	        api_server_n_active(am->api));
	api_server_cancel_all(am->api);
	am->release_by = now_s(); /* nothing more to serve here */
	mesh_set_role(am->mesh, MESH_ROLE_STANDBY);
}

static void on_elected(struct app_mesh *am)
{
	char hex[NET_ID_HEX_LEN + 1], gb[32];
	if (!am->el.have_host)
		return; /* we vote for ourselves: cannot happen */
	net_id_to_hex(am->el.host, hex);
	fmt_gb(gb, sizeof(gb), am->el.host_budget);
	bool me = memcmp(am->el.host, mesh_node_id(am->mesh), NET_ID_LEN) == 0;
	ML_INFO("split: elected host for %s: node %.8s (%s GB)%s", am->model_id, hex, gb,
	        me ? ", this node" : "");
	if (me) {
		printf("elected host for %s: node %.8s (%s GB), this node\n", am->model_id, hex, gb);
		fflush(stdout);
		if (am->stepping_down) {
			/* elected again before the engine stopped: keep it */
			am->stepping_down = false;
			if (am->released && am->eng) {
				am->released = false;
				app_mesh_model_ready(am, am->model_id);
			}
			am->released = false;
			am->is_host = true;
			am->replan_at = now_s();
			return;
		}
		if (!am->is_host)
			become_host(am);
		return;
	}
	if (am->is_host) {
		am->is_host = false;
		am->replan_at = 0;
		printf("stepping down as host of %s: node %.8s (%s GB) is elected\n", am->model_id,
		       hex, gb);
		fflush(stdout);
		if (am->engine_started) {
			/* serve on until the new host is ready, then drain */
			am->stepping_down = true;
			am->released = false;
			am->drain_cancelled = false;
			am->release_by = now_s() + APP_MESH_RELEASE_WAIT_S;
			if (am->link && am->eng)
				leave_pipeline(am);
		} else {
			/* was waiting for peers: nothing runs here */
			set_waiting(am, "");
			am->have_plan = false;
			announce_not_host(am);
		}
	}
	if (!am->stepping_down)
		api_tunnel_set_local(am->tun, NULL, false);
	print_standby_banner(am, hex, gb);
}

static void election_tick(struct app_mesh *am)
{
	if (!am->candidate)
		return;
	if (!am->elect_started) {
		/* a joining node elects once it knows the mesh (or gives up
		 * waiting for it and counts itself) */
		if (!mesh_joined(am->mesh) && now_s() - am->started_at < 15.0)
			return;
		am->elect_started = true;
		mesh_plan_election_touch(&am->el, now_ms());
	}
	if (!am->el.pending || now_ms() < am->el.due_ms)
		return;
	static struct mesh_plan_node nodes[MESH_PLAN_MAX_NODES]; /* loop thread only */
	size_t n = gather_voters(am, nodes, MESH_PLAN_MAX_NODES);
	int r = mesh_plan_election_poll(&am->el, nodes, n, now_ms());
	if (r == MESH_PLAN_ELECT_CHANGED)
		on_elected(am);
}

/* A host that lost the election: once the new host announces it serves
 * (or after APP_MESH_RELEASE_WAIT_S), the API tunnels there; once no
 * request runs here any more (cancelled after APP_MESH_DRAIN_WAIT_S), the
 * engine stops and the node is a stage (or idle). */
static void step_down_tick(struct app_mesh *am)
{
	if (!am->stepping_down || (am->engine_started && !am->eng))
		return; /* nothing to do, or still loading */
	char hex[NET_ID_HEX_LEN + 1];
	net_id_to_hex(am->el.host, hex);
	if (!am->released) {
		const struct mesh_member *hm = mesh_member_get(am->mesh, am->el.host);
		bool ready = hm && hm->ann && hm->state == MESH_ALIVE &&
		             hm->ann->role == MESH_ROLE_HOST &&
		             strcmp(hm->ann->serving, am->model_id) == 0;
		if (!ready && now_s() < am->release_by)
			return;
		am->released = true;
		am->model_ready = false;
		/* the API as on any node without the model: tunnel, /health ok */
		api_tunnel_set_local(am->tun, NULL, false);
		announce_not_host(am);
		am->drain_by = now_s() + APP_MESH_DRAIN_WAIT_S;
		ML_INFO("split: node %.8s %s %s now; this node's API tunnels to it, %d running "
		        "requests finish here",
		        hex, ready ? "serves" : "is elected for (not ready yet)", am->model_id,
		        api_server_n_active(am->api));
	}
	int active = api_server_n_active(am->api);
	if (active > 0) {
		if (now_s() > am->drain_by && !am->drain_cancelled) {
			am->drain_cancelled = true;
			ML_WARN("split: %d requests still run after %.0f s; cancelling them", active,
			        APP_MESH_DRAIN_WAIT_S);
			api_server_cancel_all(am->api);
		}
		return;
	}
	if (am->link) {
		mesh_stage_link_abort(am->link, "this node stepped down as host");
		am->link = NULL;
	}
	if (am->o.stop_engine)
		am->o.stop_engine(am->o.start_user);
	am->eng = NULL;
	am->engine_started = false;
	am->have_plan = false;
	am->stepping_down = false;
	am->released = false;
	announce_not_host(am);
	printf("stepped down: the engine for %s stopped; node %.8s hosts it, this node is a "
	       "pipeline stage\n",
	       am->model_id, hex);
	fflush(stdout);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct app_mesh *am = arg;
	(void)fd, (void)what;
	adopt_model(am);
	election_tick(am);
	step_down_tick(am);
	if (am->is_host && am->replan_at > 0 && now_s() >= am->replan_at) {
		if (!am->have_plan && now_s() < am->first_plan_by && old_host_splits(am)) {
			am->replan_at = now_s() + 0.05;
		} else {
			am->replan_at = 0;
			replan(am);
		}
	}
	if (am->is_host && (!am->have_plan || am->plan->status != MESH_PLAN_OK))
		am->replan_at = am->replan_at ? am->replan_at : now_s() + 1.0;
	if (am->worker) {
		struct mesh_stage_worker_stats st;
		mesh_stage_worker_get_stats(am->worker, &st);
		if (st.epoch != am->worker_epoch && st.layer_end > st.layer_begin) {
			am->worker_epoch = st.epoch;
			ML_INFO("split: stage %d of %d for a host: layers %d-%d (epoch %llu)",
			        st.stage, st.n_stages, st.layer_begin, st.layer_end - 1,
			        (unsigned long long)st.epoch);
			if (!am->is_host && !(am->stepping_down && !am->released)) {
				if (!am->model_ready)
					mesh_set_role(am->mesh, MESH_ROLE_WORKER);
				mesh_set_serving(am->mesh, am->model_id, am->fp_hex, NULL,
				                 (uint32_t)st.layer_begin, (uint32_t)st.layer_end,
				                 (uint32_t)(am->pm.n_layer ? am->pm.n_layer : 0));
			}
		}
	}
}

static int load_model_info(struct app_mesh *am)
{
	struct gguf_file *gf = NULL;
	int rc = gguf_open(&gf, am->model_path);
	if (rc)
		return rc;
	free(am->layer_bytes);
	free(am->plan);
	free(am->cand);
	am->layer_bytes = calloc(MESH_PLAN_MAX_LAYERS, sizeof(uint64_t));
	am->plan = calloc(1, sizeof(*am->plan));
	am->cand = calloc(1, sizeof(*am->cand));
	if (!am->layer_bytes || !am->plan || !am->cand) {
		gguf_close(gf);
		return ML_ERR_NOMEM;
	}
	rc = mesh_plan_model_from_gguf(&am->pm, gf, am->layer_bytes, MESH_PLAN_MAX_LAYERS,
	                               am->o.kv_elem_bytes ? am->o.kv_elem_bytes : 2,
	                               am->o.kv_positions ? am->o.kv_positions : 4096);
	gguf_close(gf);
	return rc;
}

int app_mesh_host_begin(struct app_mesh *am)
{
	if (!am->worker || !am->model_id[0])
		return ml_error(ML_ERR_INVALID, "%s: this node has no model file", __func__);
	am->candidate = true;
	am->started_at = now_s();
	mesh_plan_election_init(&am->el, MESH_PLAN_SETTLE_MS_DEFAULT);
	if (am->o.n_join == 0) {
		/* we started the mesh: alone, elect now */
		am->elect_started = true;
		am->el.pending = true;
		am->el.due_ms = now_ms();
		election_tick(am);
	}
	return 0;
}

void app_mesh_set_engine(struct app_mesh *am, struct eng *e)
{
	if (!am)
		return;
	am->eng = e;
	if (am->is_host)
		am->replan_at = now_s(); /* anything that changed while loading */
}

void app_mesh_stop_split(struct app_mesh *am)
{
	if (am && am->link) {
		mesh_stage_link_abort(am->link, "shutting down");
		am->link = NULL;
	}
}

/* ---- our API front: split status and the "waiting" 503, then the tunnel -- */

static bool is_loopback(struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;
	if (!c)
		return false;
	evhttp_connection_get_peer(c, &addr, &port);
	return addr && (strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0);
}

static void send_json(struct evhttp_request *req, int code, const char *reason, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
	if (b && s)
		evbuffer_add(b, s, strlen(s));
	evhttp_send_reply(req, s ? code : 500, s ? reason : "Error", b);
	if (b)
		evbuffer_free(b);
	free(s);
}

static bool front_take(void *ctx, struct evhttp_request *req, int route)
{
	struct app_mesh *am = ctx;
	const struct api_front *tf = api_tunnel_front(am->tun);
	if (!am->is_host && !am->worker)
		return tf->take(tf->ctx, req, route);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (route == API_ROUTE_NONE && path &&
	    (strcmp(path, "/mesh/status") == 0 || strcmp(path, "/mesh/status/") == 0) &&
	    evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		json_t *j = mesh_status_json(am->mesh);
		if (j) {
			json_object_set_new(
			    j, "model", am->model_id[0] ? json_string(am->model_id) : json_null());
			json_object_set_new(j, "model_ready", json_boolean(am->model_ready));
			json_object_set_new(j, "api_port", json_integer(api_server_port(am->api)));
			if (am->token[0] && is_loopback(req))
				json_object_set_new(j, "token", json_string(am->token));
			json_object_set_new(j, "tunnels", json_integer(api_tunnel_n_open(am->tun)));
			json_t *sp = json_object();
			struct mesh_stage_worker_stats wst = {0};
			if (am->worker)
				mesh_stage_worker_get_stats(am->worker, &wst);
			json_object_set_new(
			    sp, "role",
			    json_string(am->is_host         ? "host"
			                : am->stepping_down ? "stepping down"
			                : wst.layer_end > wst.layer_begin ? "worker"
			                                                   : "standby"));
			if (am->candidate && am->el.have_host) {
				char hex[NET_ID_HEX_LEN + 1];
				net_id_to_hex(am->el.host, hex);
				json_t *el = json_object();
				json_object_set_new(el, "host", json_string(hex));
				json_object_set_new(el, "vram_gb",
				                    json_real((double)am->el.host_budget / 1e9));
				json_object_set_new(
				    el, "self",
				    json_boolean(memcmp(am->el.host, mesh_node_id(am->mesh),
				                        NET_ID_LEN) == 0));
				json_object_set_new(el, "elections",
				                    json_integer((json_int_t)am->el.n_runs));
				json_object_set_new(sp, "elected", el);
			}
			if (am->is_host && am->have_plan) {
				json_object_set_new(sp, "plan", json_string(am->plan_words));
				json_object_set_new(sp, "epoch",
				                    json_integer((json_int_t)am->plan->epoch));
				json_object_set_new(sp, "n_stages",
				                    json_integer(am->plan->n_stages));
				if (am->plan->n_stages) {
					json_t *l = json_array();
					json_array_append_new(l, json_integer(0));
					json_array_append_new(
					    l, json_integer(am->plan->stages[0].layer_end));
					json_object_set_new(sp, "layers", l);
				}
			}
			if (am->is_host && am->link) {
				struct mesh_stage_link_stats ls;
				mesh_stage_link_get_stats(am->link, &ls);
				const struct mesh_traffic *tr = mesh_get_traffic(am->mesh);
				json_t *lk = json_object();
				json_object_set_new(lk, "batches",
				                    json_integer((json_int_t)ls.n_batches));
				json_object_set_new(lk, "tokens",
				                    json_integer((json_int_t)ls.n_tokens));
				json_object_set_new(lk, "wait_s", json_real(ls.wait_s));
				/* activations the host sent, all plans together */
				json_object_set_new(
				    lk, "run_batch_bytes_sent",
				    json_integer((json_int_t)tr->tx_bytes[NET_MSG_STAGE_FORWARD]));
				if (ls.n_tokens)
					json_object_set_new(
					    lk, "activation_bytes_per_token",
					    json_real((double)tr->tx_bytes[NET_MSG_STAGE_FORWARD] /
					              (double)ls.n_tokens));
				json_object_set_new(sp, "link", lk);
			}
			if (am->worker) {
				struct mesh_stage_worker_stats st;
				mesh_stage_worker_get_stats(am->worker, &st);
				if (st.layer_end > st.layer_begin) {
					json_t *w = json_object();
					json_t *l = json_array();
					json_array_append_new(l, json_integer(st.layer_begin));
					json_array_append_new(l, json_integer(st.layer_end));
					json_object_set_new(w, "layers", l);
					json_object_set_new(w, "epoch",
					                    json_integer((json_int_t)st.epoch));
					json_object_set_new(w, "batches",
					                    json_integer((json_int_t)st.n_batches));
					/* messages of other plans (an old host's) dropped */
					json_object_set_new(w, "stale_dropped",
					                    json_integer((json_int_t)st.n_stale));
					json_object_set_new(sp, "stage", w);
				}
			}
			json_object_set_new(
			    sp, "waiting", am->waiting[0] ? json_string(am->waiting) : json_null());
			json_object_set_new(j, "split", sp);
		}
		send_json(req, 200, "OK", j);
		json_decref(j);
		return true;
	}
	if (am->is_host && am->waiting[0] &&
	    (route == API_ROUTE_CHAT || route == API_ROUTE_COMPLETION)) {
		json_t *j = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", am->waiting,
		                      "type", "server_error", "param", "code", "waiting_for_peers");
		send_json(req, 503, "Service Unavailable", j);
		json_decref(j);
		return true;
	}
	return tf->take(tf->ctx, req, route);
}

int app_mesh_start(struct app_mesh **out, struct event_base *base, const struct app_mesh_opts *o,
                   struct api_server *api, const char *api_key)
{
	int rc;
	struct net_ident id;
	bool created = false;
	char mfile[PATH_MAX];
	struct app_mesh *am = calloc(1, sizeof(*am));
	if (!am)
		return ML_ERR_NOMEM;
	am->base = base;
	am->api = api;
	am->o = *o;
	if (o->model_path)
		snprintf(am->model_path, sizeof(am->model_path), "%s", o->model_path);
	if (o->model_id)
		snprintf(am->model_id, sizeof(am->model_id), "%s", o->model_id);

	rc = mesh_ident_load(&id, NULL, o->client, &created);
	if (rc) {
		rc = ml_error(rc, "mesh: cannot load the node key: %s", ml_last_error());
		goto fail;
	}
	(void)created; /* mesh_ident_load logs it */

	struct mesh_config cfg;
	mesh_default_config(&cfg);
	cfg.ident = &id;
	cfg.port = (uint16_t)o->bind_port;
	cfg.role = o->client ? MESH_ROLE_CLIENT : MESH_ROLE_STANDBY;
	uint64_t vram = o->client ? 0 : (uint64_t)((double)physical_ram() * APP_MESH_RAM_SHARE);
	if (!o->client && o->max_vram_gb >= 0) {
		uint64_t cap = (uint64_t)(o->max_vram_gb * 1e9);
		if (cap < vram)
			vram = cap;
	}
	cfg.vram_bytes = vram;
	am->vram = vram;
	cfg.version = "mesh-llm";
	cfg.join = o->join;
	cfg.n_join = o->n_join;
	if (!o->client && o->n_join == 0)
		cfg.mesh_file = mesh_file(mfile, sizeof(mfile));
	cfg.cb.on_stream = on_stream;
	cfg.cb.on_change = on_change;
	cfg.user = am;
	rc = mesh_new(&am->mesh, base, &cfg);
	net_ident_clear(&id);
	if (rc)
		goto fail;

	if (o->net_delay_ms > 0 || o->net_jitter_ms > 0 || o->net_loss_pct > 0) {
		net_endpoint_set_netem(mesh_endpoint(am->mesh), (uint32_t)(o->net_delay_ms * 1000),
		                       (uint32_t)(o->net_jitter_ms * 1000), o->net_loss_pct);
		ML_INFO("mesh: TESTING AID: outgoing QUIC packets delayed %.1f ms (+-%.1f ms), "
		        "%.1f%% dropped",
		        o->net_delay_ms, o->net_jitter_ms, o->net_loss_pct);
	}
	if (!o->client) {
		struct mesh_model_info models[MESH_ANN_MAX_MODELS];
		int nm = mesh_models_scan(NULL, models, MESH_ANN_MAX_MODELS);
		if (nm > 0)
			mesh_set_models(am->mesh, models, (size_t)nm);
		if (mesh_invite_token(am->mesh, am->token, sizeof(am->token)) < 0)
			am->token[0] = '\0';
	}

	struct api_tunnel_params tp = {
	    .base = base,
	    .mesh = am->mesh,
	    .api_port = api_server_port(api),
	    .api_key = api_key,
	    .token = am->token[0] ? am->token : NULL,
	};
	rc = api_tunnel_new(&am->tun, &tp);
	if (rc)
		goto fail;
	api_tunnel_set_local(am->tun, o->model_id, false);
	am->front.take = front_take;
	am->front.ctx = am;
	api_server_set_front(api, &am->front);
	if (am->model_path[0] && o->model_id) {
		/* every node with the model file can be a pipeline stage */
		struct mesh_stage_worker_params wp = {
		    .base = base,
		    .model_path = am->model_path,
		    .n_threads =
		        o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN)};
		uint8_t fp[MESH_STAGE_FP_LEN];
		rc = mesh_stage_fingerprint_file(am->model_path, fp);
		if (rc == 0)
			rc = mesh_stage_worker_new(&am->worker, am->mesh, &wp);
		if (rc) {
			rc = ml_error(rc, "mesh: cannot set up the pipeline stage: %s",
			              ml_last_error());
			goto fail;
		}
		mesh_stage_fingerprint_hex(fp, am->fp_hex);
		rc = load_model_info(am);
		if (rc) {
			rc = ml_error(rc, "mesh: cannot read the model's layers: %s",
			              ml_last_error());
			goto fail;
		}
		/* the planner sees who has the model (and which one) from this,
		 * the election who may host it */
		mesh_set_serving(am->mesh, o->model_id, am->fp_hex, NULL, 0, 0, 0);
		mesh_set_extra(am->mesh, APP_MESH_EXTRA_CANDIDATE);
	}
	if (!o->client) {
		am->timer = event_new(base, -1, EV_PERSIST, on_timer, am);
		struct timeval tv = {0, 200000};
		if (!am->timer || event_add(am->timer, &tv)) {
			rc = ml_error(ML_ERR_NOMEM, "mesh: cannot set up the split timer");
			goto fail;
		}
	}
	if (am->token[0]) {
		printf("Invite token: %s\n", am->token);
		fflush(stdout);
	}
	ML_INFO("mesh: %s node on UDP port %u, %.1f GB advertised%s",
	        o->client ? "lite client" : "full", mesh_port(am->mesh), (double)vram / 1e9,
	        o->n_join ? "" : " (started a mesh)");
	*out = am;
	return 0;
fail:
	app_mesh_free(am);
	return rc;
}

void app_mesh_model_ready(struct app_mesh *am, const char *model_id)
{
	if (!am)
		return;
	snprintf(am->model_id, sizeof(am->model_id), "%s", model_id);
	am->model_ready = true;
	api_tunnel_set_local(am->tun, model_id, true);
	mesh_set_role(am->mesh, MESH_ROLE_HOST);
	uint32_t end =
	    am->is_host && am->have_plan && am->plan->n_stages ? am->plan->stages[0].layer_end : 0;
	if (mesh_set_serving(am->mesh, model_id, am->fp_hex[0] ? am->fp_hex : NULL, NULL, 0, end,
	                     end ? am->plan->n_layer : 0))
		ML_WARN("mesh: cannot announce model %s: %s", model_id, ml_last_error());
	else
		ML_INFO("mesh: serving %s to the mesh", model_id);
}

void app_mesh_leave(struct app_mesh *am, void (*done)(void *user), void *user)
{
	mesh_leave(am->mesh, done, user);
}

void app_mesh_free(struct app_mesh *am)
{
	if (!am)
		return;
	if (am->api)
		api_server_set_front(am->api, NULL);
	api_tunnel_free(am->tun);
	if (am->timer)
		event_free(am->timer);
	mesh_free(am->mesh);
	mesh_stage_worker_free(am->worker);
	free(am->plan);
	free(am->cand);
	free(am->layer_bytes);
	free(am);
}

const char *app_mesh_token(const struct app_mesh *am)
{
	return am->token;
}
