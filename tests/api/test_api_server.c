/* Tests for src/api/api_server.c over real sockets on loopback, with a fake
 * backend (a thread per request that emits "w0 w1 ..." tokens), so that
 * routing, errors, SSE framing, auth, disconnect -> cancel and slow
 * clients are checked without a model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "base/ml_err.h"
#include "tokenizer/tok_template.h"

/* ---- fake backend ----------------------------------------------------- */

static atomic_int fake_cancels;
static atomic_int fake_running;
static atomic_bool attached;

struct fake_job {
	eng_event_fn cb;
	void *user;
	uint64_t id;
	int n_tokens;
	int n_prompt;
	int delay_us;
	atomic_bool cancel;
	struct fake_job *next;
};
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fake_job *fake_jobs;
static uint64_t fake_next_id = 1;

static void *fake_run(void *arg)
{
	struct fake_job *j = arg;
	int i;
	for (i = 0; i < j->n_tokens && !atomic_load(&j->cancel); i++) {
		char piece[32];
		int n = snprintf(piece, sizeof(piece), "%sw%d", i ? " " : "", i);
		struct eng_event ev = {.id = j->id,
		                       .text = piece,
		                       .len = (size_t)n,
		                       .token = i,
		                       .n_prompt = j->n_prompt,
		                       .n_completion = i + 1};
		j->cb(&ev, j->user);
		usleep((useconds_t)j->delay_us);
	}
	struct eng_event fin = {.id = j->id,
	                        .text = "",
	                        .len = 0,
	                        .token = -1,
	                        .n_prompt = j->n_prompt,
	                        .n_completion = i};
	fin.finish = atomic_load(&j->cancel) ? ENG_FINISH_CANCELLED : ENG_FINISH_LENGTH;
	pthread_mutex_lock(&fake_mu);
	for (struct fake_job **p = &fake_jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	pthread_mutex_unlock(&fake_mu);
	atomic_fetch_sub(&fake_running, 1);
	j->cb(&fin, j->user);
	free(j);
	return NULL;
}

static int fake_chat_prompt(void *ctx, const struct tok_chat_msg *msgs, size_t n, int32_t **ids,
                            int *n_ids, char **text)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(msgs[i].role) + strlen(msgs[i].content) + 3;
	char *t = calloc(len + 1, 1);
	for (size_t i = 0; i < n; i++) {
		strcat(t, msgs[i].role);
		strcat(t, ": ");
		strcat(t, msgs[i].content);
		strcat(t, "\n");
	}
	if (strstr(t, "bad template"))
		return free(t), ml_error(ML_ERR_INVALID, "template says no");
	len = strlen(t);
	*ids = malloc((len + 1) * sizeof(int32_t));
	for (size_t i = 0; i < len; i++)
		(*ids)[i] = (unsigned char)t[i];
	*n_ids = (int)len;
	if (text)
		*text = t;
	else
		free(t);
	return 0;
}

static int fake_text_prompt(void *ctx, const char *text, size_t len, int32_t **ids, int *n_ids)
{
	*ids = malloc((len + 1) * sizeof(int32_t));
	for (size_t i = 0; i < len; i++)
		(*ids)[i] = (unsigned char)text[i];
	*n_ids = (int)len;
	return 0;
}

static int fake_submit(void *ctx, const struct eng_request *r, eng_event_fn cb, void *user,
                       uint64_t *id)
{
	bool slow = false, busy = false;
	/* the prompt ids are the bytes of the rendered text */
	char text[256] = {0};
	for (int i = 0; i < r->n_prompt && i < 255; i++)
		text[i] = (char)r->prompt[i];
	slow = strstr(text, "slow") != NULL;
	busy = strstr(text, "busy") != NULL;
	if (busy)
		return ML_ERR_BUSY;
	struct fake_job *j = calloc(1, sizeof(*j));
	j->cb = cb;
	j->user = user;
	j->n_prompt = r->n_prompt;
	j->n_tokens = r->max_tokens > 0 ? r->max_tokens : 8;
	j->delay_us = slow ? 20000 : 200;
	pthread_mutex_lock(&fake_mu);
	j->id = fake_next_id++;
	j->next = fake_jobs;
	fake_jobs = j;
	pthread_mutex_unlock(&fake_mu);
	*id = j->id;
	atomic_fetch_add(&fake_running, 1);
	pthread_t t;
	pthread_create(&t, NULL, fake_run, j);
	pthread_detach(t);
	return 0;
}

