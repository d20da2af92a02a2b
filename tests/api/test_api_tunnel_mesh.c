/* In-process tests of the HTTP tunnel's serving side (api_tunnel.c) over
 * real QUIC on loopback: node A runs the mesh, the API server (no model)
 * and the tunnel; node B opens NET_STREAM_HTTP streams to A by hand. A
 * well-formed request is answered through A's own API; malformed heads, a
 * body before the head, a body over the cap and an unknown message each
 * reset only that stream, and A keeps serving afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_tunnel.h"
#include "base/ml_err.h"
#include "base/ml_time.h"
#include "mesh/mesh.h"
#include "net/net_quic.h"

static struct event_base *base;

static void on_wake(evutil_socket_t fd, short w, void *a)
{
	(void)fd, (void)w, (void)a;
}

static bool run_until(bool (*pred)(void *), void *arg, int ms)
{
	struct event *t = event_new(base, -1, EV_PERSIST, on_wake, NULL);
	struct timeval tv = {0, 2000};
	event_add(t, &tv);
	uint64_t end = ml_time_ns() + (uint64_t)ms * 1000000ull;
	bool ok = false;
	while (!(ok = pred(arg)) && ml_time_ns() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return ok;
}

static struct api_tunnel *tun;
static struct mesh *ma, *mb;
static struct net_ident ida, idb;
static struct api_server *api;

static void on_stream_a(struct mesh *m, struct mesh_stream *s, uint8_t type,
                        const uint8_t peer[NET_ID_LEN], void *u)
{
	(void)m, (void)peer, (void)u;
	if (type == NET_STREAM_HTTP && tun)
		api_tunnel_accept(tun, s);
}

/* what B's stream saw */
struct cli {
	int status;
	char body[4096];
	size_t len;
	bool end, closed;
	int close_err;
};

static void cli_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	struct cli *c = u;
	(void)s;
	if (type == NET_MSG_HTTP_RESPONSE) {
		struct api_tunnel_head h;
		assert_int_equal(api_tunnel_decode_response(p, len, &h), 0);
		c->status = h.status;
	} else if (type == NET_MSG_HTTP_BODY && c->len + len < sizeof(c->body)) {
		memcpy(c->body + c->len, p, len);
		c->len += len;
		c->body[c->len] = '\0';
	} else if (type == NET_MSG_HTTP_END) {
		c->end = true;
	}
}
static void cli_close(struct mesh_stream *s, int err, void *u)
{
	struct cli *c = u;
	(void)s;
	c->closed = true;
	c->close_err = err;
}
static const struct mesh_stream_callbacks cli_cb = {cli_msg, NULL, cli_close, NULL};

static bool connected(void *u)
{
	(void)u;
	return mesh_peer_connected(ma, idb.pk) && mesh_peer_connected(mb, ida.pk);
}
static bool cli_closed(void *u)
{
	return ((struct cli *)u)->closed;
}

static int setup(void **state)
{
	(void)state;
	evthread_use_pthreads();
	base = event_base_new();
	uint8_t s[32];
	memset(s, 7, sizeof(s));
	assert_int_equal(net_ident_from_seed(&ida, s), 0);
	memset(s, 8, sizeof(s));
	assert_int_equal(net_ident_from_seed(&idb, s), 0);
	struct api_params ap = api_default_params();
	ap.port = 0;
	assert_int_equal(api_server_init(&api, base, &ap), 0);
	struct mesh_config cfg;
	mesh_default_config(&cfg);
	cfg.ident = &ida;
	cfg.bind_host = "127.0.0.1";
	cfg.cb.on_stream = on_stream_a;
	assert_int_equal(mesh_new(&ma, base, &cfg), 0);
	struct api_tunnel_params tp = {base, ma, api_server_port(api), NULL, NULL};
	assert_int_equal(api_tunnel_new(&tun, &tp), 0);
	api_server_set_front(api, api_tunnel_front(tun));
	char tok[MESH_TOKEN_MAX_LEN];
	assert_true(mesh_invite_token(ma, tok, sizeof(tok)) > 0);
	const char *t = tok;
	mesh_default_config(&cfg);
	cfg.ident = &idb;
	cfg.bind_host = "127.0.0.1";
	cfg.join = &t;
	cfg.n_join = 1;
	assert_int_equal(mesh_new(&mb, base, &cfg), 0);
	assert_true(run_until(connected, NULL, 5000));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	api_server_set_front(api, NULL);
	api_tunnel_free(tun);
	mesh_free(mb);
	mesh_free(ma);
	api_server_free(api);
	event_base_free(base);
	return 0;
}

