/* The mesh inside `mesh-llm` (serve): flags -> mesh_config, the node
 * identity, what the node advertises (role, memory, models on disk, the
 * model it serves), the HTTP tunnel (api_tunnel.h) as the API's front, and
 * the clean leave on shutdown. Loop thread only. */
#ifndef APP_MESH_H
#define APP_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct api_server;
struct app_mesh;
struct eng;
struct eng_link;

#define APP_MESH_MAX_JOIN 16

struct app_mesh_opts {
	const char *join[APP_MESH_MAX_JOIN]; /* --join TOKEN (borrowed) */
	size_t n_join;
	bool client;         /* --client: lite client, ephemeral key, no model */
	int bind_port;       /* --bind-port, 0 = ephemeral */
	double max_vram_gb;  /* --max-vram, < 0 = not given */
	double net_delay_ms; /* --net-delay-ms (test knob), 0 = off */
	double net_jitter_ms;
	double net_loss_pct;
	const char *model_id; /* the model this node will serve, NULL = none */
	/* Split inference (see app_mesh_host_begin). */
	const char *model_path; /* this node's model file: it also serves as a
	                         * pipeline stage for hosts that plan it in */
	int n_threads;          /* stage compute threads */
	bool force_split;       /* --split */
	const double *ratios;   /* --tensor-split, borrowed */
	uint32_t n_ratios;
	uint64_t kv_positions; /* planned KV positions, all slots together */
	int kv_elem_bytes;     /* bytes per KV cache element (2: f16, 4: f32; 0: 2) */
	/* Called on the loop when this node is elected and the first plan is
	 * ready: load the engine with |link| (NULL: solo) running layers
	 * [0, layer_end) here (then app_mesh_set_engine, app_mesh_model_ready). */
	void (*start_engine)(void *user, struct eng_link *link, int layer_end);
	/* Called on the loop when this node stepped down as host and no request
	 * runs on its engine any more: detach the engine from the API and free
	 * it (the pipeline is already aborted). A later election may call
	 * start_engine again. */
	void (*stop_engine)(void *user);
	void *start_user;
};

/* Starts the node on |base| and puts the tunnel in front of |api|. Prints
 * "Invite token: ..." for full nodes. Returns 0 or a negative ML_ERR_*
 * with ml_last_error() set. */
int app_mesh_start(struct app_mesh **out, struct event_base *base, const struct app_mesh_opts *o,
                   struct api_server *api, const char *api_key);
/* The local model is loaded and attached to the API: serve it. */
void app_mesh_model_ready(struct app_mesh *am, const char *model_id);
/* This node has a model (--model): it takes part in the election of the
 * model's host (mesh_plan_election: highest advertised memory among the
 * nodes that have the same file and were started with it, ties by node id,
 * re-run about 1 s after every membership change). A node that started
 * the mesh elects at once; a joining node once it joined.
 *   Elected: plan the model over the mesh and call o->start_engine once it
 *   fits (now, or after peers join; until then /v1 requests get 503
 *   "Waiting for more peers ..."), then re-plan on membership changes
 *   (eng_relink on the engine given to app_mesh_set_engine; a plan equal to
 *   the running one keeps the pipeline as it is).
 *   Not elected: the node's API tunnels to the elected host and its stage
 *   worker serves whatever layers the host's plan gives it (maybe none).
 *   Not elected any more (a bigger node joined): it keeps serving until the
 *   new host announces it is ready, then its API tunnels there, its running
 *   requests finish (cancelled after 30 s), and o->stop_engine frees its
 *   engine.
 * Returns 0 or a negative ML_ERR_*. */
int app_mesh_host_begin(struct app_mesh *am);
/* The engine start_engine asked for is loaded (NULL: it failed). */
void app_mesh_set_engine(struct app_mesh *am, struct eng *e);
/* Before eng_free on shutdown: fails the pipeline so a forward() blocked
 * on the (stopped) loop returns. Accepts NULL. */
void app_mesh_stop_split(struct app_mesh *am);
/* Tells peers we leave, then calls |done| from the loop (at most ~1 s). */
void app_mesh_leave(struct app_mesh *am, void (*done)(void *user), void *user);
/* Detaches from |api| and frees (call before api_server_free). Accepts NULL. */
void app_mesh_free(struct app_mesh *am);
/* This node's invite token ("" for lite clients). */
const char *app_mesh_token(const struct app_mesh *am);

#endif
