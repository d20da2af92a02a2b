/* The HTTP side of the OpenAI API: evhttp routing, auth, request bodies ->
 * backend submissions, and replies (one JSON document, or server-sent events
 * over chunked encoding).
 *
 * A running request is an api_job. The backend calls on_eng_event() on its
 * own thread; that only appends the text to the job's mutex-protected queue
 * and activates the job's wake event. Everything else (evhttp, the job
 * list) happens on the loop thread in on_wake().
 *
 * Lifetime: a job lives until the backend's final event has been handled
 * on the loop thread. The HTTP request may go away first (client closed:
 * closecb, or our own close watcher); then the job cancels its backend
 * request and forgets the evhttp request.
 *
 * Every connection is an api_conn: we make its bufferevent (evhttp_set_bevcb)
 * and watch its input buffer, so that the request gate (api_gate.h) reads
 * each byte before evhttp does. libevent 2.1 answers a body over the cap,
 * a head over the cap and a malformed request itself with an HTML page,
 * before any callback of ours runs; the gate refuses those requests first
 * and hands evhttp a marked stand-in, which on_request answers with an
 * OpenAI JSON error and Connection: close. evhttp's own caps stay set to the
 * same values, as a backstop that the gate always reaches first.
 *
 * Known limitations: after a refusal the connection is closed as soon as
 * the reply is written; a client still uploading (a body announced with
 * Content-Length but not held back by Expect: 100-continue) may then see a
 * reset instead of the reply, as with evhttp's own refusals. A client that
 * half-closes its side after sending the request is taken as gone (the
 * close watcher cannot tell the two apart); HTTP clients do not do that. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api/api.h"
#include "api/api_gate.h"
#include "api/api_request.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_rng.h"
#include "base/ml_time.h"
#include "tokenizer/tok_template.h"

struct api_job;
struct api_conn;

struct api_server {
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	int port;
	char *api_key;
	char *model_id;
	struct api_buf model_json;    /* model id as a JSON string literal */
	const struct api_backend *be; /* NULL while loading */
	struct api_job *jobs;         /* running requests */
	int n_active;
	long long created;
	struct ml_rng rng;
	struct evbuffer *scratch;
	struct api_conn *conns;        /* every connection we made a bufferevent for */
	const struct api_front *front; /* the mesh, or NULL (api_server_set_front) */
	size_t max_body, max_headers;
};

/* One client connection: the gate over its input and the job (if any)
 * that wants to hear when it closes. It owns the connection's close
 * callback; it is freed there (or, if evhttp dropped the connection before
 * it was set up, in on_conn_setup). */
struct api_conn {
	struct api_server *srv;
	struct api_conn *prev, *next;
	struct bufferevent *bev;
	struct evhttp_connection *evcon; /* NULL until on_conn_setup ran */
	struct evbuffer_cb_entry *watch; /* on the bufferevent's input */
	struct event *setup;
	struct evbuffer *tmp; /* new input while the gate looks at it */
	struct api_gate gate;
	struct api_job *job; /* running request on this connection, or NULL */
	int n_dispatched;    /* requests evhttp handed to on_request so far */
	bool busy;           /* inside on_conn_input (our own buffer edits call it again) */
};

struct api_job {
	struct api_server *srv;
	struct api_job *prev, *next;
	struct evhttp_request *req; /* NULL once the client is gone */
	struct evhttp_connection *evcon;
	struct api_conn *conn; /* NULL when the connection has no api_conn */
	struct event *wake;
	struct event *hup; /* watches the socket for the client closing */
	uint64_t id;
	bool submitted;
	enum api_kind kind;
	bool stream, include_usage;
	char cmpl_id[48];
	long long created;
	double t_start; /* ml_time_s() at submission */
	int n_prompt;
	struct api_buf text;  /* non-stream: the whole completion */
	struct api_buf spare; /* drained queue buffer, handed back to keep its capacity */

	/* shared with the backend thread, under mu */
	pthread_mutex_t mu;
	struct api_buf q; /* queued pieces: [u32 length][bytes] ... */
	bool oom;
	bool final;
	enum eng_finish finish;
	int ev_n_prompt, ev_n_completion;
	int err;
	char errmsg[256];
};

/* ---- small reply helpers ---------------------------------------------- */

static void add_common_headers(struct evhttp_request *req, const char *ctype)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
}

static void send_body(struct evhttp_request *req, int status, const char *reason, const char *body,
                      size_t len)
{
	struct evbuffer *b = evbuffer_new();
	if (b)
		evbuffer_add(b, body, len);
	add_common_headers(req, "application/json");
	evhttp_send_reply(req, status, reason, b);
	if (b)
		evbuffer_free(b);
}

static const char *reason_of(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 411:
		return "Length Required";
	case 413:
		return "Payload Too Large";
	case 417:
		return "Expectation Failed";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	}
	return "Error";
}

