/* The API over the mesh (see api_tunnel.h): payload codecs, the proxy side
 * (an evhttp request -> a NET_STREAM_HTTP stream to the serving node) and
 * the serving side (a stream -> a loopback HTTP request to our own API).
 *
 * Proxy lifetime: a tun_proxy lives until its stream's on_close. The HTTP
 * request may go first (client closed): we then forget it and reset the
 * stream. We learn that the client closed from a watcher on its socket
 * (EOF), and, as a backstop for the cases evhttp notices first (a failed
 * write detaches the request from its connection), from a once-a-second
 * sweep that looks for requests without a connection.
 *
 * Serving lifetime: a tun_serve lives until its stream closed; its
 * loopback connection is freed from a separate event (never from inside
 * one of evhttp's own callbacks). */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api/api.h"
#include "api/api_request.h"
#include "api/api_tunnel.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "mesh/mesh.h"

/* ---- payloads ------------------------------------------------------------ */

static void put_headers(struct net_buf *b, const struct api_tunnel_header *h, size_t n)
{
	net_buf_put_u16(b, (uint16_t)n);
	for (size_t i = 0; i < n; i++) {
		net_buf_put_str(b, h[i].name, h[i].name_len);
		net_buf_put_str(b, h[i].value, h[i].value_len);
	}
}

static int check_headers(const struct api_tunnel_header *h, size_t n)
{
	if (n > API_TUNNEL_MAX_HEADERS)
		return ML_ERR_RANGE;
	for (size_t i = 0; i < n; i++)
		if (h[i].name_len == 0 || h[i].name_len > API_TUNNEL_MAX_NAME ||
		    h[i].value_len > API_TUNNEL_MAX_VALUE)
			return ML_ERR_RANGE;
	return 0;
}

int api_tunnel_encode_request(struct net_buf *b, const char *method, const char *path,
                              const struct api_tunnel_header *h, size_t n)
{
	size_t ml = strlen(method), pl = strlen(path);
	if (ml == 0 || ml > API_TUNNEL_MAX_METHOD || pl == 0 || pl > API_TUNNEL_MAX_PATH ||
	    check_headers(h, n))
		return ML_ERR_RANGE;
	net_buf_put_u8(b, API_TUNNEL_VERSION);
	net_buf_put_str(b, method, ml);
	net_buf_put_str(b, path, pl);
	put_headers(b, h, n);
	return net_buf_error(b);
}

int api_tunnel_encode_response(struct net_buf *b, int status, const struct api_tunnel_header *h,
                               size_t n)
{
	if (status < 100 || status > 599 || check_headers(h, n))
		return ML_ERR_RANGE;
	net_buf_put_u8(b, API_TUNNEL_VERSION);
	net_buf_put_u16(b, (uint16_t)status);
	put_headers(b, h, n);
	return net_buf_error(b);
}

static int read_headers(struct net_reader *r, struct api_tunnel_head *out, const char *what)
{
	uint16_t n = net_reader_u16(r);
	if (n > API_TUNNEL_MAX_HEADERS)
		return ml_error(ML_ERR_FORMAT, "api_tunnel: %s with %u headers (limit %d)", what, n,
		                API_TUNNEL_MAX_HEADERS);
	for (uint16_t i = 0; i < n; i++) {
		struct api_tunnel_header *h = &out->headers[i];
		h->name = net_reader_str(r, API_TUNNEL_MAX_NAME, &h->name_len);
		h->value = net_reader_str(r, API_TUNNEL_MAX_VALUE, &h->value_len);
		if (net_reader_error(r))
			return ml_error(ML_ERR_FORMAT,
			                "api_tunnel: %s header %u truncated or over the caps "
			                "(name %d, value %d bytes)",
			                what, i, API_TUNNEL_MAX_NAME, API_TUNNEL_MAX_VALUE);
		if (h->name_len == 0)
			return ml_error(ML_ERR_FORMAT, "api_tunnel: %s header %u has no name", what,
			                i);
		for (size_t k = 0; k < h->name_len; k++)
			if (h->name[k] <= ' ' || h->name[k] == ':' ||
			    (unsigned char)h->name[k] > 126)
				return ml_error(ML_ERR_FORMAT,
				                "api_tunnel: %s header %u has a bad name byte",
				                what, i);
		for (size_t k = 0; k < h->value_len; k++)
			if (h->value[k] == '\r' || h->value[k] == '\n' || h->value[k] == '\0')
				return ml_error(ML_ERR_FORMAT,
				                "api_tunnel: %s header %u has a control byte", what,
				                i);
	}
	out->n_headers = n;
	if (net_reader_finish(r))
		return ml_error(ML_ERR_FORMAT, "api_tunnel: %s truncated or with trailing bytes",
		                what);
	return 0;
}

int api_tunnel_decode_request(const uint8_t *p, size_t len, struct api_tunnel_head *out)
{
	struct net_reader r;
	memset(out, 0, sizeof(*out));
	net_reader_init(&r, p, len);
	uint8_t v = net_reader_u8(&r);
	if (!net_reader_error(&r) && v != API_TUNNEL_VERSION)
		return ml_error(ML_ERR_FORMAT, "api_tunnel: request version %u (want %d)", v,
		                API_TUNNEL_VERSION);
	out->method = net_reader_str(&r, API_TUNNEL_MAX_METHOD, &out->method_len);
	out->path = net_reader_str(&r, API_TUNNEL_MAX_PATH, &out->path_len);
	if (net_reader_error(&r) || out->method_len == 0 || out->path_len == 0)
		return ml_error(ML_ERR_FORMAT,
		                "api_tunnel: request method/path missing, truncated or over the "
		                "caps (%d, %d bytes)",
		                API_TUNNEL_MAX_METHOD, API_TUNNEL_MAX_PATH);
	for (size_t k = 0; k < out->method_len; k++)
		if (out->method[k] < 'A' || out->method[k] > 'Z')
			return ml_error(ML_ERR_FORMAT, "api_tunnel: bad request method");
	if (out->path[0] != '/')
		return ml_error(ML_ERR_FORMAT, "api_tunnel: request path does not start with /");
	for (size_t k = 0; k < out->path_len; k++)
		if ((unsigned char)out->path[k] <= ' ' || out->path[k] == 127)
			return ml_error(ML_ERR_FORMAT, "api_tunnel: control byte in request path");
	return read_headers(&r, out, "request");
}

