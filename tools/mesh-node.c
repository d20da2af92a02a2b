/* mesh-node: runs one mesh node without a model, for multi-process tests
 * and experiments until `mesh-llm serve` wires the mesh in.
 *
 *   mesh-node [--key PATH] [--bind HOST] [--port N] [--join TOKEN]...
 *             [--token-file PATH] [--status-file PATH] [--role R]
 *             [--vram GB] [--serving NAME] [--models-dir DIR]
 *             [--suspect-ms N] [--dead-ms N] [--forget-ms N] [--delay-ms MS]
 *             [--status-ms N] [--mesh-file PATH]
 *
 * Writes its invite token to --token-file and its /mesh/status JSON to
 * --status-file (rewritten atomically every --status-ms, default 100).
 * --delay-ms adds a one-way delay to every packet this node sends (test
 * knob, see net_endpoint_set_netem). SIGINT/SIGTERM leave the mesh
 * cleanly; SIGKILL is what tests use for a crash; SIGUSR1 makes the node
 * announce a new served model name (for change-propagation timing). */
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "mesh/mesh.h"
#include "mesh/mesh_local.h"
#include "net/net_quic.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
	struct event_base *base;
	struct mesh *mesh;
	const char *status_file;
	bool leaving;
	int changes;
};

static void write_file(const char *path, const char *text)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct node *n = arg;
	if (!n->status_file || !n->mesh)
		return;
	json_t *j = mesh_status_json(n->mesh);
	char *s = j ? json_dumps(j, JSON_INDENT(1)) : NULL;
	if (s)
		write_file(n->status_file, s);
	free(s);
	json_decref(j);
}

static void left(void *user)
{
	struct node *n = user;
	event_base_loopbreak(n->base);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct node *n = arg;
	if (n->leaving) {
		event_base_loopbreak(n->base);
		return;
	}
	n->leaving = true;
	mesh_leave(n->mesh, left, n);
}

/* SIGUSR1: start "serving" the next test model, a change to gossip. */
static void on_usr1(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct node *n = arg;
	char name[32];
	snprintf(name, sizeof(name), "test-model-%d", ++n->changes);
	mesh_set_serving(n->mesh, name, NULL, NULL, 0, 0, 0);
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: mesh-node [--key PATH] [--bind HOST] [--port N] [--join TOKEN]...\n"
	        "  [--token-file PATH] [--status-file PATH] [--role host|worker|client|standby]\n"
	        "  [--vram GB] [--serving NAME] [--models-dir DIR] [--ephemeral]\n"
	        "  [--suspect-ms N] [--dead-ms N] [--forget-ms N] [--delay-ms MS] [--status-ms N]\n"
	        "  [--mesh-file PATH]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct mesh_config cfg;
	mesh_default_config(&cfg);
	const char *key = NULL, *token_file = NULL, *serving = NULL, *models_dir = NULL;
	const char *joins[16];
	size_t n_join = 0;
	bool ephemeral = false;
	double delay_ms = 0;
	int status_ms = 100;
	struct node n = {0};
	cfg.bind_host = "127.0.0.1";
	cfg.version = "mesh-node";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--ephemeral")) {
			ephemeral = true;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--key"))
			key = v;
		else if (!strcmp(a, "--bind"))
			cfg.bind_host = v;
		else if (!strcmp(a, "--port"))
			cfg.port = (uint16_t)atoi(v);
		else if (!strcmp(a, "--join") && n_join < 16)
			joins[n_join++] = v;
		else if (!strcmp(a, "--token-file"))
			token_file = v;
		else if (!strcmp(a, "--status-file"))
			n.status_file = v;
		else if (!strcmp(a, "--vram"))
			cfg.vram_bytes = (uint64_t)(atof(v) * 1e9);
		else if (!strcmp(a, "--serving"))
			serving = v;
		else if (!strcmp(a, "--models-dir"))
			models_dir = v;
		else if (!strcmp(a, "--suspect-ms"))
			cfg.suspect_ms = (uint32_t)atoi(v);
		else if (!strcmp(a, "--dead-ms"))
			cfg.dead_ms = (uint32_t)atoi(v);
		else if (!strcmp(a, "--mesh-file"))
			cfg.mesh_file = v;
		else if (!strcmp(a, "--status-ms"))
			status_ms = atoi(v);
		else if (!strcmp(a, "--delay-ms"))
			delay_ms = atof(v);
		else if (!strcmp(a, "--forget-ms"))
			cfg.forget_ms = (uint32_t)atoi(v);
		else if (!strcmp(a, "--role")) {
			int r = -1;
			for (int k = 0; k < MESH_ROLE_COUNT; k++)
				if (!strcmp(v, mesh_role_name(k)))
					r = k;
			if (r < 0)
				usage();
			cfg.role = (enum mesh_role)r;
		} else
			usage();
	}
	cfg.join = joins;
	cfg.n_join = n_join;
	struct net_ident id;
	if (mesh_ident_load(&id, key, ephemeral, NULL) != 0) {
		fprintf(stderr, "mesh-node: node key: %s\n", ml_last_error());
		return 1;
	}
	cfg.ident = &id;
	n.base = event_base_new();
	if (mesh_new(&n.mesh, n.base, &cfg) != 0) {
		fprintf(stderr, "mesh-node: %s\n", ml_last_error());
		event_base_free(n.base);
		return 1;
	}
	net_ident_clear(&id);
	if (delay_ms > 0)
		net_endpoint_set_netem(mesh_endpoint(n.mesh), (uint32_t)(delay_ms * 1000), 0, 0);
	struct mesh_model_info models[MESH_ANN_MAX_MODELS];
	int nm = mesh_models_scan(models_dir, models, MESH_ANN_MAX_MODELS);
	if (nm > 0)
		mesh_set_models(n.mesh, models, (size_t)nm);
	if (serving)
		mesh_set_serving(n.mesh, serving, NULL, NULL, 0, 0, 0);
	char tok[MESH_TOKEN_MAX_LEN];
	if (mesh_invite_token(n.mesh, tok, sizeof(tok)) > 0) {
		ML_INFO("Invite token: %s", tok);
		if (token_file) {
			char line[MESH_TOKEN_MAX_LEN + 2];
			snprintf(line, sizeof(line), "%s\n", tok);
			write_file(token_file, line);
		}
	}
	struct event *st = event_new(n.base, -1, EV_PERSIST, on_status, &n);
	struct timeval tv = {status_ms / 1000, (status_ms % 1000) * 1000};
	event_add(st, &tv);
	struct event *sigint = evsignal_new(n.base, SIGINT, on_signal, &n);
	struct event *sigterm = evsignal_new(n.base, SIGTERM, on_signal, &n);
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	struct event *sigusr1 = evsignal_new(n.base, SIGUSR1, on_usr1, &n);
	event_add(sigusr1, NULL);
	event_base_dispatch(n.base);
	on_status(-1, 0, &n);
	event_free(st);
	event_free(sigint);
	event_free(sigterm);
	event_free(sigusr1);
	mesh_free(n.mesh);
	event_base_free(n.base);
	return 0;
}