static struct mesh_stream *open_b(struct cli *c)
{
	struct mesh_stream *s = NULL;
	memset(c, 0, sizeof(*c));
	assert_int_equal(mesh_stream_open(mb, ida.pk, NET_STREAM_HTTP, &cli_cb, c, &s), 0);
	return s;
}

static void send_head(struct mesh_stream *s, const char *method, const char *path)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(api_tunnel_encode_request(&b, method, path, NULL, 0), 0);
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_REQUEST, b.data, b.len, false), 0);
	net_buf_free(&b);
}

/* A's API answers through the tunnel; A still serves afterwards. */
static void check_serves(void)
{
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	send_head(s, "GET", "/health");
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_END, NULL, 0, true), 0);
	assert_true(run_until(cli_closed, &c, 5000));
	assert_int_equal(c.close_err, 0);
	assert_int_equal(c.status, 200);
	assert_true(c.end);
	assert_non_null(strstr(c.body, "\"ok\""));
	assert_true(mesh_peer_connected(ma, idb.pk));
}

static void test_tunnel_request_answered(void **state)
{
	(void)state;
	check_serves();
	/* a POST with a body, for a model nobody serves: 503 JSON, not a hang */
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	static const char body[] = "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\","
	                           "\"content\":\"hi\"}]}";
	send_head(s, "POST", "/v1/chat/completions");
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_BODY, body, sizeof(body) - 1, false), 0);
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_END, NULL, 0, true), 0);
	assert_true(run_until(cli_closed, &c, 5000));
	assert_int_equal(c.status, 503);
	assert_non_null(strstr(c.body, "\"error\""));
}

static void expect_reset(struct cli *c)
{
	assert_true(run_until(cli_closed, c, 5000));
	assert_int_not_equal(c->close_err, 0);
	assert_int_equal(c->status, 0);
	check_serves();
}

static void test_tunnel_malformed_head(void **state)
{
	(void)state;
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	static const uint8_t junk[] = {1, 0, 4, 'P', 'O', 'S'}; /* truncated */
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_REQUEST, junk, sizeof(junk), false), 0);
	expect_reset(&c);
}

static void test_tunnel_body_before_head(void **state)
{
	(void)state;
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_BODY, "x", 1, false), 0);
	expect_reset(&c);
}

static void test_tunnel_second_head_and_bad_method(void **state)
{
	(void)state;
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	send_head(s, "GET", "/health");
	send_head(s, "GET", "/health");
	expect_reset(&c);
	s = open_b(&c);
	send_head(s, "DELETE", "/v1/models");
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_END, NULL, 0, true), 0);
	expect_reset(&c);
	/* the stream ends without HTTP_END */
	s = open_b(&c);
	send_head(s, "GET", "/health");
	assert_int_equal(mesh_stream_finish(s), 0);
	expect_reset(&c);
}

static void test_tunnel_body_over_cap(void **state)
{
	(void)state;
	struct cli c;
	struct mesh_stream *s = open_b(&c);
	send_head(s, "POST", "/v1/chat/completions");
	uint8_t *chunk = calloc(1, NET_FRAME_MAX_HTTP);
	int rc = 0;
	for (unsigned i = 0; i <= API_TUNNEL_MAX_BODY / NET_FRAME_MAX_HTTP && rc == 0; i++)
		rc = mesh_stream_send(s, NET_MSG_HTTP_BODY, chunk, NET_FRAME_MAX_HTTP, false);
	free(chunk);
	expect_reset(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tunnel_request_answered),
	    cmocka_unit_test(test_tunnel_malformed_head),
	    cmocka_unit_test(test_tunnel_body_before_head),
	    cmocka_unit_test(test_tunnel_second_head_and_bad_method),
	    cmocka_unit_test(test_tunnel_body_over_cap),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
