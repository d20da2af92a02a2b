/* `mesh-llm [OPTIONS]`: serve a model through the OpenAI-compatible API.
 *
 * Start-up order: parse flags, bind the HTTP port (so a busy port fails
 * fast and /health answers "loading" at once), load the model on a loader
 * thread, then attach it to the API and print the ready banner with the
 * launch commands for agents. SIGINT/SIGTERM stop the loop; shutdown
 * cancels running requests, frees the engine, then the API. */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "app/app.h"
#include "app/app_mesh.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "engine/eng.h"
#include "engine/eng_link.h"
#include "mesh/mesh_plan.h"
#include "mesh/mesh_stage.h"
#include "net/net_quic.h"

#define DEFAULT_MODEL "stories260K.gguf"

struct serve {
	struct event_base *base;
	struct api_server *api;
	struct eng_params ep;
	char model_path[PATH_MAX];
	char model_id[256];
	bool listen_all;
	const char *api_key;

	pthread_t loader;
	bool loader_started;
	struct event *loaded_ev;
	struct eng *eng; /* set by the loader thread before it wakes the loop */
	int load_rc;
	char load_msg[512];
	struct api_eng_backend *backend;
	int exit_code;
	struct event *drain_ev; /* after SIGINT/SIGTERM: waits for cancelled requests */
	double stop_at;

	bool has_model; /* false: lite client or standby node */
	struct app_mesh_opts mo;
	bool no_mesh;
	const char *kv_flag; /* the option that set ep.kv_type, NULL: default */
	struct app_mesh *mesh;
	bool leaving;
	double ratios[64];
};

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: mesh-llm [OPTIONS]\n"
	       "       mesh-llm COMMAND [ARGS]\n"
	       "\n"
	       "Serves a GGUF model through an OpenAI-compatible API on localhost.\n"
	       "\n"
	       "options:\n"
	       "  --model PATH      GGUF model file (default: models/" DEFAULT_MODEL
	       " next to the binary's\n"
	       "                    ../ or the current directory, when present)\n"
	       "  --port PORT       API port (default: 9337; 0 picks a free one)\n"
	       "  --ctx-size N      context tokens per request slot (default: min(4096, trained))\n"
	       "  --parallel N      requests generated at once (default: 4)\n"
	       "  --threads N       compute threads (default: all cores)\n"
	       "  --queue N         requests that may wait for a slot before the API answers\n"
	       "                    503 busy (default: 16; 0: none wait)\n"
	       "  --kv-type f16|f32 KV cache element type (default: f16, half the memory of\n"
	       "                    f32; llama.cpp's --cache-type-k/-ctk and\n"
	       "                    --cache-type-v/-ctv are accepted, K and V share one type;\n"
	       "                    a split's stages get the host's type with its plan)\n"
	       "  --mmap            use the weights through a mapping of the file (loads\n"
	       "                    lazily, shares the page cache) instead of reading them\n"
	       "                    into huge-page memory at start (default; faster decode)\n"
	       "  --listen-all      accept connections on all interfaces (default: 127.0.0.1)\n"
	       "  --api-key KEY     require 'Authorization: Bearer KEY' on /v1/*\n"
	       "  -h, --help        show this help\n"
	       "\n"
	       "mesh (every full node starts or joins one and prints its invite token):\n"
	       "  --join TOKEN      join the mesh of an invite token (repeatable; any\n"
	       "                    reachable one suffices). Without --model a joining\n"
	       "                    node serves no model itself (standby)\n"
	       "  --client          lite client: no model, no engine memory, a fresh key;\n"
	       "                    serves the API by tunnelling to the mesh's hosts\n"
	       "  --bind-port PORT  UDP port of the mesh (default: any free one)\n"
	       "  --max-vram GB     cap the memory advertised to the mesh and used for this\n"
	       "                    node's share of a model (decimals ok; default: 75%% of\n"
	       "                    physical RAM). Of the nodes started with the same model\n"
	       "                    file, the one with the most memory is elected its host\n"
	       "                    (ties: node id); the others serve it as pipeline stages.\n"
	       "                    A host whose model does not fit waits for peers and splits it\n"
	       "  --split           split the model across peers even when it fits here\n"
	       "  --tensor-split R,R,...  split layers in these ratios (host first, then\n"
	       "                    peers by RTT) instead of by memory\n"
	       "  --no-mesh         serve locally only, no mesh\n"
	       "  testing aids (simulate a slow network; this kernel has no netem):\n"
	       "  --net-delay-ms MS   add a one-way delay to every outgoing QUIC packet\n"
	       "  --net-jitter-ms MS  +- uniform jitter on that delay\n"
	       "  --net-loss PCT      drop this percentage of outgoing QUIC packets\n"
	       "                    (or MESH_LLM_NET_DELAY_MS in the environment)\n"
	       "\n"
	       "commands:\n"
	       "  gguf-info FILE    print a GGUF file's metadata and tensor table\n"
	       "  tokenize          print the token ids of a text\n"
	       "  generate          generate text from a prompt\n"
	       "  bench             measure prompt and generation speed\n"
	       "\n"
	       "`mesh-llm COMMAND --help` describes each command.\n"
	       "\n"
	       "endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,\n"
	       "           GET /health, GET /mesh/status\n");
}