int api_tunnel_decode_response(const uint8_t *p, size_t len, struct api_tunnel_head *out)
{
	struct net_reader r;
	memset(out, 0, sizeof(*out));
	net_reader_init(&r, p, len);
	uint8_t v = net_reader_u8(&r);
	if (!net_reader_error(&r) && v != API_TUNNEL_VERSION)
		return ml_error(ML_ERR_FORMAT, "api_tunnel: response version %u (want %d)", v,
		                API_TUNNEL_VERSION);
	out->status = net_reader_u16(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "api_tunnel: response truncated");
	if (out->status < 100 || out->status > 599)
		return ml_error(ML_ERR_FORMAT, "api_tunnel: response status %d", out->status);
	return read_headers(&r, out, "response");
}

/* ---- state ------------------------------------------------------------------ */

struct tun_proxy {
	struct api_tunnel *t;
	struct tun_proxy *prev, *next;
	struct evhttp_request *req; /* NULL once replied or the client is gone */
	struct evhttp_connection *evcon;
	struct event *hup;
	struct mesh_stream *s; /* NULL once closed */
	bool started;          /* reply head sent */
	bool ended;            /* reply finished */
	char peer[17];         /* short hex of the serving node, for logs */
	/* kept to try another host once when the first is lost before it
	 * answered (e.g. killed: its connection is declared dead) */
	uint8_t peer_id[NET_ID_LEN];
	struct evbuffer *body;
	char method[8];
	char *path, *model;
	char *ctype, *accept;
	int tries;
};

struct tun_serve {
	struct api_tunnel *t;
	struct tun_serve *prev, *next;
	struct mesh_stream *s; /* NULL once closed */
	struct evhttp_connection *conn;
	struct evhttp_request *req; /* loopback request while it runs */
	struct evbuffer *body;
	char method[API_TUNNEL_MAX_METHOD + 1];
	char *path;
	char *ctype;
	bool got_head, started, sent_head, reaping;
	char peer[17];
};

struct api_tunnel {
	struct event_base *base;
	struct mesh *mesh;
	int api_port;
	char *api_key;
	char *token;
	char *local_model; /* NULL = none */
	bool local_ready;
	struct api_front front;
	struct tun_proxy *proxies;
	struct tun_serve *serves;
	struct event *sweep;
	long long created;
};

static void short_hex(const uint8_t *id, char out[17])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < 8; i++) {
		out[2 * i] = hx[id[i] >> 4];
		out[2 * i + 1] = hx[id[i] & 15];
	}
	out[16] = '\0';
}

/* ---- small reply helpers -------------------------------------------------- */

static void reply_json(struct evhttp_request *req, int status, const char *reason, const char *body)
{
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
	if (b)
		evbuffer_add(b, body, strlen(body));
	evhttp_send_reply(req, status, reason, b);
	if (b)
		evbuffer_free(b);
}