static void send_error(struct evhttp_request *req, const struct api_err *e, const char *retry_after)
{
	char *body = api_err_json(e);
	if (retry_after)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
		                  retry_after);
	ML_DEBUG("api: %d %s", e->status, e->message);
	if (body) {
		send_body(req, e->status, reason_of(e->status), body, strlen(body));
		free(body);
	} else {
		static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
		                          "\"server_error\",\"param\":null,\"code\":null}}";
		send_body(req, 500, reason_of(500), oom, sizeof(oom) - 1);
	}
}

static void send_buf(struct evhttp_request *req, struct api_buf *b)
{
	if (!b->data) {
		struct api_err e;
		api_err_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
		send_error(req, &e, NULL);
		return;
	}
	send_body(req, 200, "OK", b->data, b->len);
}

static void set_nodelay(struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- jobs --------------------------------------------------------------- */

static void job_unlink_http(struct api_job *j)
{
	if (j->hup) {
		event_free(j->hup);
		j->hup = NULL;
	}
	if (j->conn)
		j->conn->job = NULL;
	else if (j->evcon)
		evhttp_connection_set_closecb(j->evcon, NULL, NULL);
	j->conn = NULL;
	j->evcon = NULL;
	j->req = NULL;
}

static void job_free(struct api_job *j)
{
	struct api_server *s = j->srv;
	if (j->prev)
		j->prev->next = j->next;
	else if (s->jobs == j)
		s->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	if (j->submitted)
		s->n_active--;
	if (j->wake)
		event_free(j->wake);
	if (j->hup)
		event_free(j->hup);
	pthread_mutex_destroy(&j->mu);
	api_buf_free(&j->q);
	api_buf_free(&j->spare);
	api_buf_free(&j->text);
	free(j);
}

/* The client closed the connection (evhttp noticed, or our watcher did and
 * freed the connection). Cancel the backend request at once. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct api_job *j = arg;
	(void)evcon;
	if (j->req && evhttp_request_get_connection(j->req) == NULL) {
		/* evhttp detached the unfinished request from the failed
		 * connection and left it to us */
		evhttp_request_free(j->req);
	}
	ML_INFO("api: client closed %s; cancelling", j->cmpl_id);
	job_unlink_http(j);
	if (j->submitted && j->srv->be)
		j->srv->be->ops->cancel(j->srv->be->ctx, j->id);
}

static void on_hup(evutil_socket_t fd, short what, void *arg)
{
	struct api_job *j = arg;
	char c;
	(void)what;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0) {
		/* the client sent more (a pipelined request): stop watching */
		event_free(j->hup);
		j->hup = NULL;
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	/* EOF or error: freeing the connection calls on_conn_close */
	struct evhttp_connection *evcon = j->evcon;
	if (evcon)
		evhttp_connection_free(evcon);
	else
		job_unlink_http(j);
}

/* ---- connections and the request gate -------------------------------------- */

static void conn_free(struct api_conn *c)
{
	struct api_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else if (s->conns == c)
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->watch)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
	if (c->setup)
		event_free(c->setup);
	if (c->tmp)
		evbuffer_free(c->tmp);
	api_gate_clear(&c->gate);
	free(c);
}

static struct api_conn *conn_find(struct api_server *s, struct evhttp_connection *evcon)
{
	for (struct api_conn *c = s->conns; c; c = c->next)
		if (c->evcon == evcon)
			return c;
	return NULL;
}

/* evhttp is freeing the connection: tell its job, then forget it. */
static void on_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct api_conn *c = arg;
	if (c->job)
		on_conn_close(evcon, c->job);
	conn_free(c);
}

/* Runs once, after evhttp has wrapped the new bufferevent in its connection
 * and before any byte is read (active events run before the next poll). */
static void on_conn_setup(evutil_socket_t fd, short what, void *arg)
{
	struct api_conn *c = arg;
	struct bufferevent *bev = c->bev;
	void *evcon = NULL;
	(void)fd, (void)what;
	/* evhttp's callbacks carry its connection; bufferevent_free clears them,
	 * so NULL means evhttp already gave the connection up */
	bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
	if (evcon) {
		c->evcon = evcon;
		evhttp_connection_set_closecb(c->evcon, on_conn_closed, c);
	} else {
		conn_free(c);
	}
	bufferevent_decref(bev); /* taken in on_new_conn */
}

/* Called after every change of the connection's input buffer, before
 * evhttp's read callback. New bytes (the last n_added) go through the
 * gate: what it passes or releases goes back into the input buffer for
 * evhttp, what it holds stays with the gate, what it refuses is replaced. */
