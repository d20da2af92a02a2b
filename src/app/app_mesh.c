/* The mesh inside `mesh-llm` serve (see app_mesh.h): wiring only; the
 * protocol lives in src/mesh, the HTTP tunnel in src/api/api_tunnel.c. */
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/api_tunnel.h"
#include "app/app_mesh.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "mesh/mesh.h"
#include "mesh/mesh_local.h"
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
};

static void on_stream(struct mesh *mesh, struct mesh_stream *s, uint8_t stream_type,
                      const uint8_t peer[NET_ID_LEN], void *user)
{
	struct app_mesh *am = user;
	(void)mesh, (void)peer;
	if (stream_type == NET_STREAM_HTTP && am->tun)
		api_tunnel_accept(am->tun, s);
	/* anything else (stage streams) is not served yet: reset on return */
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
	cfg.version = "mesh-llm";
	cfg.join = o->join;
	cfg.n_join = o->n_join;
	if (!o->client && o->n_join == 0)
		cfg.mesh_file = mesh_file(mfile, sizeof(mfile));
	cfg.cb.on_stream = on_stream;
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
	api_server_set_front(api, api_tunnel_front(am->tun));
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
	api_tunnel_set_local(am->tun, model_id, true);
	mesh_set_role(am->mesh, MESH_ROLE_HOST);
	if (mesh_set_serving(am->mesh, model_id, NULL, NULL, 0, 0, 0))
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
	mesh_free(am->mesh);
	free(am);
}

const char *app_mesh_token(const struct app_mesh *am)
{
	return am->token;
}