static void reply_err(struct evhttp_request *req, const struct api_err *e)
{
	char *body = api_err_json(e);
	const char *reason = e->status == 503   ? "Service Unavailable"
	                     : e->status == 502 ? "Bad Gateway"
	                     : e->status == 404 ? "Not Found"
	                                        : "Error";
	reply_json(req, e->status, reason,
	           body ? body
	                : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
	free(body);
}

static void reply_json_t(struct evhttp_request *req, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (!s) {
		struct api_err e;
		api_err_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
		reply_err(req, &e);
		return;
	}
	reply_json(req, 200, "OK", s);
	free(s);
}

/* ---- proxy side ------------------------------------------------------------- */

static void proxy_unlink_http(struct tun_proxy *p)
{
	if (p->hup) {
		event_free(p->hup);
		p->hup = NULL;
	}
	p->req = NULL;
	p->evcon = NULL;
}

/* The client is gone (or we give up on it): forget the request and abort
 * the stream, which cancels the remote generation. */
static void proxy_client_gone(struct tun_proxy *p, const char *why)
{
	ML_INFO("mesh: client of a request tunnelled to %s %s; cancelling it", p->peer, why);
	proxy_unlink_http(p);
	if (p->s) {
		struct mesh_stream *s = p->s;
		mesh_stream_reset(s, MESH_CLOSE_NORMAL);
	}
}

static bool proxy_check_detached(struct tun_proxy *p);

static void on_proxy_hup(evutil_socket_t fd, short what, void *arg)
{
	struct tun_proxy *p = arg;
	char c;
	(void)what;
	/* evhttp may have seen the EOF first, in the same loop iteration: it
	 * then freed the connection (and closed this fd) and left the request
	 * detached */
	if (proxy_check_detached(p))
		return;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0) { /* a pipelined request: stop watching */
		event_free(p->hup);
		p->hup = NULL;
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	struct evhttp_connection *evcon = p->evcon;
	proxy_unlink_http(p);
	if (evcon)
		evhttp_connection_free(evcon); /* frees the request too */
	proxy_client_gone(p, "closed the connection");
}

/* The client's request lost its connection without our watcher seeing it
 * (evhttp detached it after a failed write). */
static bool proxy_check_detached(struct tun_proxy *p)
{
	if (!p->req || evhttp_request_get_connection(p->req))
		return false;
	struct evhttp_request *req = p->req;
	if (p->hup) {
		event_free(p->hup);
		p->hup = NULL;
	}
	p->req = NULL;
	p->evcon = NULL;
	evhttp_request_free(req);
	proxy_client_gone(p, "went away");
	return true;
}

static void proxy_fail(struct tun_proxy *p, int status, const char *msg)
{
	if (!p->req || p->ended)
		return;
	if (!p->started) {
		struct api_err e;
		api_err_set(&e, status, "server_error", NULL, "mesh_error", "%s", msg);
		struct evhttp_request *req = p->req;
		proxy_unlink_http(p);
		p->ended = true;
		reply_err(req, &e);
	} else {
		/* mid-reply: cut the connection so the client sees an error
		 * rather than a short answer that looks complete */
		struct evhttp_connection *evcon = p->evcon;
		proxy_unlink_http(p);
		p->ended = true;
		if (evcon)
			evhttp_connection_free(evcon);
	}
}

static void proxy_on_msg(struct mesh_stream *s, uint8_t type, const uint8_t *payload, size_t len,
                         void *user)
{
	struct tun_proxy *p = user;
	if (proxy_check_detached(p) || !p->req || p->ended)
		return;
	if (type == NET_MSG_HTTP_RESPONSE) {
		struct api_tunnel_head h;
		if (p->started || api_tunnel_decode_response(payload, len, &h)) {
			ML_WARN("mesh: bad tunnel reply from %s: %s", p->peer,
			        p->started ? "a second head" : ml_last_error());
			proxy_fail(p, 502, "The serving node sent a malformed reply.");
			mesh_stream_reset(s, MESH_STREAM_BAD);
			return;
		}
		struct evkeyvalq *oh = evhttp_request_get_output_headers(p->req);
		bool sse = false;
		for (size_t i = 0; i < h.n_headers; i++) {
			char name[API_TUNNEL_MAX_NAME + 1], value[API_TUNNEL_MAX_VALUE + 1];
			memcpy(name, h.headers[i].name, h.headers[i].name_len);
			name[h.headers[i].name_len] = '\0';
			memcpy(value, h.headers[i].value, h.headers[i].value_len);
			value[h.headers[i].value_len] = '\0';
			if (strcasecmp(name, "Content-Type") == 0 ||
			    strcasecmp(name, "Retry-After") == 0 ||
			    strcasecmp(name, "Cache-Control") == 0) {
				evhttp_remove_header(oh, name);
				evhttp_add_header(oh, name, value);
				if (strncasecmp(value, "text/event-stream", 17) == 0)
					sse = true;
			}
		}
		evhttp_add_header(oh, "Access-Control-Allow-Origin", "*");
		if (sse)
			evhttp_add_header(oh, "X-Accel-Buffering", "no");
		p->started = true;
		evhttp_send_reply_start(p->req, h.status,
		                        h.status == 200  ? "OK"
		                        : h.status < 500 ? "Client Error"
		                                         : "Server Error");
		return;
	}
	if (type == NET_MSG_HTTP_BODY) {
		if (!p->started) {
			ML_WARN("mesh: tunnel reply from %s: body before head", p->peer);
			proxy_fail(p, 502, "The serving node sent a malformed reply.");
			mesh_stream_reset(s, MESH_STREAM_BAD);
			return;
		}
		if (len) {
			struct evbuffer *b = evbuffer_new();
			if (b) {
				evbuffer_add(b, payload, len);
				evhttp_send_reply_chunk(p->req, b);
				evbuffer_free(b);
			}
		}
		return;
	}
	if (type == NET_MSG_HTTP_END) {
		if (!p->started) {
			proxy_fail(p, 502, "The serving node sent a malformed reply.");
			mesh_stream_reset(s, MESH_STREAM_BAD);
			return;
		}
		struct evhttp_request *req = p->req;
		proxy_unlink_http(p);
		p->ended = true;
		evhttp_send_reply_end(req);
		return;
	}
	if (type == NET_MSG_ERROR) {
		struct net_reader r;
		size_t n = 0;
		net_reader_init(&r, payload, len);
		uint16_t code = net_reader_u16(&r);
		const char *why = net_reader_str(&r, 512, &n);
		char msg[600];
		snprintf(msg, sizeof(msg), "The serving node refused the request: %.*s (%u).",
		         (int)(why ? n : 0), why ? why : "", code);
		ML_INFO("mesh: %s", msg);
		proxy_fail(p, 502, msg);
		return;
	}
	ML_WARN("mesh: unexpected %s on a tunnel from %s", net_msg_type_name(type), p->peer);
	proxy_fail(p, 502, "The serving node sent a malformed reply.");
	mesh_stream_reset(s, MESH_STREAM_BAD);
}

static void proxy_on_fin(struct mesh_stream *s, void *user)
{
	struct tun_proxy *p = user;
	(void)s;
	if (!proxy_check_detached(p) && p->req && !p->ended)
		proxy_fail(p, 502, "The serving node ended the reply early.");
}

static int proxy_send(struct tun_proxy *p, const uint8_t *peer);
static void proxy_free(struct tun_proxy *p);

static void proxy_on_close(struct mesh_stream *s, int err, void *user)
{
	struct tun_proxy *p = user;
	struct api_tunnel *t = p->t;
	(void)s;
	p->s = NULL;
	if (!proxy_check_detached(p) && p->req && !p->ended) {
		uint8_t other[NET_ID_LEN];
		bool self = false;
		char was[17];
		memcpy(was, p->peer, sizeof(was));
		/* nothing reached the client yet: another host may answer */
		if (!p->started && p->tries < 2 &&
		    mesh_route(t->mesh, p->model, other, &self) == 0 && !self &&
		    memcmp(other, p->peer_id, NET_ID_LEN) != 0 && proxy_send(p, other) == 0) {
			ML_WARN("mesh: lost %s before it answered (%s); request sent to %s instead",
			        was, ml_strerror(err), p->peer);
			return;
		}
		if (p->s) /* a retry that failed half-way: its own on_close comes */
			return;
		ML_WARN("mesh: tunnel to %s closed mid-request (%s)", was, ml_strerror(err));
		proxy_fail(p, 502, "The connection to the node serving the model was lost.");
	}
	proxy_unlink_http(p);
	if (p->prev)
		p->prev->next = p->next;
	else if (t->proxies == p)
		t->proxies = p->next;
	if (p->next)
		p->next->prev = p->prev;
	proxy_free(p);
}

static const struct mesh_stream_callbacks proxy_cbs = {
    .on_msg = proxy_on_msg,
    .on_fin = proxy_on_fin,
    .on_close = proxy_on_close,
};

static void add_hdr(struct api_tunnel_header *h, size_t *n, const char *name, const char *value)
{
	if (!value || *n >= API_TUNNEL_MAX_HEADERS)
		return;
	size_t vl = strlen(value);
	if (vl > API_TUNNEL_MAX_VALUE)
		return;
	h[*n] = (struct api_tunnel_header){name, strlen(name), value, vl};
	(*n)++;
}

static void proxy_free(struct tun_proxy *p)
{
	if (p->body)
		evbuffer_free(p->body);
	free(p->path);
	free(p->model);
	free(p->ctype);
	free(p->accept);
	free(p);
}

/* Opens a stream to |peer| and sends the request down it. Returns 0 or
 * the error of mesh_stream_open / mesh_stream_send (the stream, if any, is
 * then reset; on_close follows). */
static int proxy_send(struct tun_proxy *p, const uint8_t *peer)
{
	struct api_tunnel *t = p->t;
	memcpy(p->peer_id, peer, NET_ID_LEN);
	short_hex(peer, p->peer);
	p->tries++;
	int rc = mesh_stream_open(t->mesh, peer, NET_STREAM_HTTP, &proxy_cbs, p, &p->s);
	if (rc) {
		p->s = NULL;
		return rc;
	}
	struct api_tunnel_header h[2];
	size_t nh = 0;
	add_hdr(h, &nh, "Content-Type", p->ctype);
	add_hdr(h, &nh, "Accept", p->accept);
	struct net_buf b;
	net_buf_init(&b, NET_FRAME_MAX_HTTP);
	rc = api_tunnel_encode_request(&b, p->method, p->path, h, nh);
	rc = rc ? rc : mesh_stream_send(p->s, NET_MSG_HTTP_REQUEST, b.data, b.len, false);
	net_buf_free(&b);
	/* walk the kept body without consuming it */
	struct evbuffer_ptr pos;
	evbuffer_ptr_set(p->body, &pos, 0, EVBUFFER_PTR_SET);
	size_t left = evbuffer_get_length(p->body);
	uint8_t *chunk =
	    left ? malloc(left < NET_FRAME_MAX_HTTP ? left : NET_FRAME_MAX_HTTP) : NULL;
	if (left && !chunk)
		rc = rc ? rc : ML_ERR_NOMEM;
	while (!rc && left > 0) {
		size_t n = left < NET_FRAME_MAX_HTTP ? left : NET_FRAME_MAX_HTTP;
		if (evbuffer_copyout_from(p->body, &pos, chunk, n) != (ev_ssize_t)n) {
			rc = ML_ERR_NOMEM;
			break;
		}
		evbuffer_ptr_set(p->body, &pos, n, EVBUFFER_PTR_ADD);
		rc = mesh_stream_send(p->s, NET_MSG_HTTP_BODY, chunk, n, false);
		left -= n;
	}
	free(chunk);
	rc = rc ? rc : mesh_stream_send(p->s, NET_MSG_HTTP_END, NULL, 0, true);
	if (rc && p->s)
		mesh_stream_reset(p->s, MESH_CLOSE_NORMAL);
	if (!rc)
		ML_DEBUG("mesh: tunnelling %s %s (model %s) to %s", p->method, p->path,
		         p->model ? p->model : "(any)", p->peer);
	return rc;
}

/* Starts proxying |req| to |peer|. Replies itself on failure. */
static void proxy_start(struct api_tunnel *t, struct evhttp_request *req, const uint8_t *peer,
                        const char *model)
{
	struct api_err e;
	struct tun_proxy *p = calloc(1, sizeof(*p));
	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	const char *path = evhttp_request_get_uri(req);
	const char *ct = evhttp_find_header(ih, "Content-Type");
	const char *acc = evhttp_find_header(ih, "Accept");
	if (!p || !(p->body = evbuffer_new()) || !(p->path = strdup(path ? path : "/")) ||
	    (model && !(p->model = strdup(model))) || (ct && !(p->ctype = strdup(ct))) ||
	    (acc && !(p->accept = strdup(acc))) ||
	    evbuffer_add_buffer(p->body, evhttp_request_get_input_buffer(req)) != 0) {
		if (p)
			proxy_free(p);
		api_err_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
		reply_err(req, &e);
		return;
	}
	p->t = t;
	snprintf(p->method, sizeof(p->method), "%s",
	         evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" : "POST");
	int rc = proxy_send(p, peer);
	if (rc && !p->s) { /* could not even open the stream */
		api_err_set(&e, 503, "server_error", NULL, "model_not_available",
		            "The node serving '%.200s' cannot be reached right now (%s); retry "
		            "shortly.",
		            model ? model : "any model", ml_strerror(rc));
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		reply_err(req, &e);
		proxy_free(p);
		return;
	}
	p->next = t->proxies;
	if (t->proxies)
		t->proxies->prev = p;
	t->proxies = p;
	if (rc) { /* the stream was reset; on_close frees p */
		api_err_set(&e, 502, "server_error", NULL, "mesh_error",
		            "Sending the request to the node serving '%.200s' failed: %s",
		            model ? model : "the model", ml_strerror(rc));
		p->ended = true;
		reply_err(req, &e);
		return;
	}
	p->req = req;
	p->evcon = evhttp_request_get_connection(req);
	if (p->evcon) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(p->evcon);
		evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
		if (fd >= 0 &&
		    (p->hup = event_new(t->base, fd, EV_READ | EV_PERSIST, on_proxy_hup, p)))
			event_add(p->hup, NULL);
	}
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct api_tunnel *t = arg;
	(void)fd, (void)what;
	for (struct tun_proxy *p = t->proxies; p;) {
		struct tun_proxy *next = p->next; /* a reset may free p at once */
		proxy_check_detached(p);
		p = next;
	}
}

/* ---- serving side ------------------------------------------------------------ */

static void serve_reap(evutil_socket_t fd, short what, void *arg)
{
	struct tun_serve *sv = arg;
	struct api_tunnel *t = sv->t;
	(void)fd, (void)what;
	if (sv->s) { /* still open: nothing to do yet (rescheduled by on_close) */
		sv->reaping = false;
		return;
	}
	if (sv->conn)
		evhttp_connection_free(sv->conn); /* drops a running loopback request */
	if (sv->body)
		evbuffer_free(sv->body);
	free(sv->path);
	free(sv->ctype);
	if (sv->prev)
		sv->prev->next = sv->next;
	else if (t->serves == sv)
		t->serves = sv->next;
	if (sv->next)
		sv->next->prev = sv->prev;
	free(sv);
}

static void serve_schedule_reap(struct tun_serve *sv)
{
	if (sv->reaping)
		return;
	struct timeval tv0 = {0, 0};
	if (event_base_once(sv->t->base, -1, EV_TIMEOUT, serve_reap, sv, &tv0) == 0)
		sv->reaping = true;
}

static void serve_send(struct tun_serve *sv, uint8_t type, const void *p, size_t n, bool fin)
{
	if (!sv->s)
		return;
	int rc = mesh_stream_send(sv->s, type, p, n, fin);
	if (rc && sv->s) {
		ML_WARN("mesh: sending a tunnelled reply to %s failed: %s", sv->peer,
		        ml_strerror(rc));
		mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
	}
}

static void serve_send_head(struct tun_serve *sv, int status, const char *ctype, const char *cache,
                            const char *retry)
{
	struct api_tunnel_header h[3];
	size_t nh = 0;
	add_hdr(h, &nh, "Content-Type", ctype);
	add_hdr(h, &nh, "Cache-Control", cache);
	add_hdr(h, &nh, "Retry-After", retry);
	struct net_buf b;
	net_buf_init(&b, NET_FRAME_MAX_HTTP);
	if (api_tunnel_encode_response(&b, status, h, nh) == 0)
		serve_send(sv, NET_MSG_HTTP_RESPONSE, b.data, b.len, false);
	else if (sv->s)
		mesh_stream_reset(sv->s, MESH_STREAM_BAD);
	net_buf_free(&b);
	sv->sent_head = true;
}

static void serve_forward_body(struct tun_serve *sv, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	while (sv->s && evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_length(in);
		if (n > NET_FRAME_MAX_HTTP)
			n = NET_FRAME_MAX_HTTP;
		const unsigned char *d = evbuffer_pullup(in, (ev_ssize_t)n);
		if (!d)
			break;
		serve_send(sv, NET_MSG_HTTP_BODY, d, n, false);
		evbuffer_drain(in, n);
	}
}

static int serve_on_head(struct evhttp_request *req, void *arg)
{
	struct tun_serve *sv = arg;
	if (!sv->s)
		return -1;
	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	serve_send_head(
	    sv, evhttp_request_get_response_code(req), evhttp_find_header(ih, "Content-Type"),
	    evhttp_find_header(ih, "Cache-Control"), evhttp_find_header(ih, "Retry-After"));
	return 0;
}

static void serve_on_chunk(struct evhttp_request *req, void *arg)
{
	struct tun_serve *sv = arg;
	if (sv->s)
		serve_forward_body(sv, req);
}

static void serve_on_done(struct evhttp_request *req, void *arg)
{
	struct tun_serve *sv = arg;
	sv->req = NULL;
	if (!sv->s) {
		serve_schedule_reap(sv);
		return;
	}
	if (!req || evhttp_request_get_response_code(req) == 0) {
		if (!sv->sent_head) {
			static const char body[] =
			    "{\"error\":{\"message\":\"The serving node could not answer the "
			    "tunnelled "
			    "request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
			serve_send_head(sv, 502, "application/json", NULL, NULL);
			serve_send(sv, NET_MSG_HTTP_BODY, body, sizeof(body) - 1, false);
			serve_send(sv, NET_MSG_HTTP_END, NULL, 0, true);
		} else if (sv->s) {
			mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
		}
		return;
	}
	if (!sv->sent_head)
		serve_on_head(req, sv);
	serve_forward_body(sv, req);
	serve_send(sv, NET_MSG_HTTP_END, NULL, 0, true);
}

static void serve_start(struct tun_serve *sv)
{
	struct api_tunnel *t = sv->t;
	enum evhttp_cmd_type cmd;
	if (strcmp(sv->method, "GET") == 0)
		cmd = EVHTTP_REQ_GET;
	else if (strcmp(sv->method, "POST") == 0)
		cmd = EVHTTP_REQ_POST;
	else {
		ML_WARN("mesh: %s asked for method %s through the tunnel; refused", sv->peer,
		        sv->method);
		mesh_stream_reset(sv->s, MESH_STREAM_REFUSED);
		return;
	}
	sv->started = true;
	sv->conn = evhttp_connection_base_new(t->base, NULL, "127.0.0.1", (ev_uint16_t)t->api_port);
	struct evhttp_request *req = sv->conn ? evhttp_request_new(serve_on_done, sv) : NULL;
	if (!req) {
		ML_WARN("mesh: out of memory for a tunnelled request");
		mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
		return;
	}
	evhttp_connection_set_timeout(sv->conn, 600);
	evhttp_request_set_header_cb(req, serve_on_head);
	evhttp_request_set_chunked_cb(req, serve_on_chunk);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	char num[32], auth[600];
	evhttp_add_header(oh, "Host", "127.0.0.1");
	evhttp_add_header(oh, "Content-Type", sv->ctype ? sv->ctype : "application/json");
	evhttp_add_header(oh, API_TUNNEL_MARK, "1");
	if (t->api_key) {
		snprintf(auth, sizeof(auth), "Bearer %s", t->api_key);
		evhttp_add_header(oh, "Authorization", auth);
	}
	if (cmd == EVHTTP_REQ_POST) {
		snprintf(num, sizeof(num), "%zu", evbuffer_get_length(sv->body));
		evhttp_add_header(oh, "Content-Length", num);
		evbuffer_add_buffer(evhttp_request_get_output_buffer(req), sv->body);
	}
	if (evhttp_make_request(sv->conn, req, cmd, sv->path) != 0) {
		/* evhttp freed |req| */
		ML_WARN("mesh: cannot make the loopback request for a tunnel from %s", sv->peer);
		mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
		return;
	}
	sv->req = req;
	ML_DEBUG("mesh: serving %s %s for %s", sv->method, sv->path, sv->peer);
}

static void serve_bad(struct tun_serve *sv, const char *why)
{
	ML_WARN("mesh: malformed tunnel request from %s (%s); stream reset", sv->peer, why);
	if (sv->s)
		mesh_stream_reset(sv->s, MESH_STREAM_BAD);
}

static void serve_on_msg(struct mesh_stream *s, uint8_t type, const uint8_t *payload, size_t len,
                         void *user)
{
	struct tun_serve *sv = user;
	(void)s;
	if (sv->started) {
		serve_bad(sv, "a message after the end of the request");
		return;
	}
	if (type == NET_MSG_HTTP_REQUEST) {
		struct api_tunnel_head h;
		if (sv->got_head) {
			serve_bad(sv, "a second head");
			return;
		}
		if (api_tunnel_decode_request(payload, len, &h)) {
			serve_bad(sv, ml_last_error());
			return;
		}
		memcpy(sv->method, h.method, h.method_len);
		sv->method[h.method_len] = '\0';
		sv->path = strndup(h.path, h.path_len);
		for (size_t i = 0; i < h.n_headers; i++)
			if (h.headers[i].name_len == 12 &&
			    strncasecmp(h.headers[i].name, "Content-Type", 12) == 0 && !sv->ctype)
				sv->ctype = strndup(h.headers[i].value, h.headers[i].value_len);
		if (!sv->path) {
			serve_bad(sv, "out of memory");
			return;
		}
		sv->got_head = true;
		return;
	}
	if (type == NET_MSG_HTTP_BODY) {
		if (!sv->got_head) {
			serve_bad(sv, "body before the head");
			return;
		}
		if (evbuffer_get_length(sv->body) + len > API_TUNNEL_MAX_BODY) {
			char why[96];
			snprintf(why, sizeof(why), "request body over %u bytes",
			         API_TUNNEL_MAX_BODY);
			serve_bad(sv, why);
			return;
		}
		evbuffer_add(sv->body, payload, len);
		return;
	}
	if (type == NET_MSG_HTTP_END) {
		if (!sv->got_head) {
			serve_bad(sv, "end before the head");
			return;
		}
		serve_start(sv);
		return;
	}
	if (type == NET_MSG_ERROR) {
		if (sv->s)
			mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
		return;
	}
	serve_bad(sv, net_msg_type_name(type));
}

static void serve_on_fin(struct mesh_stream *s, void *user)
{
	struct tun_serve *sv = user;
	(void)s;
	if (!sv->started)
		serve_bad(sv, "the stream ended before the request did");
}

static void serve_on_close(struct mesh_stream *s, int err, void *user)
{
	struct tun_serve *sv = user;
	(void)s;
	if (err && sv->req)
		ML_INFO("mesh: tunnel from %s closed before the reply finished; cancelling",
		        sv->peer);
	sv->s = NULL;
	serve_schedule_reap(sv);
}

static const struct mesh_stream_callbacks serve_cbs = {
    .on_msg = serve_on_msg,
    .on_fin = serve_on_fin,
    .on_close = serve_on_close,
};

void api_tunnel_accept(struct api_tunnel *t, struct mesh_stream *s)
{
	struct tun_serve *sv = calloc(1, sizeof(*sv));
	if (!sv || !(sv->body = evbuffer_new())) {
		free(sv);
		ML_WARN("mesh: out of memory; refusing a tunnel stream");
		return; /* not taken: the mesh resets it */
	}
	sv->t = t;
	sv->s = s;
	short_hex(mesh_stream_peer(s), sv->peer);
	sv->next = t->serves;
	if (t->serves)
		t->serves->prev = sv;
	t->serves = sv;
	mesh_stream_set_callbacks(s, &serve_cbs, sv);
}

/* ---- the front ------------------------------------------------------------------- */

static void reply_models(struct api_tunnel *t, struct evhttp_request *req, const char *only)
{
	json_t *served = mesh_served_models_json(t->mesh);
	json_t *data = json_array();
	json_t *found = NULL;
	size_t i;
	json_t *v;
	if (t->local_model) {
		/* listed while it loads, too */
		bool have = false;
		json_array_foreach(served, i, v) if (json_is_string(v) &&
		                                     strcmp(json_string_value(v), t->local_model) ==
		                                         0) have = true;
		if (!have && served)
			json_array_append_new(served, json_string(t->local_model));
	}
	json_array_foreach(served, i, v)
	{
		if (!json_is_string(v))
			continue;
		json_t *o =
		    json_pack("{s:s, s:s, s:I, s:s}", "id", json_string_value(v), "object", "model",
		              "created", (json_int_t)t->created, "owned_by", "mesh-llm");
		if (only && o && strcmp(json_string_value(v), only) == 0)
			found = json_incref(o);
		if (o)
			json_array_append_new(data, o);
	}
	json_decref(served);
	if (only) {
		json_decref(data);
		if (!found) {
			struct api_err e;
			api_err_set(&e, 404, NULL, "model", "model_not_found",
			            "The model '%.200s' does not exist in this mesh.", only);
			reply_err(req, &e);
			return;
		}
		reply_json_t(req, found);
		json_decref(found);
		return;
	}
	json_t *list = json_pack("{s:s, s:o}", "object", "list", "data", data);
	reply_json_t(req, list);
	json_decref(list);
}

static bool peer_is_loopback(struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;
	if (!c)
		return false;
	evhttp_connection_get_peer(c, &addr, &port);
	return addr && (strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0);
}

static void reply_status(struct api_tunnel *t, struct evhttp_request *req)
{
	json_t *j = mesh_status_json(t->mesh);
	if (j) {
		json_object_set_new(j, "model",
		                    t->local_model ? json_string(t->local_model) : json_null());
		json_object_set_new(j, "model_ready", json_boolean(t->local_ready));
		json_object_set_new(j, "api_port", json_integer(t->api_port));
		/* the token carries the mesh secret: only for callers on this machine */
		if (t->token && peer_is_loopback(req))
			json_object_set_new(j, "token", json_string(t->token));
		json_object_set_new(j, "tunnels", json_integer(api_tunnel_n_open(t)));
	}
	reply_json_t(req, j);
	json_decref(j);
}

/* Is |model| (a model id: file stem) a GGUF on the disk of some alive node? */
static bool model_on_disk(const struct api_tunnel *t, const char *model)
{
	const struct mesh_members *ms = mesh_members(t->mesh);
	size_t ml = strlen(model);
	for (size_t i = 0; ms && i < ms->n; i++) {
		const struct mesh_member *m = ms->v[i];
		if (!m->ann || (m->state == MESH_DEAD || m->state == MESH_LEFT))
			continue;
		for (unsigned k = 0; k < m->ann->n_models && k < MESH_ANN_MAX_MODELS; k++) {
			const char *name = m->ann->models[k].name;
			const char *base = strrchr(name, '/');
			base = base ? base + 1 : name;
			size_t bl = strlen(base);
			if (bl > 5 && strcmp(base + bl - 5, ".gguf") == 0)
				bl -= 5;
			if (bl == ml && strncmp(base, model, ml) == 0)
				return true;
		}
	}
	return false;
}

static bool front_take(void *ctx, struct evhttp_request *req, int route)
{
	struct api_tunnel *t = ctx;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct api_err e;

	if (route == API_ROUTE_NONE) {
		if (path &&
		    (strcmp(path, "/mesh/status") == 0 || strcmp(path, "/mesh/status/") == 0) &&
		    cmd == EVHTTP_REQ_GET) {
			reply_status(t, req);
			return true;
		}
		return false;
	}
	switch (route) {
	case API_ROUTE_HEALTH:
		if (t->local_model)
			return false; /* the engine's own health (loading / ok) */
		reply_json(req, 200, "OK", "{\"status\":\"ok\",\"mode\":\"mesh\"}");
		return true;
	case API_ROUTE_MODELS:
		reply_models(t, req, NULL);
		return true;
	case API_ROUTE_MODEL: {
		const char *last = path ? strrchr(path, '/') : NULL;
		char *id = last ? evhttp_uridecode(last + 1, 0, NULL) : NULL;
		if (t->local_model && id && strcmp(id, t->local_model) == 0) {
			free(id);
			return false;
		}
		reply_models(t, req, id ? id : "");
		free(id);
		return true;
	}
	case API_ROUTE_CHAT:
	case API_ROUTE_COMPLETION:
		break;
	default:
		return false;
	}
	bool marked = evhttp_find_header(evhttp_request_get_input_headers(req), API_TUNNEL_MARK);
	/* which model? (a malformed body is the local handler's to report, or
	 * the serving node's when we have no model) */
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	char model[MESH_NAME_MAX + 1] = "";
	bool has_model = false;
	json_t *doc = body ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *jm = doc ? json_object_get(doc, "model") : NULL;
	if (json_is_string(jm) && json_string_length(jm) > 0) {
		has_model = true;
		snprintf(model, sizeof(model), "%s", json_string_value(jm));
		if (json_string_length(jm) > MESH_NAME_MAX) {
			json_decref(doc);
			if (t->local_model)
				return false; /* the local handler says "no such model" */
			api_err_set(&e, 404, NULL, "model", "model_not_found",
			            "The model name is too long (at most %d bytes).",
			            MESH_NAME_MAX);
			reply_err(req, &e);
			return true;
		}
	}
	json_decref(doc);
	uint8_t peer[NET_ID_LEN];
	bool self = false;
	if (t->local_model && (!has_model || strcmp(model, t->local_model) == 0)) {
		/* ours; while it still loads, another host of it may answer */
		if (t->local_ready || marked ||
		    mesh_route(t->mesh, t->local_model, peer, &self) != 0 || self)
			return false;
		proxy_start(t, req, peer, t->local_model);
		return true;
	}
	if (marked) {
		/* tunnelled here for a model we do not serve (any more): never
		 * tunnel again, and say so */
		api_err_set(&e, 503, "server_error", has_model ? "model" : NULL,
		            "model_not_available",
		            "This node does not serve the model '%.200s' (any more); retry.",
		            has_model ? model : "(any)");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		reply_err(req, &e);
		return true;
	}
	if (mesh_route(t->mesh, has_model ? model : NULL, peer, &self) != 0) {
		/* a node with its own model keeps answering 404 "does not exist"
		 * for names the mesh has never heard of; a model on some node's
		 * disk that nobody serves now, or any model asked of a node
		 * without one (it cannot tell), is 503 */
		if (t->local_model && (!has_model || !model_on_disk(t, model)))
			return false;
		if (has_model)
			api_err_set(&e, 503, "server_error", "model", "model_not_available",
			            "No node in the mesh serves the model '%.200s' right now.",
			            model);
		else
			api_err_set(&e, 503, "server_error", NULL, "model_not_available",
			            "No node in the mesh serves a model right now.");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
		reply_err(req, &e);
		return true;
	}
	if (self)
		return false;
	proxy_start(t, req, peer, has_model ? model : NULL);
	return true;
}

/* ---- lifecycle ------------------------------------------------------------------- */

int api_tunnel_new(struct api_tunnel **out, const struct api_tunnel_params *p)
{
	struct api_tunnel *t = calloc(1, sizeof(*t));
	if (!t)
		return ML_ERR_NOMEM;
	t->base = p->base;
	t->mesh = p->mesh;
	t->api_port = p->api_port;
	t->created = (long long)time(NULL);
	t->front.take = front_take;
	t->front.ctx = t;
	if ((p->api_key && !(t->api_key = strdup(p->api_key))) ||
	    (p->token && !(t->token = strdup(p->token))) ||
	    !(t->sweep = event_new(p->base, -1, EV_PERSIST, on_sweep, t))) {
		api_tunnel_free(t);
		return ML_ERR_NOMEM;
	}
	struct timeval tv = {1, 0};
	event_add(t->sweep, &tv);
	*out = t;
	return 0;
}

void api_tunnel_free(struct api_tunnel *t)
{
	if (!t)
		return;
	static const struct mesh_stream_callbacks none = {0};
	while (t->proxies) {
		struct tun_proxy *p = t->proxies;
		t->proxies = p->next;
		/* the server is going down: answer or cut the client */
		if (p->req && !proxy_check_detached(p))
			proxy_fail(p, 503, "The server is shutting down.");
		proxy_unlink_http(p);
		if (p->s) {
			mesh_stream_set_callbacks(p->s, &none, NULL);
			mesh_stream_reset(p->s, MESH_CLOSE_NORMAL);
		}
		proxy_free(p);
	}
	while (t->serves) {
		struct tun_serve *sv = t->serves;
		t->serves = sv->next;
		if (sv->s) {
			mesh_stream_set_callbacks(sv->s, &none, NULL);
			mesh_stream_reset(sv->s, MESH_CLOSE_NORMAL);
		}
		if (sv->conn)
			evhttp_connection_free(sv->conn);
		if (sv->body)
			evbuffer_free(sv->body);
		free(sv->path);
		free(sv->ctype);
		free(sv);
	}
	if (t->sweep)
		event_free(t->sweep);
	free(t->api_key);
	free(t->token);
	free(t->local_model);
	free(t);
}

void api_tunnel_set_local(struct api_tunnel *t, const char *model_id, bool ready)
{
	if (!model_id || !*model_id) {
		free(t->local_model);
		t->local_model = NULL;
	} else if (!t->local_model || strcmp(t->local_model, model_id) != 0) {
		char *m = strdup(model_id);
		if (m) {
			free(t->local_model);
			t->local_model = m;
		}
	}
	t->local_ready = ready;
}

const struct api_front *api_tunnel_front(struct api_tunnel *t)
{
	return &t->front;
}

int api_tunnel_n_open(const struct api_tunnel *t)
{
	int n = 0;
	for (const struct tun_proxy *p = t->proxies; p; p = p->next)
		n++;
	for (const struct tun_serve *sv = t->serves; sv; sv = sv->next)
		n++;
	return n;
}
