/* The request gate (see api_gate.h): an incremental reader of HTTP/1.x
 * request framing that holds each head until it is complete and valid,
 * passes bodies through while counting them, and swaps a refused request
 * for a marked replacement that evhttp will hand to our callback. */
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_gate.h"
#include "base/ml_err.h"

enum {
	ST_HEAD,       /* gathering a request head */
	ST_LENGTH,     /* passing a Content-Length body */
	ST_CHUNK_LINE, /* gathering a chunk-size line (or the empty line after a chunk) */
	ST_CHUNK_DATA, /* passing chunk data */
	ST_TRAILER,    /* gathering trailer lines after the last chunk */
	ST_REJECTED,   /* dropping everything */
};

/* What replaces a refused request, by the state it was refused in: a whole
 * request (nothing of it reached evhttp yet), or the end of a chunked body
 * (or of its trailers) whose head evhttp already has. */
static const char repl_head[] = "GET /.mesh-llm/refused HTTP/1.1\r\nHost: mesh-llm\r\n"
                                "Connection: close\r\n" API_GATE_MARK ": 1\r\n\r\n";
static const char repl_chunked[] = "0\r\n\r\n";
static const char repl_trailer[] = "\r\n";

void api_gate_init(struct api_gate *g, size_t max_head, size_t max_body)
{
	memset(g, 0, sizeof(*g));
	g->max_head = max_head;
	g->max_body = max_body;
	g->state = ST_HEAD;
}

void api_gate_clear(struct api_gate *g)
{
	api_buf_free(&g->held);
}

const char *api_gate_held(const struct api_gate *g, size_t *len)
{
	*len = g->held.data ? g->held.len : 0;
	return g->held.data ? g->held.data : "";
}

const struct api_err *api_gate_error(const struct api_gate *g)
{
	return g->state == ST_REJECTED ? &g->err : NULL;
}

