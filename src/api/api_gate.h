/* The request gate: the API server's own reading of HTTP/1.x request
 * framing, run on every byte a client sends before libevent's parser sees
 * it (sans I/O: bytes in, a verdict out).
 *
 * Why: libevent 2.1's evhttp answers a body over its cap, a head over its
 * cap and a malformed request itself, with an HTML page, before any of our
 * callbacks runs (2.1 has no per-request hook such as 2.2's
 * evhttp_set_newreqcb). The gate finds those requests first and replaces
 * them in the byte stream with a stand-in that evhttp accepts: a small
 * request of its own (carrying API_GATE_MARK) when nothing of the refused
 * request reached evhttp yet, or the end of the chunked body when its head
 * did. evhttp hands the stand-in to our request callback, which knows it by
 * its place on the connection (the request after the n_requests the gate
 * let through) and answers with an OpenAI JSON error and Connection: close.
 *
 * What the gate holds is bounded: a request head (request line, headers,
 * trailers) up to max_head bytes, or one chunk-size line. Body bytes pass
 * straight through; the gate only counts them. A Content-Length over
 * max_body is refused before a byte of the body is read; a chunked body is
 * refused at the chunk-size line that would take it over max_body.
 *
 * The gate agrees with evhttp 2.1.12 on where every request it lets through
 * ends (bodies only for POST/PUT/PATCH; Transfer-Encoding: chunked before
 * Content-Length; empty lines between chunks skipped). Where evhttp would
 * refuse a request, the gate refuses it first; where the gate is stricter
 * (chunk extensions, obs-fold, a Transfer-Encoding other than chunked), it
 * refuses too, so the two can never disagree about framing. */
#ifndef API_GATE_H
#define API_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api_request.h"

/* Header the gate puts in the stand-in requests it makes up (for logs and
 * packet captures; the server goes by the request's place, not by this). */
#define API_GATE_MARK "X-Mesh-Llm-Refused"
#define API_GATE_MAX_CHUNK_LINE 256 /* bytes of one chunk-size line */

enum api_gate_act {
	API_GATE_PASS,    /* hand the consumed bytes to the HTTP parser unchanged */
	API_GATE_HOLD,    /* the gate kept the consumed bytes (an unfinished head or line) */
	API_GATE_RELEASE, /* the consumed bytes finished what was held: hand on api_gate_held() */
	API_GATE_REJECT,  /* request refused (api_gate_error()): hand on api_gate_held(), the
	                     replacement that ends the stream; drop everything after */
	API_GATE_DROP,    /* after a rejection: the consumed bytes are thrown away */
};

struct api_gate {
	size_t max_head; /* request line + headers (+ trailers) in bytes, CRLFs counted */
	size_t max_body; /* decoded body bytes */
	int state;
	struct api_buf held; /* the head or line being gathered */
	size_t line_start;   /* offset in |held| of the line being gathered */
	size_t head_len;     /* head + trailer bytes of the current request */
	uint64_t remaining;  /* body bytes (Content-Length) or chunk bytes still to pass */
	uint64_t body_total; /* chunked: decoded body bytes so far */
	bool flush;          /* |held| was handed on: start afresh at the next feed */
	int n_requests;      /* requests let through whole */
	struct api_err err;  /* filled on rejection */
};

/* |max_head| and |max_body| must be > 0. */
void api_gate_init(struct api_gate *g, size_t max_head, size_t max_body);
void api_gate_clear(struct api_gate *g); /* frees what it holds */

/* Consumes bytes from |p| (at least one when |n| > 0) and says through
 * *act what to do with them. Returns the number consumed. On
 * API_GATE_RELEASE and API_GATE_REJECT the bytes to hand on are
 * api_gate_held() until the next call. ML errors cannot happen: running
 * out of memory while holding is a rejection (500). */
size_t api_gate_feed(struct api_gate *g, const char *p, size_t n, enum api_gate_act *act);
const char *api_gate_held(const struct api_gate *g, size_t *len);
/* NULL until a request was refused; then the OpenAI error to answer with. */
const struct api_err *api_gate_error(const struct api_gate *g);

#endif