static void fake_cancel(void *ctx, uint64_t id)
{
	pthread_mutex_lock(&fake_mu);
	for (struct fake_job *j = fake_jobs; j; j = j->next)
		if (j->id == id) {
			atomic_store(&j->cancel, true);
			atomic_fetch_add(&fake_cancels, 1);
		}
	pthread_mutex_unlock(&fake_mu);
}

static int fake_n_ctx(void *ctx)
{
	return 200;
}

static const struct api_backend_ops fake_ops = {fake_chat_prompt, fake_text_prompt, fake_submit,
                                                fake_cancel, fake_n_ctx};
static const struct api_backend fake_backend = {&fake_ops, NULL};

/* ---- server on a loop thread ------------------------------------------- */

struct srv {
	struct event_base *base;
	struct api_server *api;
	pthread_t thread;
	int port;
};

static void *loop_main(void *arg)
{
	struct srv *s = arg;
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void attach_cb(evutil_socket_t fd, short what, void *arg)
{
	struct srv *s = arg;
	api_server_set_backend(s->api, &fake_backend);
	atomic_store(&attached, true);
}

static void srv_start(struct srv *s, const char *key, bool attach)
{
	struct api_params p = api_default_params();
	p.port = 0;
	p.api_key = key;
	p.model_id = "fake-model";
	p.max_body = 64 * 1024;
	p.timeout_s = 5;
	s->base = event_base_new();
	assert_non_null(s->base);
	assert_int_equal(api_server_init(&s->api, s->base, &p), 0);
	s->port = api_server_port(s->api);
	assert_true(s->port > 0);
	if (attach)
		api_server_set_backend(s->api, &fake_backend);
	pthread_create(&s->thread, NULL, loop_main, s);
}

static void srv_attach(struct srv *s)
{
	struct timeval tv = {0, 0};
	event_base_once(s->base, -1, EV_TIMEOUT, attach_cb, s, &tv);
	/* wait until the loop ran it (a loaded machine can take a while) */
	for (int i = 0; i < 500 && !atomic_load(&attached); i++)
		usleep(10000);
	assert_true(atomic_load(&attached));
}

static void srv_stop(struct srv *s)
{
	for (int i = 0; i < 1000 && atomic_load(&fake_running) > 0; i++)
		usleep(10000);
	event_base_loopbreak(s->base);
	pthread_join(s->thread, NULL);
	api_server_free(s->api);
	event_base_free(s->base);
}

/* ---- a tiny HTTP client ---------------------------------------------------- */

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* the server may close early (413) */
		p += w;
		n -= (size_t)w;
	}
}

/* Sends a request with Connection: close and reads the whole response.
 * Returns the status; *resp is malloc'd (headers + body). */
static int http(int port, const char *method, const char *path, const char *extra_headers,
                const char *body, char **resp)
{
	int fd = connect_to(port);
	size_t blen = body ? strlen(body) : 0;
	size_t hcap = 1024 + (extra_headers ? strlen(extra_headers) : 0);
	char *head = malloc(hcap);
	snprintf(head, hcap,
	         "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
	         method, path, extra_headers ? extra_headers : "", blen);
	send_all(fd, head, strlen(head));
	free(head);
	if (blen)
		send_all(fd, body, blen);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (len + 1 >= cap)
			buf = realloc(buf, cap *= 2);
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	close(fd);
	int status = 0;
	sscanf(buf, "HTTP/1.%*d %d", &status);
	*resp = buf;
	return status;
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

#define CHAT(extra)                                                                                \
	"{\"model\":\"fake-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" extra "}"

/* ---- tests ------------------------------------------------------------------ */

static void test_loading_then_ready(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, false);
	assert_int_equal(http(s.port, "GET", "/health", NULL, NULL, &r), 503);
	assert_non_null(strstr(r, "loading"));
	free(r);
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL, CHAT(""), &r), 503);
	assert_non_null(strstr(r, "Retry-After"));
	assert_non_null(strstr(r, "\"error\""));
	free(r);
	srv_attach(&s);
	assert_int_equal(http(s.port, "GET", "/health", NULL, NULL, &r), 200);
	assert_non_null(strstr(r, "{\"status\":\"ok\"}"));
	free(r);
	srv_stop(&s);
}

