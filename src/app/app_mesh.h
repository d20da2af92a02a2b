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
};

/* Starts the node on |base| and puts the tunnel in front of |api|. Prints
 * "Invite token: ..." for full nodes. Returns 0 or a negative ML_ERR_*
 * with ml_last_error() set. */
int app_mesh_start(struct app_mesh **out, struct event_base *base, const struct app_mesh_opts *o,
                   struct api_server *api, const char *api_key);
/* The local model is loaded and attached to the API: serve it. */
void app_mesh_model_ready(struct app_mesh *am, const char *model_id);
/* Tells peers we leave, then calls |done| from the loop (at most ~1 s). */
void app_mesh_leave(struct app_mesh *am, void (*done)(void *user), void *user);
/* Detaches from |api| and frees (call before api_server_free). Accepts NULL. */
void app_mesh_free(struct app_mesh *am);
/* This node's invite token ("" for lite clients). */
const char *app_mesh_token(const struct app_mesh *am);

#endif