static void on_conn_input(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
	struct api_conn *c = arg;
	size_t total = evbuffer_get_length(in);
	if (c->busy || info->n_added == 0 || info->n_added > total)
		return;
	c->busy = true;
	size_t old = total - info->n_added; /* already through the gate, not yet parsed */
	evbuffer_add_buffer(c->tmp, in);
	if (old)
		evbuffer_remove_buffer(c->tmp, in, old);
	while (evbuffer_get_length(c->tmp) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(c->tmp, -1, NULL, &v, 1) < 1 || v.iov_len == 0) {
			v.iov_len = evbuffer_get_length(c->tmp);
			if (!(v.iov_base = evbuffer_pullup(c->tmp, (ev_ssize_t)v.iov_len)))
				break;
		}
		enum api_gate_act act;
		size_t k = api_gate_feed(&c->gate, v.iov_base, v.iov_len, &act);
		if (k == 0)
			break;
		if (act == API_GATE_PASS)
			evbuffer_remove_buffer(c->tmp, in, k);
		else
			evbuffer_drain(c->tmp, k);
		if (act == API_GATE_RELEASE || act == API_GATE_REJECT) {
			size_t hl;
			const char *h = api_gate_held(&c->gate, &hl);
			evbuffer_add(in, h, hl);
		}
		if (act == API_GATE_REJECT) {
			const struct api_err *e = api_gate_error(&c->gate);
			ML_DEBUG("api: refusing a request: %d %s", e->status, e->message);
		}
	}
	evbuffer_drain(c->tmp, evbuffer_get_length(c->tmp));
	c->busy = false;
}

/* evhttp_set_bevcb: the bufferevent evhttp would make itself (no fd yet,
 * options 0: evhttp closes the socket), plus our api_conn watching it. Out
 * of memory for the api_conn: the connection is served without the gate
 * (evhttp's own caps and HTML errors then apply). */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
	struct api_server *s = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
	struct api_conn *c = bev ? calloc(1, sizeof(*c)) : NULL;
	if (!c)
		return bev;
	c->srv = s;
	c->bev = bev;
	api_gate_init(&c->gate, s->max_headers, s->max_body);
	if (!(c->tmp = evbuffer_new()) || !(c->setup = event_new(base, -1, 0, on_conn_setup, c)) ||
	    !(c->watch = evbuffer_add_cb(bufferevent_get_input(bev), on_conn_input, c))) {
		ML_WARN("api: out of memory; serving a connection without the request gate");
		if (c->tmp)
			evbuffer_free(c->tmp);
		if (c->setup)
			event_free(c->setup);
		free(c);
		return bev;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	bufferevent_incref(bev); /* until on_conn_setup has looked at it */
	event_active(c->setup, EV_TIMEOUT, 0);
	return bev;
}

/* Backend thread: copy and wake the loop. */
static void on_eng_event(const struct eng_event *ev, void *user)
{
	struct api_job *j = user;
	pthread_mutex_lock(&j->mu);
	if (ev->len > 0 && ev->len < UINT32_MAX) {
		uint32_t n = (uint32_t)ev->len;
		if (api_buf_append(&j->q, &n, sizeof(n)) || api_buf_append(&j->q, ev->text, n))
			j->oom = true;
	}
	j->ev_n_prompt = ev->n_prompt;
	j->ev_n_completion = ev->n_completion;
	if (ev->finish != ENG_FINISH_NONE) {
		j->final = true;
		j->finish = ev->finish;
		j->err = ev->err;
		snprintf(j->errmsg, sizeof(j->errmsg), "%s", ev->message ? ev->message : "");
	}
	/* under the lock, so the loop cannot free the job before this returns */
	event_active(j->wake, EV_READ, 0);
	pthread_mutex_unlock(&j->mu);
}

static const char *finish_name(enum eng_finish f)
{
	return f == ENG_FINISH_LENGTH ? "length" : "stop";
}

static int chunk_head(struct api_job *j, struct api_buf *b)
{
	const char *obj = j->kind == API_KIND_CHAT ? "chat.completion.chunk" : "text_completion";
	int rc = api_buf_printf(
	    b, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->cmpl_id,
	    obj, j->created);
	return rc ? rc : api_buf_append(b, j->srv->model_json.data, j->srv->model_json.len);
}

static void send_sse(struct api_job *j, struct api_buf *b)
{
	struct evbuffer *eb = j->srv->scratch;
	if (!b->data || !j->req)
		return;
	evbuffer_add(eb, b->data, b->len);
	evhttp_send_reply_chunk(j->req, eb);
	evbuffer_drain(eb, evbuffer_get_length(eb));
}