/* Fills the error; returns -1 (for `return refuse(...)` in parsers). */
__attribute__((format(printf, 4, 5))) static int refuse(struct api_gate *g, int status,
                                                        const char *code, const char *fmt, ...)
{
	char msg[sizeof(g->err.message)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	api_err_set(&g->err, status, NULL, NULL, code, "%s", msg);
	return -1;
}

/* The error is filled: swap what is held for the replacement. */
static size_t reject(struct api_gate *g, size_t consumed, enum api_gate_act *act)
{
	const char *r = g->state == ST_HEAD         ? repl_head
	                : g->state == ST_CHUNK_LINE ? repl_chunked
	                                            : repl_trailer;
	g->held.len = 0;
	if (api_buf_append(&g->held, r, strlen(r)))
		g->held.len = 0; /* out of memory: nothing to hand on; the timeout ends it */
	g->state = ST_REJECTED;
	g->flush = true;
	*act = API_GATE_REJECT;
	return consumed;
}

static size_t release(struct api_gate *g, size_t consumed, enum api_gate_act *act)
{
	g->flush = true;
	*act = API_GATE_RELEASE;
	return consumed;
}

static void request_done(struct api_gate *g)
{
	g->state = ST_HEAD;
	g->head_len = 0;
	g->body_total = 0;
	g->remaining = 0;
	g->n_requests++;
}

/* Case-insensitive comparison of a counted string with a C string. */
static bool ieq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* One line of |d| starting at |pos|: *line, *len without the line end
 * (LF or CRLF, as evbuffer_readln's EVBUFFER_EOL_CRLF). Returns the offset
 * after the LF. The head always ends with a LF. */
static size_t next_line(const char *d, size_t n, size_t pos, const char **line, size_t *len)
{
	const char *nl = memchr(d + pos, '\n', n - pos);
	size_t end = (size_t)(nl - d);
	*line = d + pos;
	*len = end - pos;
	if (*len && (*line)[*len - 1] == '\r')
		(*len)--;
	return end + 1;
}

struct head_fields {
	const char *v[4]; /* Content-Length, Transfer-Encoding, Connection, Expect */
	size_t n[4];
};

static const char *const head_names[4] = {"Content-Length", "Transfer-Encoding", "Connection",
                                          "Expect"};

/* Parses the complete head in g->held and sets up reading the body. 0, or
 * -1 with g->err filled. Mirrors evhttp 2.1.12 (evhttp_parse_request_line,
 * evhttp_parse_headers_, evhttp_get_body, evhttp_get_body_length), refusing
 * everything evhttp would refuse and a few things it would accept
 * ambiguously. */
static int parse_head(struct api_gate *g)
{
	const char *d = g->held.data, *line;
	size_t n = g->held.len, len;
	if (memchr(d, '\0', n))
		return refuse(g, 400, "malformed_request", "The request head contains a NUL byte.");
	size_t pos = next_line(d, n, 0, &line, &len);

	/* request line: METHOD SP target SP HTTP/x.y, single spaces */
	const char *sp1 = memchr(line, ' ', len);
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line + len - sp1 - 1)) : NULL;
	if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(line + len - sp2 - 1)))
		return refuse(g, 400, "malformed_request", "Malformed HTTP request line.");
	size_t ml = (size_t)(sp1 - line);
	bool body_method = false;
	static const char *const with_body[] = {"POST", "PUT", "PATCH"};
	static const char *const without[] = {"GET",     "HEAD",  "DELETE",
	                                      "OPTIONS", "TRACE", "CONNECT"};
	bool known = false;
	for (size_t i = 0; i < 3; i++)
		if (ml == strlen(with_body[i]) && memcmp(line, with_body[i], ml) == 0)
			known = body_method = true;
	for (size_t i = 0; i < 6; i++)
		if (ml == strlen(without[i]) && memcmp(line, without[i], ml) == 0)
			known = true;
	if (!known)
		return refuse(g, 501, "method_not_supported", "Unsupported HTTP method '%.*s'.",
		              (int)(ml < 32 ? ml : 32), line);
	const char *ver = sp2 + 1;
	size_t vl = (size_t)(line + len - ver);
	int major = 0, minor = 0;
	size_t i = 5, nd = 0;
	if (vl < 8 || memcmp(ver, "HTTP/", 5) != 0)
		return refuse(g, 400, "malformed_request", "Malformed HTTP version.");
	for (nd = 0; i < vl && ver[i] >= '0' && ver[i] <= '9' && nd < 3; i++, nd++)
		major = major * 10 + (ver[i] - '0');
	if (!nd || i >= vl || ver[i++] != '.')
		return refuse(g, 400, "malformed_request", "Malformed HTTP version.");
	for (nd = 0; i < vl && ver[i] >= '0' && ver[i] <= '9' && nd < 3; i++, nd++)
		minor = minor * 10 + (ver[i] - '0');
	if (!nd || i != vl)
		return refuse(g, 400, "malformed_request", "Malformed HTTP version.");
	if (major != 1)
		return refuse(g, 505, "http_version_not_supported",
		              "HTTP version %d.%d is not supported; use HTTP/1.1.", major, minor);
	size_t tl = (size_t)(sp2 - sp1 - 1);
	char *target = malloc(tl + 1);
	if (!target)
		return refuse(g, 500, NULL, "Out of memory.");
	memcpy(target, sp1 + 1, tl);
	target[tl] = '\0';
	struct evhttp_uri *uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
	free(target);
	if (!uri)
		return refuse(g, 400, "malformed_request", "Malformed request target.");
	evhttp_uri_free(uri);

	/* header lines */
	struct head_fields f = {{0}, {0}};
	for (;;) {
		pos = next_line(d, n, pos, &line, &len);
		if (len == 0)
			break;
		if (line[0] == ' ' || line[0] == '\t')
			return refuse(g, 400, "malformed_request",
			              "Folded header lines are not accepted.");
		const char *colon = memchr(line, ':', len);
		size_t kl = colon ? (size_t)(colon - line) : 0;
		if (!colon || kl == 0 || memchr(line, ' ', kl) || memchr(line, '\t', kl))
			return refuse(g, 400, "malformed_request", "Malformed header line.");
		const char *v = colon + 1, *end = line + len;
		while (v < end && *v == ' ')
			v++;
		while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			end--;
		for (int k = 0; k < 4; k++) {
			if (!ieq(line, kl, head_names[k]))
				continue;
			if (!f.v[k]) {
				f.v[k] = v;
				f.n[k] = (size_t)(end - v);
			} else if (k == 0 && ((size_t)(end - v) != f.n[0] ||
			                      memcmp(v, f.v[0], f.n[0]) != 0)) {
				return refuse(g, 400, "malformed_request",
				              "Conflicting Content-Length headers.");
			}
		}
	}

	/* body framing, as evhttp_get_body decides it */
	bool chunked = false;
	uint64_t length = 0;
	if (body_method && f.v[1]) {
		if (!ieq(f.v[1], f.n[1], "chunked"))
			return refuse(
			    g, 501, "unsupported_transfer_encoding",
			    "Transfer-Encoding '%.*s' is not supported; only 'chunked' is.",
			    (int)(f.n[1] < 64 ? f.n[1] : 64), f.v[1]);
		chunked = true;
	} else if (body_method && f.v[0]) {
		if (f.n[0] == 0 || f.n[0] > 19)
			goto bad_length;
		for (size_t k = 0; k < f.n[0]; k++) {
			if (f.v[0][k] < '0' || f.v[0][k] > '9')
				goto bad_length;
			length = length * 10 + (uint64_t)(f.v[0][k] - '0');
		}
		if (length > g->max_body)
			return refuse(g, 413, "request_too_large",
			              "The request body (Content-Length %llu bytes) is larger than "
			              "this server's limit of %zu bytes.",
			              (unsigned long long)length, g->max_body);
	} else if (body_method && f.v[2] && !ieq(f.v[2], f.n[2], "close")) {
		return refuse(
		    g, 411, "length_required",
		    "A request body needs a Content-Length or Transfer-Encoding: chunked.");
	}
	if ((chunked || length > 0) && minor >= 1 && f.v[3] && !ieq(f.v[3], f.n[3], "100-continue"))
		return refuse(g, 417, "expectation_failed", "Expectation '%.*s' is not supported.",
		              (int)(f.n[3] < 64 ? f.n[3] : 64), f.v[3]);

	if (chunked) {
		g->state = ST_CHUNK_LINE;
	} else if (length > 0) {
		g->state = ST_LENGTH;
		g->remaining = length;
	} else {
		request_done(g);
	}
	return 0;