static int usage_error(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "mesh-llm: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\nTry 'mesh-llm --help'.\n");
	return 2;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = (int)v;
	return true;
}

static bool file_exists(const char *p)
{
	return access(p, R_OK) == 0;
}

/* models/stories260K.gguf next to the binary (../models from build/), or
 * in the current directory. */
static bool default_model(char *out, size_t cap)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			int w = snprintf(out, cap, "%s/../models/%s", exe, DEFAULT_MODEL);
			if (w > 0 && (size_t)w < cap && file_exists(out))
				return true;
			w = snprintf(out, cap, "%s/models/%s", exe, DEFAULT_MODEL);
			if (w > 0 && (size_t)w < cap && file_exists(out))
				return true;
		}
	}
	snprintf(out, cap, "models/%s", DEFAULT_MODEL);
	return file_exists(out);
}

static void *loader_main(void *arg)
{
	struct serve *sv = arg;
	struct eng *e = NULL;
	int rc = eng_init(&e, &sv->ep);
	sv->ep.link = NULL; /* eng_init took it (link_owned) */
	sv->load_rc = rc;
	if (rc) {
		snprintf(sv->load_msg, sizeof(sv->load_msg), "%s",
		         ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		e = NULL;
	}
	sv->eng = e;
	event_active(sv->loaded_ev, EV_READ, 0);
	return NULL;
}

static void print_banner(struct serve *sv)
{
	int port = api_server_port(sv->api);
	const char *key = sv->api_key ? sv->api_key : "mesh";
	if (!sv->has_model) {
		printf("mesh-llm ready: %s (models served by the mesh)\n",
		       sv->mo.client ? "lite client" : "standby node");
		printf("  API:   http://localhost:%d/v1%s\n", port,
		       sv->listen_all ? "  (listening on all interfaces)" : "");
		printf("  mesh:  http://localhost:%d/mesh/status\n", port);
		fflush(stdout);
		return;
	}
	printf("mesh-llm ready: %s\n", sv->model_id);
	printf("  API:   http://localhost:%d/v1%s\n", port,
	       sv->listen_all ? "  (listening on all interfaces)" : "");
	printf("  pi:    pi --provider mesh --model %s\n", sv->model_id);
	printf("  goose: GOOSE_PROVIDER=openai OPENAI_HOST=http://localhost:%d OPENAI_API_KEY=%s "
	       "GOOSE_MODEL=%s goose session\n",
	       port, key, sv->model_id);
	fflush(stdout);
}

static void on_loaded(evutil_socket_t fd, short what, void *arg)
{
	struct serve *sv = arg;
	(void)fd, (void)what;
	pthread_join(sv->loader, NULL);
	sv->loader_started = false;
	if (sv->load_rc) {
		fprintf(stderr, "mesh-llm: cannot load %s: %s\n", sv->model_path, sv->load_msg);
		sv->exit_code = 1;
		event_base_loopbreak(sv->base);
		return;
	}
	int rc = api_eng_backend_init(&sv->backend, sv->eng);
	if (rc) {
		fprintf(stderr, "mesh-llm: cannot set up the chat template: %s\n",
		        ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		sv->exit_code = 1;
		event_base_loopbreak(sv->base);
		return;
	}
	api_server_set_backend(sv->api, api_eng_backend_get(sv->backend));
	app_mesh_set_engine(sv->mesh, sv->eng);
	ML_INFO("serve: model %s loaded (context %d per slot, %d slots)", sv->model_id,
	        eng_n_ctx(sv->eng), sv->ep.n_parallel);
	app_mesh_model_ready(sv->mesh, sv->model_id);
	print_banner(sv);
}

static int start_loader(struct serve *sv)
{
	ML_INFO("serve: loading %s", sv->model_path);
	if (pthread_create(&sv->loader, NULL, loader_main, sv) != 0) {
		fprintf(stderr, "mesh-llm: cannot start the loader thread\n");
		return -1;
	}
	sv->loader_started = true;
	return 0;
}

/* app_mesh planned the model: load it, with the pipeline when split. */
static void start_engine(void *user, struct eng_link *link, int layer_end)
{
	struct serve *sv = user;
	sv->ep.link = link;
	sv->ep.layer_end = link ? layer_end : 0;
	sv->ep.link_owned = link != NULL;
	sv->ep.link_wait_ms = 30000;
	if (link) {
		/* The stages load their layers while we load ours: the PLAN goes
		 * now with the setup eng_init() will derive from these parameters
		 * (its defaults; the context length is a guess when not given:
		 * the engine takes the model's if shorter than 4096, and start()
		 * then sends the plan again). */
		struct eng_params d = eng_default_params();
		int n_seq = sv->ep.n_parallel > 0 ? sv->ep.n_parallel : d.n_parallel;
		int n_batch = sv->ep.n_batch > 0 ? sv->ep.n_batch : d.n_batch;
		struct eng_link_setup ex = {
		    .n_seq = n_seq,
		    .n_ctx = sv->ep.n_ctx > 0 ? sv->ep.n_ctx : 4096,
		    .n_batch = n_batch < n_seq ? n_seq : n_batch,
		    .kv_type = sv->ep.kv_type,
		};
		if (mesh_stage_link_send_plan(link, &ex))
			ML_WARN("split: cannot send the plan early (%s); it goes when this node "
			        "has loaded its layers",
			        ml_last_error());
	}
	if (start_loader(sv)) {
		sv->exit_code = 1;
		event_base_loopbreak(sv->base);
	}
}

/* app_mesh: this node stepped down as host and its engine is idle. */
static void stop_engine(void *user)
{
	struct serve *sv = user;
	api_server_set_backend(sv->api, NULL);
	eng_free(sv->eng);
	sv->eng = NULL;
	api_eng_backend_free(sv->backend);
	sv->backend = NULL;
	ML_INFO("serve: engine for %s stopped (another node hosts it)", sv->model_id);
}

static void on_left(void *arg)
{
	struct serve *sv = arg;
	event_base_loopbreak(sv->base);
}

/* Polls until the cancelled requests have sent their last bytes (at most
 * 2 s), so streaming clients see a final event rather than a cut; then
 * tells the mesh we leave (at most ~1 s more). */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
	struct serve *sv = arg;
	(void)fd, (void)what;
	if (api_server_n_active(sv->api) == 0 || ml_time_s() > sv->stop_at) {
		if (sv->mesh && !sv->leaving) {
			sv->leaving = true;
			app_mesh_leave(sv->mesh, on_left, sv);
			return;
		}
		if (!sv->mesh)
			event_base_loopbreak(sv->base);
		return;
	}
	struct timeval tv = {0, 10000};
	event_add(sv->drain_ev, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct serve *sv = arg;
	(void)what;
	if (sv->drain_ev) { /* second signal: stop now */
		event_base_loopbreak(sv->base);
		return;
	}
	ML_INFO("serve: %s received; shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	api_server_cancel_all(sv->api);
	sv->stop_at = ml_time_s() + 2.0;
	sv->drain_ev = evtimer_new(sv->base, on_drain, sv);
	if (!sv->drain_ev) {
		event_base_loopbreak(sv->base);
		return;
	}
	on_drain(-1, 0, sv);
}

int app_cmd_serve(int argc, char **argv)
{
	struct serve sv;
	memset(&sv, 0, sizeof(sv));
	sv.ep = eng_default_params();
	int port = 9337;
	int bind_port = 0;
	const char *model = NULL;
	sv.mo.max_vram_gb = -1;
	const char *env_delay = getenv("MESH_LLM_NET_DELAY_MS");
	if (env_delay && *env_delay)
		sv.mo.net_delay_ms = atof(env_delay);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		int *target = NULL;
		long lo = 0, hi = 0;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--listen-all") == 0) {
			sv.listen_all = true;
			continue;
		} else if (strcmp(a, "--mmap") == 0) {
			sv.ep.mmap = true;
			continue;
		} else if (strcmp(a, "--client") == 0) {
			sv.mo.client = true;
			continue;
		} else if (strcmp(a, "--split") == 0) {
			sv.mo.force_split = true;
			continue;
		} else if (strcmp(a, "--tensor-split") == 0) {
			int n = val ? mesh_plan_parse_ratios(val, sv.ratios, 64) : -1;
			if (n <= 0)
				return usage_error("invalid value '%s' for option '--tensor-split' "
				                   "(expected ratios like 3,1)%s",
				                   val ? val : "", "");
			sv.mo.ratios = sv.ratios;
			sv.mo.n_ratios = (uint32_t)n;
			i++;
			continue;
		} else if (strcmp(a, "--no-mesh") == 0) {
			sv.no_mesh = true;
			continue;
		} else if (strcmp(a, "--join") == 0) {
			if (!val || !*val)
				return usage_error("option '%s' needs a token%s", a, "");
			if (sv.mo.n_join >= APP_MESH_MAX_JOIN)
				return usage_error("too many '%s' options (at most 16)%s", a, "");
			sv.mo.join[sv.mo.n_join++] = val;
			i++;
			continue;
		} else if (strcmp(a, "--max-vram") == 0 || strcmp(a, "--net-delay-ms") == 0 ||
		           strcmp(a, "--net-jitter-ms") == 0 || strcmp(a, "--net-loss") == 0) {
			double hi_d = strcmp(a, "--max-vram") == 0   ? 1e6
			              : strcmp(a, "--net-loss") == 0 ? 100
			                                             : 10000;
			char *end = NULL;
			double d = val ? strtod(val, &end) : -1;
			if (!val || end == val || *end || !(d >= 0 && d <= hi_d)) {
				fprintf(stderr,
				        "mesh-llm: invalid value '%s' for option '%s' (expected a "
				        "number "
				        "in 0..%g)\nTry 'mesh-llm --help'.\n",
				        val ? val : "", a, hi_d);
				return 2;
			}
			if (a[2] == 'm')
				sv.mo.max_vram_gb = d;
			else if (a[6] == 'd')
				sv.mo.net_delay_ms = d;
			else if (a[6] == 'j')
				sv.mo.net_jitter_ms = d;
			else
				sv.mo.net_loss_pct = d;
			i++;
			continue;
		} else if (strcmp(a, "--kv-type") == 0 || strcmp(a, "--cache-type-k") == 0 ||
		           strcmp(a, "--cache-type-v") == 0 || strcmp(a, "-ctk") == 0 ||
		           strcmp(a, "-ctv") == 0) {
			enum model_kv_type t = MODEL_KV_F16;
			if (val && strcmp(val, "f32") == 0)
				t = MODEL_KV_F32;
			else if (!val || strcmp(val, "f16") != 0)
				return usage_error("invalid value '%s' for option '%s' (expected f16 or "
				                   "f32)",
				                   val ? val : "", a);
			if (sv.kv_flag && t != sv.ep.kv_type)
				return usage_error("'%s' and '%s' disagree: K and V share one cache type "
				                   "here",
				                   sv.kv_flag, a);
			sv.ep.kv_type = t;
			sv.kv_flag = a;
			i++;
			continue;
		} else if (strcmp(a, "--bind-port") == 0) {
			target = &bind_port, lo = 0, hi = 65535;
		} else if (strcmp(a, "--model") == 0 || strcmp(a, "--api-key") == 0) {
			if (!val)
				return usage_error("option '%s' needs a value%s", a, "");
			if (a[2] == 'm')
				model = val;
			else if (!*val)
				return usage_error("option '%s' needs a non-empty value%s", a, "");
			else
				sv.api_key = val;
			i++;
			continue;
		} else if (strcmp(a, "--port") == 0) {
			target = &port, lo = 0, hi = 65535;
		} else if (strcmp(a, "--ctx-size") == 0) {
			target = &sv.ep.n_ctx, lo = 16, hi = 1 << 24;
		} else if (strcmp(a, "--parallel") == 0) {
			target = &sv.ep.n_parallel, lo = 1, hi = 256;
		} else if (strcmp(a, "--threads") == 0) {
			target = &sv.ep.n_threads, lo = 1, hi = 1024;
		} else if (strcmp(a, "--queue") == 0) {
			target = &sv.ep.n_queue, lo = 0, hi = 4096;
		} else {
			return usage_error("unknown option '%s'%s", a, "");
		}
		if (!val)
			return usage_error("option '%s' needs a value%s", a, "");
		if (!parse_int(val, lo, hi, target)) {
			char range[64];
			snprintf(range, sizeof(range), " (expected an integer in %ld..%ld)", lo,
			         hi);
			fprintf(stderr, "mesh-llm: invalid value '%s' for option '%s'%s\n", val, a,
			        range);
			fprintf(stderr, "Try 'mesh-llm --help'.\n");
			return 2;
		}
		i++;
	}

	sv.mo.bind_port = bind_port;
	if (sv.mo.client && model)
		return usage_error("--client serves no model; drop '--model %s'%s", model, "");
	if (sv.mo.client && sv.mo.n_join == 0)
		return usage_error("--client needs an invite token: add '--join TOKEN'%s%s", "",
		                   "");
	if (sv.mo.client && sv.no_mesh)
		return usage_error("--client needs the mesh; drop '--no-mesh'%s%s", "", "");
	if (sv.no_mesh && sv.mo.n_join)
		return usage_error("--join needs the mesh; drop '--no-mesh'%s%s", "", "");
	sv.has_model = !sv.mo.client && (model || sv.mo.n_join == 0);
	if (!sv.has_model) {
		snprintf(sv.model_id, sizeof(sv.model_id), "mesh");
	} else if (model) {
		snprintf(sv.model_path, sizeof(sv.model_path), "%s", model);
	} else if (!default_model(sv.model_path, sizeof(sv.model_path))) {
		fprintf(stderr, "mesh-llm: no model given and models/" DEFAULT_MODEL
		                " not found; pass --model PATH\nTry 'mesh-llm --help'.\n");
		return 2;
	}
	if (sv.has_model) {
		if (!file_exists(sv.model_path)) {
			fprintf(stderr, "mesh-llm: cannot read model '%s': %s\n", sv.model_path,
			        strerror(errno));
			return 1;
		}
		sv.ep.model_path = sv.model_path;
		api_model_id_from_path(sv.model_path, sv.model_id, sizeof(sv.model_id));
		sv.mo.model_id = sv.model_id;
		sv.mo.model_path = sv.model_path;
		sv.mo.n_threads = sv.ep.n_threads;
		sv.mo.kv_positions =
		    (uint64_t)(sv.ep.n_ctx > 0 ? sv.ep.n_ctx : 4096) * (uint64_t)sv.ep.n_parallel;
		sv.mo.kv_elem_bytes = sv.ep.kv_type == MODEL_KV_F32 ? 4 : 2;
		sv.mo.start_engine = start_engine;
		sv.mo.stop_engine = stop_engine;
		sv.mo.start_user = &sv;
	}

	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	/* the mesh shares this loop and wants precise timers */
	sv.base = net_event_base_new();
	if (!sv.base)
		sv.base = event_base_new();
	if (!sv.base) {
		fprintf(stderr, "mesh-llm: cannot create the event loop\n");
		return 1;
	}
	struct api_params ap = api_default_params();
	ap.host = sv.listen_all ? "0.0.0.0" : "127.0.0.1";
	ap.port = port;
	ap.api_key = sv.api_key;
	ap.model_id = sv.model_id;
	int rc = api_server_init(&sv.api, sv.base, &ap);
	struct event *sigint = NULL, *sigterm = NULL;
	if (rc) {
		fprintf(stderr, "mesh-llm: %s\n",
		        ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		sv.exit_code = 1;
		goto out;
	}
	sigint = evsignal_new(sv.base, SIGINT, on_signal, &sv);
	sigterm = evsignal_new(sv.base, SIGTERM, on_signal, &sv);
	sv.loaded_ev = event_new(sv.base, -1, 0, on_loaded, &sv);
	if (!sigint || !sigterm || !sv.loaded_ev) {
		fprintf(stderr, "mesh-llm: cannot set up events\n");
		sv.exit_code = 1;
		goto out;
	}
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	if (!sv.no_mesh) {
		rc = app_mesh_start(&sv.mesh, sv.base, &sv.mo, sv.api, sv.api_key);
		if (rc && sv.has_model && sv.mo.n_join == 0) {
			/* a first node can still serve its model alone */
			ML_WARN("serve: cannot start the mesh (%s); serving locally only",
			        ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
			sv.mesh = NULL;
		} else if (rc) {
			fprintf(stderr, "mesh-llm: cannot start the mesh: %s\n",
			        ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
			sv.exit_code = 1;
			goto out;
		}
	}
	if (!sv.has_model) {
		print_banner(&sv);
		event_base_dispatch(sv.base);
		goto out;
	}
	if (sv.mesh) {
		/* the mesh elects the model's host: if it is this node, plan it
		 * over the mesh (solo when it fits), then load */
		rc = app_mesh_host_begin(sv.mesh);
		if (rc) {
			fprintf(stderr, "mesh-llm: cannot plan %s: %s\n", sv.model_path,
			        ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
			sv.exit_code = 1;
			goto out;
		}
	} else if (start_loader(&sv)) {
		sv.exit_code = 1;
		goto out;
	}

	event_base_dispatch(sv.base);

out:
	if (sv.loader_started) /* interrupted while loading */
		pthread_join(sv.loader, NULL);
	if (sv.api)
		api_server_cancel_all(sv.api);
	/* a split engine's link needs the mesh while it is freed */
	app_mesh_stop_split(sv.mesh);
	eng_free(sv.eng);
	sv.eng = NULL;
	app_mesh_free(sv.mesh);
	api_server_free(sv.api);
	api_eng_backend_free(sv.backend);
	if (sigint)
		event_free(sigint);
	if (sigterm)
		event_free(sigterm);
	if (sv.loaded_ev)
		event_free(sv.loaded_ev);
	if (sv.drain_ev)
		event_free(sv.drain_ev);
	event_base_free(sv.base);
	return sv.exit_code;
}