/* One content piece (or the opening role chunk when |role|). */
static void stream_piece(struct api_job *j, const char *text, size_t len, bool role)
{
	struct api_buf b = {0};
	int rc = chunk_head(j, &b);
	if (j->kind == API_KIND_CHAT) {
		rc = rc ? rc
		        : api_buf_printf(&b, ",\"choices\":[{\"index\":0,\"delta\":{%s\"content\":",
		                         role ? "\"role\":\"assistant\"," : "");
		rc = rc ? rc : api_buf_json_str(&b, text, len);
		rc = rc ? rc
		        : api_buf_printf(&b, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
	} else {
		rc = rc ? rc : api_buf_printf(&b, ",\"choices\":[{\"text\":");
		rc = rc ? rc : api_buf_json_str(&b, text, len);
		rc = rc ? rc
		        : api_buf_printf(
		              &b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
	}
	if (!rc)
		send_sse(j, &b);
	api_buf_free(&b);
}

static void stream_end(struct api_job *j, enum eng_finish fin, int n_prompt, int n_completion)
{
	struct api_buf b = {0};
	int rc = 0;
	if (fin == ENG_FINISH_ERROR || fin == ENG_FINISH_CANCELLED) {
		struct api_err e;
		api_err_set(&e, 500, "server_error", NULL, NULL, "%s",
		            fin == ENG_FINISH_CANCELLED
		                ? "The server is shutting down; the request was cancelled."
		            : j->errmsg[0] ? j->errmsg
		                           : "Generation failed.");
		char *body = api_err_json(&e);
		rc = body ? api_buf_printf(&b, "data: %s\n\n", body) : ML_ERR_NOMEM;
		free(body);
	} else {
		rc = chunk_head(j, &b);
		if (j->kind == API_KIND_CHAT)
			rc = rc ? rc
			        : api_buf_printf(
			              &b,
			              ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
			              "\"finish_reason\":\"%s\"}]}\n\n",
			              finish_name(fin));
		else
			rc = rc ? rc
			        : api_buf_printf(
			              &b,
			              ",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
			              "\"finish_reason\":\"%s\"}]}\n\n",
			              finish_name(fin));
		if (j->include_usage) {
			rc = rc ? rc : chunk_head(j, &b);
			rc = rc ? rc
			        : api_buf_printf(
			              &b,
			              ",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,"
			              "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
			              n_prompt, n_completion, n_prompt + n_completion);
		}
	}
	rc = rc ? rc : api_buf_printf(&b, "data: [DONE]\n\n");
	if (!rc)
		send_sse(j, &b);
	api_buf_free(&b);
	struct evhttp_request *req = j->req;
	job_unlink_http(j);
	evhttp_send_reply_end(req);
}

static void reply_full(struct api_job *j, enum eng_finish fin, int n_prompt, int n_completion)
{
	struct evhttp_request *req = j->req;
	job_unlink_http(j);
	if (fin == ENG_FINISH_ERROR || fin == ENG_FINISH_CANCELLED) {
		struct api_err e;
		if (fin == ENG_FINISH_CANCELLED)
			api_err_set(&e, 503, "server_error", NULL, NULL,
			            "The request was cancelled (the server is shutting down).");
		else
			api_err_set(&e, 500, "server_error", NULL, NULL, "Generation failed: %s",
			            j->errmsg[0] ? j->errmsg : ml_strerror(j->err));
		send_error(req, &e, NULL);
		return;
	}
	struct api_buf b = {0};
	const char *text = j->text.data ? j->text.data : "";
	size_t len = j->text.len;
	int rc = api_buf_printf(
	    &b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->cmpl_id,
	    j->kind == API_KIND_CHAT ? "chat.completion" : "text_completion", j->created);
	rc = rc ? rc : api_buf_append(&b, j->srv->model_json.data, j->srv->model_json.len);
	if (j->kind == API_KIND_CHAT) {
		rc = rc ? rc
		        : api_buf_printf(&b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
		                             "\"assistant\",\"content\":");
		rc = rc ? rc : api_buf_json_str(&b, text, len);
		rc = rc ? rc
		        : api_buf_printf(&b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}]",
		                         finish_name(fin));
	} else {
		rc = rc ? rc : api_buf_printf(&b, ",\"choices\":[{\"text\":");
		rc = rc ? rc : api_buf_json_str(&b, text, len);
		rc = rc ? rc
		        : api_buf_printf(
		              &b, ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"%s\"}]",
		              finish_name(fin));
	}
	rc = rc ? rc
	        : api_buf_printf(&b,
	                         ",\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
	                         "\"total_tokens\":%d}}",
	                         n_prompt, n_completion, n_prompt + n_completion);
	if (rc)
		api_buf_free(&b);
	send_buf(req, &b);
	api_buf_free(&b);
}

