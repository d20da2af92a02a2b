/* Parsing and validation of OpenAI request bodies (sans I/O): JSON bytes in,
 * a request struct or an OpenAI-shaped error (status, type, param, code,
 * message) out. Also the route table and the bearer-token check, so that
 * everything an untrusted client controls can be unit-tested and fuzzed
 * without sockets. */
#ifndef API_REQUEST_H
#define API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng.h"
#include "sampler/smp.h"

#define API_MAX_STOP ENG_MAX_STOP /* OpenAI allows 4; the engine takes 8 */
#define API_MAX_MESSAGES 4096     /* messages per chat request */
#define API_MAX_STOP_LEN 256      /* bytes per stop sequence */

struct api_err {
	int status;     /* HTTP status */
	char type[32];  /* "invalid_request_error", "authentication_error", ... */
	char param[64]; /* offending parameter or "" (rendered as null) */
	char code[40];  /* machine code or "" (rendered as null) */
	char message[512];
};

/* Fills |e| and returns ML_ERR_INVALID (for `return api_err_set(...)`). */
int api_err_set(struct api_err *e, int status, const char *type, const char *param,
                const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error as an OpenAI JSON body, malloc'd (NULL on allocation failure). */
char *api_err_json(const struct api_err *e);

enum api_kind {
	API_KIND_CHAT,       /* POST /v1/chat/completions */
	API_KIND_COMPLETION, /* POST /v1/completions */
};

struct api_msg {
	char *role;    /* system, user, assistant, tool ("developer" becomes system) */
	char *content; /* text parts joined */
};

struct api_req {
	enum api_kind kind;
	char *model;          /* NULL when absent */
	struct api_msg *msgs; /* chat: [n_msgs] */
	size_t n_msgs;
	char *prompt; /* completion */
	size_t prompt_len;
	int max_tokens; /* <= 0: not given (until EOS or context end) */
	struct smp_params sampling;
	char *stop[API_MAX_STOP];
	int n_stop;
	bool stream;
	bool include_usage;
	bool ignore_eos; /* extension (as llama-server): generate past end-of-generation */
};

/* Parses |len| bytes of JSON as a request of |kind| into |r| (which the
 * caller then owns and clears with api_req_clear, also on error). Unknown
 * fields are ignored. Returns 0, or ML_ERR_INVALID with |err| filled:
 * malformed JSON (400, with jansson's line and column), wrong types or
 * values out of range (400, param named), ML_ERR_NOMEM (500). */
int api_req_parse(struct api_req *r, enum api_kind kind, const char *body, size_t len,
                  struct api_err *err);
void api_req_clear(struct api_req *r);

/* Routes. */
enum api_route {
	API_ROUTE_NONE,       /* unknown path: 404 */
	API_ROUTE_HEALTH,     /* GET /health */
	API_ROUTE_MODELS,     /* GET /v1/models, /models */
	API_ROUTE_MODEL,      /* GET /v1/models/{id} */
	API_ROUTE_CHAT,       /* POST /v1/chat/completions, /chat/completions */
	API_ROUTE_COMPLETION, /* POST /v1/completions, /completions */
	API_ROUTE_TEMPLATE,   /* POST /apply-template (llama-server extension) */
};

enum api_method { API_GET, API_HEAD, API_POST, API_OPTIONS, API_OTHER };

/* Matches |path| (no query string) and |method|. Returns the route, or
 * API_ROUTE_NONE. *method_ok is false when the path exists but not for
 * this method (405); *allow then names the methods that are. *arg points
 * into |path| for API_ROUTE_MODEL (the id). */
enum api_route api_route_match(const char *path, enum api_method method, bool *method_ok,
                               const char **allow, const char **arg);
/* True when the route needs the API key (everything except /health). */
bool api_route_needs_auth(enum api_route r);

/* Checks an Authorization header value against |key| in constant time
 * with respect to the key's contents. NULL header: false. */
bool api_auth_ok(const char *header, const char *key);

/* Appends |len| bytes of |s| as a JSON string literal (with quotes) to a
 * growable buffer. Control characters, quote and backslash are escaped;
 * other bytes are copied. Returns 0 or ML_ERR_NOMEM. */
struct api_buf {
	char *data;
	size_t len, cap;
};
int api_buf_append(struct api_buf *b, const void *p, size_t n);
int api_buf_printf(struct api_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int api_buf_json_str(struct api_buf *b, const char *s, size_t len);
void api_buf_free(struct api_buf *b);

#endif
