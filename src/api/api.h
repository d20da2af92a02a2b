/* The OpenAI-compatible HTTP API: an evhttp server on the application's
 * event loop that answers /v1/models, /v1/chat/completions,
 * /v1/completions (plain JSON or server-sent events) and /health, and turns
 * requests into token prompts for a backend (the local engine, or later a
 * mesh host reached over QUIC).
 *
 * Threads: everything here runs on the event-loop thread, except the
 * engine callbacks, which only copy the event into the request's queue and
 * wake the loop with event_active(). The application must therefore call
 * evthread_use_pthreads() before it creates the event_base. */
#ifndef API_H
#define API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"

struct event_base;
struct tok_chat_msg;

/* What the API serves from. All functions are called on the loop thread;
 * |cb| passed to submit may be called on any thread. */
struct api_backend_ops {
	/* Renders |msgs| with the model's chat template (assistant turn
	 * opened) and tokenizes the result. On success *ids is malloc'd (caller
	 * frees) with *n_ids entries, and |text| (if not NULL) receives the
	 * rendered prompt, malloc'd. ML_ERR_INVALID: the template refused the
	 * messages (ml_last_error() says why). */
	int (*chat_prompt)(void *ctx, const struct tok_chat_msg *msgs, size_t n_msgs, int32_t **ids,
	                   int *n_ids, char **text);
	/* Tokenizes a raw completion prompt (BOS per the model's rule). */
	int (*text_prompt)(void *ctx, const char *text, size_t len, int32_t **ids, int *n_ids);
	/* eng_submit() semantics: ML_ERR_BUSY, ML_ERR_RANGE, ... */
	int (*submit)(void *ctx, const struct eng_request *r, eng_event_fn cb, void *user,
	              uint64_t *id);
	/* eng_cancel() semantics: the final CANCELLED event still follows. */
	void (*cancel)(void *ctx, uint64_t id);
	int (*n_ctx)(void *ctx); /* tokens per sequence */
};

struct api_backend {
	const struct api_backend_ops *ops;
	void *ctx;
};

struct api_params {
	const char *host;     /* "127.0.0.1" (default) or "0.0.0.0" */
	int port;             /* 9337; 0 picks a free port (see api_server_port) */
	const char *api_key;  /* NULL: no auth; else every route but /health needs "Bearer <key>" */
	const char *model_id; /* id shown in /v1/models and required in "model" */
	size_t max_body;      /* request body cap in bytes (default 4 MiB); over it: 413 */
	size_t max_headers;   /* request line + headers (+ trailers), line ends counted
	                         (default 16 KiB); over it: 431. Both refusals are OpenAI
	                         JSON errors and close the connection. */
	int timeout_s;        /* idle read/write timeout per connection (default 60) */
};
struct api_params api_default_params(void);

struct api_server;

/* Binds and starts serving on |base| (reports 503 "loading" until a
 * backend is attached). |p| strings are copied. ML_ERR_IO when the address
 * cannot be bound (message names it). The server owns the close callback
 * of its incoming evhttp connections (it frees per-connection state
 * there): code that takes requests (an api_front) must not replace it. */
int api_server_init(struct api_server **out, struct event_base *base, const struct api_params *p);
/* Attaches the backend (borrowed; must outlive the server or be detached
 * by api_server_free). From now on /health says ok. Loop thread only. */
void api_server_set_backend(struct api_server *s, const struct api_backend *b);

/* A front that sees requests before the local handling (the mesh answers
 * /mesh/status, lists the mesh's models and proxies requests for models
 * served elsewhere; see api_tunnel.h). |route| is an enum api_route
 * (api_request.h). take() is called for unknown paths (API_ROUTE_NONE,
 * before the 404 and without the API-key check: only read-only answers
 * belong there) and for known routes after the method and API-key checks.
 * It returns true when it took |req| (it then replies to it, now or
 * later), false to let the server answer as usual. */
struct evhttp_request;
struct api_front {
	bool (*take)(void *ctx, struct evhttp_request *req, int route);
	void *ctx;
};
/* |f| is borrowed (NULL removes the front). Loop thread only. */
void api_server_set_front(struct api_server *s, const struct api_front *f);
/* The bound TCP port (useful with port 0). */
int api_server_port(const struct api_server *s);
/* Number of requests currently running in the backend. */
int api_server_n_active(const struct api_server *s);
/* Cancels running requests in the backend (their final events still
 * arrive). Call before stopping the backend on shutdown. */
void api_server_cancel_all(struct api_server *s);
/* Closes every connection and frees. The backend must not deliver events
 * afterwards (free the engine first). Accepts NULL. */
void api_server_free(struct api_server *s);

/* Backend over the local engine. The template is parsed once; models
 * without one (or with one the interpreter cannot parse) use ChatML, which
 * is logged. */
struct api_eng_backend;
int api_eng_backend_init(struct api_eng_backend **out, struct eng *e);
void api_eng_backend_free(struct api_eng_backend *b); /* accepts NULL */
const struct api_backend *api_eng_backend_get(struct api_eng_backend *b);

/* Tokenizes a rendered prompt the way the API does: special-token strings
 * become their tokens, no automatic BOS/EOS, then BOS is prepended when the
 * model's metadata asks for one and the text did not already start with it
 * (templates that write {{ bos_token }}). *ids is malloc'd (caller frees). */
struct tok_vocab;
int api_tokenize_prompt(const struct tok_vocab *v, const char *text, size_t len, int32_t **ids,
                        int *n_ids);

/* Model id for a GGUF path: the file name without directories and
 * without the ".gguf" suffix. Writes at most |cap| bytes (NUL-terminated). */
void api_model_id_from_path(const char *path, char *out, size_t cap);

#endif