/* Loop thread: drain the job's queue. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct api_job *j = arg;
	(void)fd, (void)what;
	struct api_buf q;
	pthread_mutex_lock(&j->mu);
	/* swap in the drained buffer, so that in steady state the backend
	 * thread appends without allocating */
	q = j->q;
	j->q = j->spare;
	j->q.len = 0;
	memset(&j->spare, 0, sizeof(j->spare));
	bool final = j->final, oom = j->oom;
	enum eng_finish fin = j->finish;
	int n_prompt = j->ev_n_prompt > 0 ? j->ev_n_prompt : j->n_prompt;
	int n_completion = j->ev_n_completion;
	pthread_mutex_unlock(&j->mu);

	if (oom && !final && j->submitted && j->srv->be)
		j->srv->be->ops->cancel(j->srv->be->ctx, j->id);
	for (size_t off = 0; off + 4 <= q.len && j->req;) {
		uint32_t n;
		memcpy(&n, q.data + off, 4);
		off += 4;
		if (n > q.len - off)
			break;
		if (j->stream)
			stream_piece(j, q.data + off, n, false);
		else if (api_buf_append(&j->text, q.data + off, n))
			oom = true;
		off += n;
	}
	q.len = 0;
	j->spare = q;
	if (!final)
		return;
	double dt = ml_time_s() - j->t_start;
	static const char *fin_names[] = {"running", "stop", "length", "error", "cancelled"};
	ML_INFO("api: %s: %d prompt + %d generated tokens in %.2f s (%.1f tokens/s), %s%s",
	        j->cmpl_id, n_prompt, n_completion, dt, dt > 0 ? n_completion / dt : 0.0,
	        (unsigned)fin < 5 ? fin_names[fin] : "?", j->req ? "" : " (client gone)");
	if (oom && fin != ENG_FINISH_CANCELLED) {
		fin = ENG_FINISH_ERROR;
		snprintf(j->errmsg, sizeof(j->errmsg), "out of memory");
	}
	if (j->req) {
		if (j->stream)
			stream_end(j, fin, n_prompt, n_completion);
		else
			reply_full(j, fin, n_prompt, n_completion);
	}
	job_free(j);
}

/* ---- request handlers ----------------------------------------------------- */