static void test_models(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, true);
	assert_int_equal(http(s.port, "GET", "/v1/models", NULL, NULL, &r), 200);
	assert_non_null(strstr(r, "\"object\":\"list\""));
	assert_non_null(strstr(r, "\"id\":\"fake-model\""));
	assert_non_null(strstr(r, "\"owned_by\":\"mesh-llm\""));
	free(r);
	assert_int_equal(http(s.port, "GET", "/models", NULL, NULL, &r), 200);
	free(r);
	assert_int_equal(http(s.port, "GET", "/v1/models/fake-model", NULL, NULL, &r), 200);
	free(r);
	assert_int_equal(http(s.port, "GET", "/v1/models/other", NULL, NULL, &r), 404);
	free(r);
	srv_stop(&s);
}

static void test_chat_full(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, true);
	assert_int_equal(
	    http(s.port, "POST", "/v1/chat/completions", NULL, CHAT(",\"max_tokens\":3"), &r), 200);
	assert_non_null(strstr(r, "\"object\":\"chat.completion\""));
	assert_non_null(strstr(r, "\"content\":\"w0 w1 w2\""));
	assert_non_null(strstr(r, "\"finish_reason\":\"length\""));
	/* prompt "user: hi\n" = 9 bytes = 9 fake tokens */
	assert_non_null(
	    strstr(r, "\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12"));
	assert_non_null(strstr(r, "\"id\":\"chatcmpl-"));
	free(r);
	assert_int_equal(http(s.port, "POST", "/v1/completions", NULL,
	                      "{\"prompt\":\"abc\",\"max_tokens\":2}", &r),
	                 200);
	assert_non_null(strstr(r, "\"object\":\"text_completion\""));
	assert_non_null(strstr(r, "\"text\":\"w0 w1\""));
	free(r);
	assert_int_equal(http(s.port, "POST", "/apply-template", NULL, CHAT(""), &r), 200);
	assert_non_null(strstr(r, "\"prompt\":\"user: hi\\n\""));
	free(r);
	srv_stop(&s);
}

static void test_chat_stream(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, true);
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL,
	                      CHAT(",\"max_tokens\":5,\"stream\":true,"
	                           "\"stream_options\":{\"include_usage\":true}"),
	                      &r),
	                 200);
	assert_non_null(strstr(r, "text/event-stream"));
	assert_non_null(strstr(r, "Transfer-Encoding: chunked"));
	assert_int_equal(count(r, "\"role\":\"assistant\""), 1);
	assert_int_equal(count(r, "\"content\":\"w"), 1);
	assert_int_equal(count(r, "\"content\":\" w"), 4);
	assert_int_equal(count(r, "\"finish_reason\":\"length\""), 1);
	assert_non_null(
	    strstr(r, "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5"));
	assert_int_equal(count(r, "data: [DONE]\n\n"), 1);
	/* [DONE] comes last */
	assert_null(strstr(strstr(r, "data: [DONE]"), "chat.completion.chunk"));
	free(r);
	assert_int_equal(http(s.port, "POST", "/v1/completions", NULL,
	                      "{\"prompt\":\"abc\",\"max_tokens\":2,\"stream\":true}", &r),
	                 200);
	assert_int_equal(count(r, "\"object\":\"text_completion\""), 3);
	assert_null(strstr(r, "usage"));
	free(r);
	srv_stop(&s);
}

struct err_case {
	const char *method, *path, *headers, *body;
	int status;
	const char *needle;
};