bad_length:
	return refuse(g, 400, "malformed_request", "Invalid Content-Length '%.*s'.",
	              (int)(f.n[0] < 32 ? f.n[0] : 32), f.v[0]);
}

/* A chunk-size line (without its end). 0 or -1 with g->err filled. */
static int parse_chunk_line(struct api_gate *g, const char *line, size_t len)
{
	uint64_t size = 0;
	size_t i = 0;
	for (; i < len && i < 16; i++) {
		char c = line[i];
		int v = c >= '0' && c <= '9'   ? c - '0'
		        : c >= 'a' && c <= 'f' ? c - 'a' + 10
		        : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                               : -1;
		if (v < 0)
			break;
		size = size * 16 + (uint64_t)v;
	}
	/* evhttp accepts what follows a space and nothing else (no ";ext") */
	if (i == 0 || i >= 16 || (i < len && line[i] != ' '))
		return refuse(g, 400, "malformed_request", "Malformed chunk-size line.");
	if (size == 0) {
		g->state = ST_TRAILER;
		return 0;
	}
	if (size > g->max_body - g->body_total)
		return refuse(g, 413, "request_too_large",
		              "The chunked request body is larger than this server's limit of %zu "
		              "bytes.",
		              g->max_body);
	g->body_total += size;
	g->remaining = size;
	g->state = ST_CHUNK_DATA;
	return 0;
}