static void make_id(struct api_server *s, const char *prefix, char *out, size_t cap)
{
	static const char alnum[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	size_t n = (size_t)snprintf(out, cap, "%s", prefix);
	while (n + 1 < cap && n < strlen(prefix) + 24)
		out[n++] = alnum[ml_rng_next(&s->rng) % (sizeof(alnum) - 1)];
	out[n] = '\0';
}

static void handle_generate(struct api_server *s, struct evhttp_request *req, enum api_kind kind,
                            const char *body, size_t len)
{
	struct api_err e;
	struct api_req r;
	struct api_job *j = NULL;
	int32_t *ids = NULL;
	int n_ids = 0;
	struct tok_chat_msg *msgs = NULL;

	if (api_req_parse(&r, kind, body, len, &e)) {
		send_error(req, &e, NULL);
		goto out;
	}
	if (r.model && strcmp(r.model, s->model_id) != 0) {
		api_err_set(&e, 404, NULL, "model", "model_not_found",
		            "The model '%.200s' does not exist. This server serves '%.200s'.",
		            r.model, s->model_id);
		send_error(req, &e, NULL);
		goto out;
	}
	if (!s->be) {
		api_err_set(&e, 503, "server_error", NULL, "model_loading",
		            "The model is still loading; retry shortly.");
		send_error(req, &e, "5");
		goto out;
	}
	const struct api_backend *be = s->be;
	int rc;
	ml_error_clear();
	if (kind == API_KIND_CHAT) {
		msgs = calloc(r.n_msgs, sizeof(*msgs));
		if (!msgs) {
			rc = ML_ERR_NOMEM;
		} else {
			for (size_t i = 0; i < r.n_msgs; i++)
				msgs[i] = (struct tok_chat_msg){r.msgs[i].role, r.msgs[i].content};
			rc = be->ops->chat_prompt(be->ctx, msgs, r.n_msgs, &ids, &n_ids, NULL);
		}
	} else {
		rc = be->ops->text_prompt(be->ctx, r.prompt, r.prompt_len, &ids, &n_ids);
	}
	if (rc == ML_ERR_RANGE) {
		api_err_set(&e, 400, NULL, kind == API_KIND_CHAT ? "messages" : "prompt",
		            "context_length_exceeded", "%s",
		            ml_last_error()[0] ? ml_last_error()
		                               : "The prompt does not fit in the context.");
		send_error(req, &e, NULL);
		goto out;
	}
	if (rc) {
		if (rc == ML_ERR_INVALID || rc == ML_ERR_FORMAT)
			api_err_set(&e, 400, NULL, kind == API_KIND_CHAT ? "messages" : "prompt",
			            NULL, "The prompt could not be built: %s",
			            ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		else
			api_err_set(&e, 500, "server_error", NULL, NULL,
			            "The prompt could not be built: %s",
			            ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		send_error(req, &e, NULL);
		goto out;
	}
	int n_ctx = be->ops->n_ctx(be->ctx);
	if (n_ids + 1 > n_ctx) {
		api_err_set(&e, 400, NULL, kind == API_KIND_CHAT ? "messages" : "prompt",
		            "context_length_exceeded",
		            "This model's maximum context length is %d tokens, but the prompt has "
		            "%d tokens (and at least 1 more is needed to generate).",
		            n_ctx, n_ids);
		send_error(req, &e, NULL);
		goto out;
	}

	j = calloc(1, sizeof(*j));
	if (!j || !(j->wake = event_new(s->base, -1, 0, on_wake, j))) {
		api_err_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
		send_error(req, &e, NULL);
		goto out;
	}
	pthread_mutex_init(&j->mu, NULL);
	j->srv = s;
	j->kind = kind;
	j->stream = r.stream;
	j->include_usage = r.include_usage;
	j->n_prompt = n_ids;
	j->created = (long long)time(NULL);
	j->t_start = ml_time_s();
	make_id(s, kind == API_KIND_CHAT ? "chatcmpl-" : "cmpl-", j->cmpl_id, sizeof(j->cmpl_id));

	struct eng_request er = {0};
	er.prompt = ids;
	er.n_prompt = n_ids;
	er.max_tokens = r.max_tokens;
	er.sampling = r.sampling;
	er.ignore_eos = r.ignore_eos;
	for (int i = 0; i < r.n_stop && i < ENG_MAX_STOP; i++)
		er.stop[i] = r.stop[i];
	ml_error_clear();
	rc = be->ops->submit(be->ctx, &er, on_eng_event, j, &j->id);
	if (rc) {
		if (rc == ML_ERR_BUSY)
			api_err_set(
			    &e, 503, "server_error", NULL, "server_busy",
			    "All slots are busy and the wait queue is full; retry shortly.");
		else if (rc == ML_ERR_RANGE)
			api_err_set(&e, 400, NULL, kind == API_KIND_CHAT ? "messages" : "prompt",
			            "context_length_exceeded", "%s",
			            ml_last_error()[0] ? ml_last_error()
			                               : "The prompt does not fit in the context.");
		else
			api_err_set(&e, 500, "server_error", NULL, NULL, "Submitting failed: %s",
			            ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		send_error(req, &e, rc == ML_ERR_BUSY ? "1" : NULL);
		job_free(j);
		j = NULL;
		goto out;
	}
	j->submitted = true;
	s->n_active++;
	j->next = s->jobs;
	if (s->jobs)
		s->jobs->prev = j;
	s->jobs = j;
	j->req = req;
	j->evcon = evhttp_request_get_connection(req);
	ML_DEBUG("api: %s: %d prompt tokens, max_tokens %d, stream %d", j->cmpl_id, n_ids,
	         r.max_tokens, r.stream);
	if (j->evcon) {
		struct api_conn *c = conn_find(s, j->evcon);
		if (c) {
			c->job = j;
			j->conn = c;
		} else {
			evhttp_connection_set_closecb(j->evcon, on_conn_close, j);
		}
		struct bufferevent *bev = evhttp_connection_get_bufferevent(j->evcon);
		evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
		if (fd >= 0 && (j->hup = event_new(s->base, fd, EV_READ | EV_PERSIST, on_hup, j)))
			event_add(j->hup, NULL);
	}
	if (j->stream) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(req);
		add_common_headers(req, "text/event-stream");
		evhttp_add_header(h, "Cache-Control", "no-cache");
		evhttp_add_header(h, "X-Accel-Buffering", "no");
		evhttp_send_reply_start(req, 200, "OK");
		if (kind == API_KIND_CHAT)
			stream_piece(j, "", 0, true);
	}
out:
	free(msgs);
	free(ids);
	api_req_clear(&r);
}

static void handle_template(struct api_server *s, struct evhttp_request *req, const char *body,
                            size_t len)
{
	struct api_err e;
	struct api_req r;
	if (api_req_parse(&r, API_KIND_CHAT, body, len, &e)) {
		send_error(req, &e, NULL);
		api_req_clear(&r);
		return;
	}
	if (!s->be) {
		api_err_set(&e, 503, "server_error", NULL, "model_loading",
		            "The model is still loading; retry shortly.");
		send_error(req, &e, "5");
		api_req_clear(&r);
		return;
	}
	struct tok_chat_msg *msgs = calloc(r.n_msgs, sizeof(*msgs));
	int32_t *ids = NULL;
	int n_ids = 0;
	char *text = NULL;
	int rc = ML_ERR_NOMEM;
	if (msgs) {
		for (size_t i = 0; i < r.n_msgs; i++)
			msgs[i] = (struct tok_chat_msg){r.msgs[i].role, r.msgs[i].content};
		ml_error_clear();
		rc = s->be->ops->chat_prompt(s->be->ctx, msgs, r.n_msgs, &ids, &n_ids, &text);
	}
	if (rc) {
		api_err_set(&e, rc == ML_ERR_NOMEM ? 500 : 400, NULL, "messages", NULL,
		            "The prompt could not be built: %s",
		            ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
		send_error(req, &e, NULL);
	} else {
		struct api_buf b = {0};
		int brc = api_buf_printf(&b, "{\"prompt\":");
		brc = brc ? brc : api_buf_json_str(&b, text, strlen(text));
		brc = brc ? brc : api_buf_printf(&b, ",\"tokens\":[");
		for (int i = 0; i < n_ids && !brc; i++)
			brc = api_buf_printf(&b, i ? ",%d" : "%d", ids[i]);
		brc = brc ? brc : api_buf_printf(&b, "]}");
		if (brc)
			api_buf_free(&b);
		send_buf(req, &b);
		api_buf_free(&b);
	}
	free(text);
	free(ids);
	free(msgs);
	api_req_clear(&r);
}

static void model_object(struct api_server *s, struct api_buf *b)
{
	api_buf_printf(b, "{\"id\":");
	api_buf_append(b, s->model_json.data, s->model_json.len);
	api_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"mesh-llm\"}",
	               s->created);
}

static enum api_method method_of(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		return API_GET;
	case EVHTTP_REQ_HEAD:
		return API_HEAD;
	case EVHTTP_REQ_POST:
		return API_POST;
	case EVHTTP_REQ_OPTIONS:
		return API_OPTIONS;
	default:
		return API_OTHER;
	}
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct api_server *s = arg;
	struct api_err e;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum api_method m = method_of(req);
	bool method_ok;
	const char *allow, *arg_id;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	if (evcon)
		set_nodelay(evcon);
	struct api_conn *conn = evcon ? conn_find(s, evcon) : NULL;
	if (conn) {
		/* evhttp dispatches a connection's requests in order: the gate let
		 * n_requests through whole, so the one after them is the gate's
		 * stand-in for the request it refused (its replacement head, or
		 * the refused chunked request cut short; evhttp 2.1 drops
		 * trailers, so a marker cannot travel there) */
		const struct api_err *ge = api_gate_error(&conn->gate);
		if (ge && conn->n_dispatched == conn->gate.n_requests) {
			conn->n_dispatched++;
			evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
			                  "close");
			send_error(req, ge, NULL);
			return;
		}
		conn->n_dispatched++;
	}
	enum api_route route = api_route_match(path, m, &method_ok, &allow, &arg_id);
	if (route == API_ROUTE_NONE && s->front && s->front->take(s->front->ctx, req, route))
		return;
	if (route == API_ROUTE_NONE) {
		api_err_set(&e, 404, NULL, NULL, "not_found", "Unknown path '%.200s'.",
		            path ? path : "");
		send_error(req, &e, NULL);
		return;
	}
	if (!method_ok) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
		api_err_set(&e, 405, NULL, NULL, "method_not_allowed",
		            "Method not allowed for '%.200s'; allowed: %s.", path, allow);
		send_error(req, &e, NULL);
		return;
	}
	if (m == API_OPTIONS) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(req);
		evhttp_add_header(h, "Allow", allow);
		evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
		evhttp_add_header(h, "Access-Control-Allow-Methods", allow);
		evhttp_add_header(h, "Access-Control-Allow-Headers", "Authorization, Content-Type");
		evhttp_send_reply(req, 204, "No Content", NULL);
		return;
	}
	if (s->api_key && api_route_needs_auth(route)) {
		const char *auth =
		    evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
		if (!api_auth_ok(auth, s->api_key)) {
			evhttp_add_header(evhttp_request_get_output_headers(req),
			                  "WWW-Authenticate", "Bearer");
			api_err_set(&e, 401, "invalid_request_error", NULL, "invalid_api_key",
			            auth ? "Incorrect API key provided."
			                 : "Missing API key: send 'Authorization: Bearer <key>'.");
			send_error(req, &e, NULL);
			return;
		}
	}

	if (s->front && s->front->take(s->front->ctx, req, route))
		return;

	struct api_buf b = {0};
	switch (route) {
	case API_ROUTE_HEALTH:
		if (s->be) {
			static const char ok[] = "{\"status\":\"ok\"}";
			send_body(req, 200, "OK", ok, sizeof(ok) - 1);
		} else {
			static const char loading[] = "{\"status\":\"loading\"}";
			evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
			                  "5");
			send_body(req, 503, reason_of(503), loading, sizeof(loading) - 1);
		}
		return;
	case API_ROUTE_MODELS:
		api_buf_printf(&b, "{\"object\":\"list\",\"data\":[");
		model_object(s, &b);
		api_buf_printf(&b, "]}");
		send_buf(req, &b);
		api_buf_free(&b);
		return;
	case API_ROUTE_MODEL: {
		char *id = evhttp_uridecode(arg_id, 0, NULL);
		bool same = id && strcmp(id, s->model_id) == 0;
		free(id);
		if (!same) {
			api_err_set(&e, 404, NULL, "model", "model_not_found",
			            "The model '%.200s' does not exist.", arg_id);
			send_error(req, &e, NULL);
			return;
		}
		model_object(s, &b);
		send_buf(req, &b);
		api_buf_free(&b);
		return;
	}
	default:
		break;
	}

	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	if (!body) {
		api_err_set(&e, 500, "server_error", NULL, NULL, "Out of memory.");
		send_error(req, &e, NULL);
		return;
	}
	if (route == API_ROUTE_TEMPLATE)
		handle_template(s, req, body, len);
	else
		handle_generate(s, req,
		                route == API_ROUTE_CHAT ? API_KIND_CHAT : API_KIND_COMPLETION, body,
		                len);
}