static void test_errors(void **state)
{
	static const struct err_case cases[] = {
	    {"POST", "/v1/chat/completions", NULL, "{\"messages\": [", 400, "line 1"},
	    {"POST", "/v1/chat/completions", NULL, "", 400, "invalid_json"},
	    {"POST", "/v1/chat/completions", NULL, "[1,2]", 400, "must be a JSON object"},
	    {"POST", "/v1/chat/completions", NULL, "{\"model\":\"fake-model\"}", 400,
	     "\"param\":\"messages\""},
	    {"POST", "/v1/chat/completions", NULL, "{\"messages\":\"hi\"}", 400,
	     "\"param\":\"messages\""},
	    {"POST", "/v1/chat/completions", NULL, "{\"messages\":[]}", 400, "empty"},
	    {"POST", "/v1/chat/completions", NULL, "{\"messages\":[{\"role\":\"user\"}]}", 400,
	     "messages[0].content"},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role"},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"temperature\":\"hot\""), 400,
	     "\"param\":\"temperature\""},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"temperature\":7"), 400,
	     "between 0 and 2"},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"max_tokens\":1.5"), 400,
	     "\"param\":\"max_tokens\""},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"max_tokens\":0"), 400,
	     "\"param\":\"max_tokens\""},
	    {"POST", "/v1/chat/completions", NULL,
	     CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]"), 400,
	     "\"param\":\"stop\""},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"stop\":5"), 400, "\"param\":\"stop\""},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"stream\":\"yes\""), 400,
	     "\"param\":\"stream\""},
	    {"POST", "/v1/chat/completions", NULL, CHAT(",\"n\":2"), 400, "\"param\":\"n\""},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404,
	     "model_not_found"},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
	     "unsupported_content"},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"messages\":[{\"role\":\"user\",\"content\":\"bad template\"}]}", 400,
	     "template says no"},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"messages\":[{\"role\":\"user\",\"content\":\"busy\"}]}", 503, "Retry-After: 1"},
	    {"POST", "/v1/completions", NULL, "{\"prompt\":7}", 400, "\"param\":\"prompt\""},
	    {"POST", "/v1/completions", NULL, "{}", 400, "\"param\":\"prompt\""},
	    {"POST", "/v1/chat/completions", NULL,
	     "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "invalid_json"},
	    {"POST", "/v1/chat/completions", NULL, "{\"a\":1,\"a\":2,\"messages\":[]}", 400,
	     "duplicate"},
	    {"GET", "/v1/chat/completions", NULL, NULL, 405, "Allow: POST"},
	    {"DELETE", "/v1/models", NULL, NULL, 405, "method_not_allowed"},
	    {"GET", "/nope", NULL, NULL, 404, "\"code\":\"not_found\""},
	    {"GET", "/v1/nope", NULL, NULL, 404, "\"error\""},
	    {"OPTIONS", "/v1/chat/completions", NULL, NULL, 204, "Access-Control-Allow-Methods"},
	};
	struct srv s;
	char *r;
	srv_start(&s, NULL, true);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct err_case *c = &cases[i];
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int st = http(s.port, c->method, c->path, c->headers, c->body, &r);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double dt =
		    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
		if (dt > 1.0)
			fail_msg("case %zu (%s %s) took %.1f s", i, c->method, c->path, dt);
		if (st != c->status || !strstr(r, c->needle))
			fail_msg("case %zu (%s %s %s): status %d, want %d with '%s'; got:\n%s", i,
			         c->method, c->path, c->body ? c->body : "", st, c->status,
			         c->needle, r);
		if (c->status >= 400 && c->status != 405 && !strstr(r, "\"type\":"))
			fail_msg("case %zu: not an OpenAI error: %s", i, r);
		free(r);
	}
	/* prompt longer than the context (200): both numbers in the message */
	char big[1024];
	memset(big, 'a', 300);
	big[300] = '\0';
	char body[1200];
	snprintf(body, sizeof(body), "{\"prompt\":\"%s\"}", big);
	assert_int_equal(http(s.port, "POST", "/v1/completions", NULL, body, &r), 400);
	assert_non_null(strstr(r, "context_length_exceeded"));
	assert_non_null(strstr(r, "200"));
	assert_non_null(strstr(r, "300"));
	free(r);
	/* body over the cap (64 KiB here) */
	size_t n = 100 * 1024;
	char *huge = malloc(n + 1);
	memset(huge, ' ', n);
	huge[n] = '\0';
	huge[0] = '{';
	huge[n - 1] = '}';
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL, huge, &r), 413);
	assert_non_null(strstr(r, "\"code\":\"request_too_large\""));
	assert_non_null(strstr(r, "Content-Type: application/json"));
	free(r);
	free(huge);
	/* oversized headers: refused, not served */
	char *hdr = malloc(40000);
	snprintf(hdr, 40000, "X-Big: ");
	memset(hdr + 7, 'x', 30000);
	strcpy(hdr + 30007, "\r\n");
	int st = http(s.port, "GET", "/v1/models", hdr, NULL, &r);
	assert_int_equal(st, 431);
	assert_non_null(strstr(r, "\"code\":\"request_header_fields_too_large\""));
	free(r);
	free(hdr);
	/* and the server still serves */
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL, CHAT(""), &r), 200);
	free(r);
	srv_stop(&s);
}