/* A complete line is at the end of g->held (from g->line_start); |k| bytes
 * were consumed for it. */
static size_t on_line(struct api_gate *g, size_t k, enum api_gate_act *act)
{
	const char *line = g->held.data + g->line_start;
	size_t len = g->held.len - g->line_start - 1;
	if (len && line[len - 1] == '\r')
		len--;
	switch (g->state) {
	case ST_HEAD:
		if (len > 0) {
			g->line_start = g->held.len;
			*act = API_GATE_HOLD;
			return k;
		}
		if (g->line_start == 0) {
			refuse(g, 400, "malformed_request", "Empty HTTP request line.");
			return reject(g, k, act);
		}
		return parse_head(g) ? reject(g, k, act) : release(g, k, act);
	case ST_CHUNK_LINE:
		if (len == 0) /* the line end after chunk data (evhttp skips empty lines) */
			return release(g, k, act);
		if (memchr(line, '\0', len) || parse_chunk_line(g, line, len)) {
			if (g->err.status == 0)
				refuse(g, 400, "malformed_request", "Malformed chunk-size line.");
			return reject(g, k, act);
		}
		return release(g, k, act);
	default: /* ST_TRAILER */
		if (len == 0) {
			request_done(g);
			return release(g, k, act);
		}
		const char *colon = memchr(line, ':', len);
		if (line[0] == ' ' || line[0] == '\t' || !colon || colon == line ||
		    memchr(line, '\0', len)) {
			refuse(g, 400, "malformed_request", "Malformed trailer line.");
			return reject(g, k, act);
		}
		return release(g, k, act);
	}
}

/* ST_HEAD, ST_CHUNK_LINE, ST_TRAILER: gather up to the next LF. */
static size_t gather(struct api_gate *g, const char *p, size_t n, enum api_gate_act *act)
{
	const char *nl = memchr(p, '\n', n);
	size_t k = nl ? (size_t)(nl - p) + 1 : n;
	if (g->state == ST_CHUNK_LINE) {
		if (g->held.len + k > API_GATE_MAX_CHUNK_LINE) {
			refuse(g, 400, "malformed_request", "Chunk-size line longer than %d bytes.",
			       API_GATE_MAX_CHUNK_LINE);
			return reject(g, n, act);
		}
	} else if (g->head_len + k > g->max_head) {
		if (g->state == ST_HEAD)
			refuse(
			    g, 431, "request_header_fields_too_large",
			    "The request line and headers are larger than this server's limit of "
			    "%zu bytes.",
			    g->max_head);
		else
			refuse(
			    g, 431, "request_header_fields_too_large",
			    "The request headers and trailers are larger than this server's limit "
			    "of %zu bytes.",
			    g->max_head);
		return reject(g, n, act);
	}
	if (api_buf_append(&g->held, p, k)) {
		refuse(g, 500, "server_error", "Out of memory while reading the request.");
		return reject(g, n, act);
	}
	if (g->state != ST_CHUNK_LINE)
		g->head_len += k;
	if (!nl) {
		*act = API_GATE_HOLD;
		return k;
	}
	return on_line(g, k, act);
}

size_t api_gate_feed(struct api_gate *g, const char *p, size_t n, enum api_gate_act *act)
{
	if (g->flush) {
		g->held.len = 0;
		g->line_start = 0;
		g->flush = false;
	}
	*act = API_GATE_PASS;
	if (n == 0)
		return 0;
	switch (g->state) {
	case ST_REJECTED:
		*act = API_GATE_DROP;
		return n;
	case ST_LENGTH:
	case ST_CHUNK_DATA: {
		size_t k = (uint64_t)n < g->remaining ? n : (size_t)g->remaining;
		g->remaining -= k;
		if (g->remaining == 0) {
			if (g->state == ST_LENGTH)
				request_done(g);
			else
				g->state = ST_CHUNK_LINE;
		}
		return k;
	}
	default:
		return gather(g, p, n, act);
	}
}