/* ---- server ------------------------------------------------------------------ */

struct api_params api_default_params(void)
{
	return (struct api_params){
	    .host = "127.0.0.1",
	    .port = 9337,
	    .api_key = NULL,
	    .model_id = "model",
	    .max_body = 4u << 20,
	    .max_headers = 16u << 10,
	    .timeout_s = 60,
	};
}

void api_model_id_from_path(const char *path, char *out, size_t cap)
{
	if (!cap)
		return;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t n = strlen(base);
	if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
		n -= 5;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, base, n);
	out[n] = '\0';
}

int api_server_init(struct api_server **out, struct event_base *base, const struct api_params *p)
{
	int rc = ML_ERR_NOMEM;
	struct api_server *s = calloc(1, sizeof(*s));
	if (!s)
		return ML_ERR_NOMEM;
	s->base = base;
	s->created = (long long)time(NULL);
	ml_rng_seed(&s->rng, ml_time_ns() ^ ((uint64_t)(uintptr_t)s << 16));
	s->model_id = strdup(p->model_id ? p->model_id : "model");
	if (!s->model_id || (p->api_key && !(s->api_key = strdup(p->api_key))))
		goto fail;
	if (api_buf_json_str(&s->model_json, s->model_id, strlen(s->model_id)))
		goto fail;
	if (!(s->scratch = evbuffer_new()) || !(s->http = evhttp_new(base)))
		goto fail;
	s->max_body = p->max_body ? p->max_body : 4u << 20;
	s->max_headers = p->max_headers ? p->max_headers : 16u << 10;
	/* the gate refuses first (it counts line ends too); these are backstops */
	evhttp_set_max_body_size(s->http, (ev_ssize_t)s->max_body);
	evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->max_headers);
	evhttp_set_bevcb(s->http, on_new_conn, s);
	evhttp_set_timeout(s->http, p->timeout_s > 0 ? p->timeout_s : 60);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                        EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(s->http, on_request, s);
	const char *host = p->host ? p->host : "127.0.0.1";
	s->sock = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)p->port);
	if (!s->sock) {
		rc = ml_error(ML_ERR_IO, "api: cannot listen on %s:%d: %s", host, p->port,
		              strerror(errno));
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
	s->port = p->port;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET)
			s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	ML_INFO("api: listening on http://%s:%d", host, s->port);
	*out = s;
	return 0;