/* Sends |len| raw bytes on a new connection and reads until the server
 * closes it (or 10 s pass). Returns the response, malloc'd. */
static char *raw(int port, const char *data, size_t len)
{
	int fd = connect_to(port);
	send_all(fd, data, len);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	ssize_t r;
	while ((r = recv(fd, buf + n, cap - n - 1, 0)) > 0) {
		n += (size_t)r;
		if (n + 1 >= cap)
			buf = realloc(buf, cap *= 2);
	}
	buf[n] = '\0';
	close(fd);
	return buf;
}

/* An OpenAI error with |status| and |code|, and the connection closed. */
static void assert_refused(const char *resp, int status, const char *code)
{
	int st = 0;
	sscanf(resp, "HTTP/1.%*d %d", &st);
	char want[96];
	snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
	if (st != status || !strstr(resp, want) || !strstr(resp, "\"type\":\"") ||
	    !strstr(resp, "Content-Type: application/json") || !strstr(resp, "Connection: close"))
		fail_msg("want %d %s as JSON with Connection: close; got:\n%.600s", status, code,
		         resp);
}

/* Requests evhttp 2.1 would refuse with its own HTML page get OpenAI JSON
 * errors (the request gate), the caps hold, and the server goes on. */
static void test_refusals(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, true); /* max_body 64 KiB, max_headers 16 KiB */
	/* a huge Content-Length announced, a few bytes sent: refused at once */
	const char *ann = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
	                  "Content-Length: 104857600\r\n\r\n{\"messages\":";
	r = raw(s.port, ann, strlen(ann));
	assert_refused(r, 413, "request_too_large");
	assert_non_null(strstr(r, "104857600"));
	free(r);
	/* a chunked body over the cap: refused when it crosses it */
	size_t cap = 200 * 1024, len = 0;
	char *in = malloc(cap);
	len += (size_t)snprintf(in, cap,
	                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
	                        "Transfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 20; i++) {
		len += (size_t)snprintf(in + len, cap - len, "1000\r\n");
		memset(in + len, ' ', 4096);
		len += 4096;
		len += (size_t)snprintf(in + len, cap - len, "\r\n");
	}
	len += (size_t)snprintf(in + len, cap - len, "0\r\n\r\n");
	r = raw(s.port, in, len);
	assert_refused(r, 413, "request_too_large");
	free(r);
	/* a chunked body under the cap is served */
	len = (size_t)snprintf(in, cap,
	                       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
	                       "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
	                       "%zx\r\n%s\r\n0\r\n\r\n",
	                       strlen(CHAT("")), CHAT(""));
	r = raw(s.port, in, len);
	if (!strstr(r, "200 OK") || !strstr(r, "chat.completion"))
		fail_msg("chunked request: %.600s", r);
	free(r);
	/* a valid request, then a refused one, on one connection: the first is
	 * answered normally, the second with the error */
	len = (size_t)snprintf(in, cap,
	                       "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
	                       "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
	                       "Content-Length: 999999999\r\n\r\n");
	r = raw(s.port, in, len);
	assert_non_null(strstr(r, "{\"status\":\"ok\"}"));
	assert_non_null(strstr(r, "HTTP/1.1 413"));
	assert_refused(strstr(r, "HTTP/1.1 413"), 413, "request_too_large");
	free(r);
	/* a head over the cap that never ends */
	memcpy(in, "GET /v1/models HTTP/1.1\r\nX-Big: ", 33);
	memset(in + 33, 'x', 40000);
	r = raw(s.port, in, 33 + 40000);
	assert_refused(r, 431, "request_header_fields_too_large");
	free(r);
	free(in);
	/* malformed requests */
	static const struct {
		const char *req;
		int status;
		const char *code;
	} bad[] = {
	    {"GET /v1/models HTTP/1.1 extra\r\n\r\n", 400, "malformed_request"},
	    {"BREW /pot HTTP/1.1\r\n\r\n", 501, "method_not_supported"},
	    {"GET /v1/models HTTP/3.0\r\n\r\n", 505, "http_version_not_supported"},
	    {"GET /v1/models HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed_request"},
	    {"POST /v1/completions HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400,
	     "malformed_request"},
	    {"POST /v1/completions HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", 411,
	     "length_required"},
	    {"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
	     "unsupported_transfer_encoding"},
	    {"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "5;x=y\r\nhello\r\n0\r\n\r\n",
	     400, "malformed_request"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = raw(s.port, bad[i].req, strlen(bad[i].req));
		assert_refused(r, bad[i].status, bad[i].code);
		free(r);
	}
	/* and the server still serves */
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL, CHAT(""), &r), 200);
	free(r);
	srv_stop(&s);
}