fail:
	api_server_free(s);
	return rc;
}

void api_server_set_backend(struct api_server *s, const struct api_backend *b)
{
	s->be = b;
}

void api_server_set_front(struct api_server *s, const struct api_front *f)
{
	s->front = f;
}

int api_server_port(const struct api_server *s)
{
	return s->port;
}

int api_server_n_active(const struct api_server *s)
{
	return s->n_active;
}

void api_server_cancel_all(struct api_server *s)
{
	for (struct api_job *j = s->jobs; j; j = j->next)
		if (j->submitted && s->be)
			s->be->ops->cancel(s->be->ctx, j->id);
}

void api_server_free(struct api_server *s)
{
	if (!s)
		return;
	while (s->jobs) {
		struct api_job *j = s->jobs;
		if (j->req && evhttp_request_get_connection(j->req) == NULL)
			evhttp_request_free(j->req);
		job_unlink_http(j);
		job_free(j);
	}
	if (s->http)
		evhttp_free(
		    s->http); /* closes every connection: on_conn_closed frees its api_conn */
	while (s->conns) {
		/* only connections whose setup never ran are left; we still hold
		 * a reference on their (already freed by evhttp) bufferevent */
		struct api_conn *c = s->conns;
		struct bufferevent *bev = c->evcon ? NULL : c->bev;
		if (!bev)
			c->watch = NULL;
		conn_free(c);
		if (bev)
			bufferevent_decref(bev);
	}
	if (s->scratch)
		evbuffer_free(s->scratch);
	api_buf_free(&s->model_json);
	free(s->model_id);
	free(s->api_key);
	free(s);
}