static void test_auth(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, "sekret", true);
	assert_int_equal(http(s.port, "GET", "/v1/models", NULL, NULL, &r), 401);
	assert_non_null(strstr(r, "invalid_api_key"));
	free(r);
	assert_int_equal(
	    http(s.port, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL, &r), 401);
	free(r);
	assert_int_equal(
	    http(s.port, "GET", "/v1/models", "Authorization: Bearer sekret\r\n", NULL, &r), 200);
	free(r);
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions",
	                      "Authorization: Bearer sekret\r\n", CHAT(""), &r),
	                 200);
	free(r);
	assert_int_equal(http(s.port, "GET", "/health", NULL, NULL, &r), 200);
	free(r);
	srv_stop(&s);
}

static void test_disconnect_cancels(void **state)
{
	struct srv s;
	srv_start(&s, NULL, true);
	for (int streaming = 0; streaming < 2; streaming++) {
		int before = atomic_load(&fake_cancels);
		int fd = connect_to(s.port);
		const char *body = streaming
		                       ? "{\"messages\":[{\"role\":\"user\",\"content\":\"slow\"}],"
		                         "\"max_tokens\":1000,\"stream\":true}"
		                       : "{\"messages\":[{\"role\":\"user\",\"content\":\"slow\"}],"
		                         "\"max_tokens\":1000}";
		char req[512];
		snprintf(req, sizeof(req),
		         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
		         "%zu\r\n\r\n%s",
		         strlen(body), body);
		send_all(fd, req, strlen(req));
		char buf[4096];
		if (streaming)
			assert_true(recv(fd, buf, sizeof(buf), 0) > 0);
		for (int k = 0; k < 500 && api_server_n_active(s.api) != 1; k++)
			usleep(10000);
		assert_int_equal(api_server_n_active(s.api), 1);
		close(fd);
		int i;
		for (i = 0; i < 500; i++) {
			if (atomic_load(&fake_cancels) > before && api_server_n_active(s.api) == 0)
				break;
			usleep(10000);
		}
		assert_true(i < 500);
	}
	srv_stop(&s);
}

static void test_slow_client(void **state)
{
	struct srv s;
	char *r;
	srv_start(&s, NULL, true);
	int fd = connect_to(s.port);
	const char *half = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le";
	send_all(fd, half, strlen(half));
	/* one byte at a time for another connection, interleaved */
	int fd2 = connect_to(s.port);
	const char *full = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	for (const char *p = full; *p; p++)
		send_all(fd2, p, 1);
	char buf[1024];
	ssize_t n = recv(fd2, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "200 OK"));
	close(fd2);
	assert_int_equal(http(s.port, "POST", "/v1/chat/completions", NULL, CHAT(""), &r), 200);
	free(r);
	close(fd);
	srv_stop(&s);
}

static void test_concurrent_streams(void **state)
{
	struct srv s;
	srv_start(&s, NULL, true);
	enum { N = 8 };
	int fds[N];
	const char *body =
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":20,"
	    "\"stream\":true}";
	char req[512];
	snprintf(req, sizeof(req),
	         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	         "Content-Length: %zu\r\n\r\n%s",
	         strlen(body), body);
	for (int i = 0; i < N; i++) {
		fds[i] = connect_to(s.port);
		send_all(fds[i], req, strlen(req));
	}
	for (int i = 0; i < N; i++) {
		char buf[1 << 15];
		size_t len = 0;
		ssize_t r;
		while ((r = recv(fds[i], buf + len, sizeof(buf) - 1 - len, 0)) > 0)
			len += (size_t)r;
		buf[len] = '\0';
		close(fds[i]);
		assert_int_equal(count(buf, "data: [DONE]"), 1);
		assert_int_equal(count(buf, "\"content\":\" w"), 19);
	}
	srv_stop(&s);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_loading_then_ready),
	    cmocka_unit_test(test_models),
	    cmocka_unit_test(test_chat_full),
	    cmocka_unit_test(test_chat_stream),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_disconnect_cancels),
	    cmocka_unit_test(test_slow_client),
	    cmocka_unit_test(test_concurrent_streams),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
