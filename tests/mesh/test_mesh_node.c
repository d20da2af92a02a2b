/* In-process tests of src/mesh/mesh.c over real QUIC on loopback: two
 * nodes join and tunnel a stream; a raw QUIC "attacker" endpoint checks
 * that nothing is accepted before the HELLO succeeds (streams reset,
 * gossip closes the connection), that a proof replayed on a new connection
 * is refused and learns nothing, that malformed and oversized messages
 * from an authenticated peer close only that connection, and that a clean
 * leave is seen at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "mesh/mesh.h"
#include "mesh/mesh_auth.h"
#include "net/net_quic.h"

static struct event_base *base;

static void on_wake(evutil_socket_t fd, short w, void *a)
{
	(void)fd;
	(void)w;
	(void)a;
}

/* Runs the loop until |pred| holds or |ms| pass; returns the predicate. */
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

static bool never(void *a)
{
	(void)a;
	return false;
}

struct node {
	struct mesh *m;
	struct net_ident id;
	int events[8];
	/* tunnel server side */
	int srv_msgs, srv_closed;
	/* tunnel client side */
	int cli_msgs, cli_closed, cli_close_err;
	char cli_buf[256];
	size_t cli_len;
	bool cli_end;
};

static void on_change(struct mesh *m, const struct mesh_member *mm, enum mesh_event ev, void *u)
{
	(void)m;
	(void)mm;
	struct node *n = u;
	n->events[ev]++;
}

static void srv_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	struct node *n = u;
	n->srv_msgs++;
	/* echo as a body chunk */
	if (type == NET_MSG_HTTP_REQUEST || type == NET_MSG_HTTP_BODY)
		assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_BODY, p, len, false), 0);
}
static void srv_fin(struct mesh_stream *s, void *u)
{
	(void)u;
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_END, NULL, 0, true), 0);
}
static void srv_close(struct mesh_stream *s, int err, void *u)
{
	(void)s;
	(void)err;
	((struct node *)u)->srv_closed++;
}
static const struct mesh_stream_callbacks srv_cb = {srv_msg, srv_fin, srv_close, NULL};

static void on_stream(struct mesh *m, struct mesh_stream *s, uint8_t type,
                      const uint8_t peer[NET_ID_LEN], void *u)
{
	(void)m;
	(void)peer;
	if (type == NET_STREAM_HTTP)
		mesh_stream_set_callbacks(s, &srv_cb, u);
}

static void cli_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	(void)s;
	struct node *n = u;
	n->cli_msgs++;
	if (type == NET_MSG_HTTP_BODY && n->cli_len + len < sizeof(n->cli_buf)) {
		memcpy(n->cli_buf + n->cli_len, p, len);
		n->cli_len += len;
	}
	if (type == NET_MSG_HTTP_END)
		n->cli_end = true;
}
static void cli_close(struct mesh_stream *s, int err, void *u)
{
	(void)s;
	struct node *n = u;
	n->cli_closed++;
	n->cli_close_err = err;
}
static const struct mesh_stream_callbacks cli_cb = {cli_msg, NULL, cli_close, NULL};

static void node_start(struct node *n, uint8_t seed, const char *token)
{
	memset(n, 0, sizeof(*n));
	uint8_t s[32];
	memset(s, seed, sizeof(s));
	assert_int_equal(net_ident_from_seed(&n->id, s), 0);
	struct mesh_config cfg;
	mesh_default_config(&cfg);
	cfg.ident = &n->id;
	cfg.bind_host = "127.0.0.1";
	cfg.cb.on_change = on_change;
	cfg.cb.on_stream = on_stream;
	cfg.user = n;
	cfg.hello_timeout_ms = 1500;
	if (token) {
		cfg.join = &token;
		cfg.n_join = 1;
	}
	assert_int_equal(mesh_new(&n->m, base, &cfg), 0);
}

static struct node A, B;

static bool ab_connected(void *u)
{
	(void)u;
	return mesh_peer_connected(A.m, B.id.pk) && mesh_peer_connected(B.m, A.id.pk);
}

static void join_ab(void)
{
	node_start(&A, 1, NULL);
	char tok[MESH_TOKEN_MAX_LEN];
	assert_true(mesh_invite_token(A.m, tok, sizeof(tok)) > 0);
	node_start(&B, 2, tok);
	assert_true(run_until(ab_connected, NULL, 5000));
}

static void stop_ab(void)
{
	mesh_free(B.m);
	mesh_free(A.m);
	B.m = A.m = NULL;
}

static bool b_sees_m1(void *u)
{
	(void)u;
	const struct mesh_member *m = mesh_member_get(B.m, A.id.pk);
	return m && m->ann && strcmp(m->ann->serving, "m1") == 0 && m->ann->role == MESH_ROLE_HOST;
}

static bool b_sees_worker(void *u)
{
	(void)u;
	const struct mesh_member *m = mesh_member_get(B.m, A.id.pk);
	return m && m->ann && m->ann->role == MESH_ROLE_WORKER;
}

static bool cli_done(void *u)
{
	struct node *n = u;
	return n->cli_closed > 0;
}

static void test_mesh_node_join_and_tunnel(void **state)
{
	(void)state;
	join_ab();
	assert_true(A.events[MESH_EV_JOINED] >= 1);
	assert_true(B.events[MESH_EV_JOINED] >= 1);
	assert_true(mesh_joined(B.m));
	/* status JSON */
	json_t *j = mesh_status_json(A.m);
	assert_non_null(j);
	json_t *nodes = json_object_get(j, "nodes");
	assert_int_equal(json_array_size(nodes), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *n = json_array_get(nodes, i);
		const char *keys[] = {"id",      "self",   "role",    "state", "addresses",
		                      "vram_gb", "models", "serving", "rtt_ms"};
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_non_null(json_object_get(n, keys[k]));
		assert_string_equal(json_string_value(json_object_get(n, "state")), "alive");
	}
	json_decref(j);
	/* routing: nobody serves anything yet */
	uint8_t rid[NET_ID_LEN];
	bool self = true;
	assert_int_equal(mesh_route(B.m, NULL, rid, &self), ML_ERR_NOT_FOUND);
	assert_int_equal(mesh_set_role(A.m, MESH_ROLE_HOST), 0);
	assert_int_equal(mesh_set_serving(A.m, "m1", "fp", "catalog:m1", 0, 8, 8), 0);
	assert_true(run_until(b_sees_m1, NULL, 3000));
	assert_int_equal(mesh_route(B.m, "m1", rid, &self), 0);
	assert_memory_equal(rid, A.id.pk, NET_ID_LEN);
	assert_false(self);
	assert_int_equal(mesh_route(B.m, "", rid, &self), 0);
	assert_int_equal(mesh_route(B.m, "m2", rid, &self), ML_ERR_NOT_FOUND);
	assert_int_equal(mesh_route(A.m, "m1", rid, &self), 0);
	assert_true(self);
	json_t *ms = mesh_served_models_json(B.m);
	assert_int_equal(json_array_size(ms), 1);
	assert_string_equal(json_string_value(json_array_get(ms, 0)), "m1");
	json_decref(ms);
	assert_true(B.events[MESH_EV_UPDATED] >= 1);
	/* a worker holding layers is not a route */
	assert_int_equal(mesh_set_role(A.m, MESH_ROLE_WORKER), 0);
	assert_true(run_until(b_sees_worker, NULL, 3000));
	assert_int_equal(mesh_route(B.m, "m1", rid, &self), ML_ERR_NOT_FOUND);
	/* a tunnel stream B -> A, echoed back */
	struct mesh_stream *s;
	assert_int_equal(mesh_stream_open(B.m, A.id.pk, NET_STREAM_HTTP, &cli_cb, &B, &s), 0);
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_REQUEST, "GET /v1/models", 14, false), 0);
	assert_int_equal(mesh_stream_send(s, NET_MSG_HTTP_BODY, "+body", 5, true), 0);
	/* a message type that does not belong on an HTTP stream is refused */
	assert_int_equal(mesh_stream_send(s, NET_MSG_GOSSIP, "x", 1, false), ML_ERR_PROTO);
	assert_true(run_until(cli_done, &B, 5000));
	assert_true(B.cli_end);
	assert_int_equal(B.cli_close_err, 0);
	assert_int_equal(B.cli_len, 19);
	assert_memory_equal(B.cli_buf, "GET /v1/models+body", 19);
	assert_int_equal(A.srv_msgs, 2);
	run_until(never, NULL, 50);
	assert_int_equal(A.srv_closed, 1);
	/* per-type traffic counters */
	const struct mesh_traffic *tb = mesh_get_traffic(B.m), *ta = mesh_get_traffic(A.m);
	assert_int_equal(tb->tx_msgs[NET_MSG_HTTP_REQUEST], 1);
	assert_int_equal(tb->tx_bytes[NET_MSG_HTTP_REQUEST], 5 + 14);
	assert_int_equal(ta->rx_msgs[NET_MSG_HTTP_REQUEST], 1);
	assert_int_equal(ta->tx_msgs[NET_MSG_HTTP_BODY], 2);
	assert_int_equal(tb->rx_msgs[NET_MSG_HTTP_END], 1);
	assert_int_equal(tb->tx_msgs[NET_MSG_HELLO], 2);
	assert_int_equal(ta->tx_msgs[NET_MSG_HELLO_ACK], 1);
	assert_true(tb->rx_msgs[NET_MSG_GOSSIP] >= 1);
	assert_int_equal(tb->tx_msgs[NET_MSG_STAGE_FORWARD], 0);
	/* unknown or unconnected peers */
	uint8_t nobody[NET_ID_LEN] = {0};
	assert_int_equal(mesh_stream_open(B.m, nobody, NET_STREAM_HTTP, &cli_cb, &B, &s),
	                 ML_ERR_NOT_FOUND);
	assert_int_equal(mesh_stream_open(B.m, A.id.pk, NET_STREAM_CONTROL, &cli_cb, &B, &s),
	                 ML_ERR_INVALID);
	stop_ab();
}

static bool a_left_seen(void *u)
{
	(void)u;
	const struct mesh_member *m = mesh_member_get(A.m, B.id.pk);
	return m && m->state == MESH_LEFT;
}

static int left_called;
static void left_done(void *u)
{
	(void)u;
	left_called++;
}

static bool left_cb(void *u)
{
	(void)u;
	return left_called > 0;
}

static void test_mesh_node_leave(void **state)
{
	(void)state;
	join_ab();
	uint64_t t0 = ml_time_ns();
	left_called = 0;
	mesh_leave(B.m, left_done, NULL);
	assert_true(run_until(a_left_seen, NULL, 2000));
	assert_true(run_until(left_cb, NULL, 2000));
	assert_true(ml_time_ns() - t0 < 1500000000ull);
	assert_int_equal(A.events[MESH_EV_LEFT], 1);
	stop_ab();
}

/* --- a raw QUIC peer that speaks the protocol by hand --------------------- */

struct atk {
	struct net_endpoint *ep;
	struct net_ident id;
	struct net_conn *c;
	bool ready, closed;
	uint64_t close_code;
	char close_reason[128];
	int64_t reset_sid;
	uint64_t reset_code;
	int stream_closes;
	uint8_t rx[65536]; /* control-stream bytes received */
	size_t rx_len;
};

static void atk_ready(struct net_conn *c, void *u)
{
	struct atk *a = u;
	a->ready = true;
	a->c = c;
}
static void atk_data(struct net_conn *c, int64_t sid, const uint8_t *d, size_t len, bool fin,
                     void *u)
{
	(void)c;
	(void)sid;
	(void)fin;
	struct atk *a = u;
	if (a->rx_len + len <= sizeof(a->rx)) {
		memcpy(a->rx + a->rx_len, d, len);
		a->rx_len += len;
	}
}
static void atk_sclose(struct net_conn *c, int64_t sid, uint64_t code, void *u)
{
	(void)c;
	struct atk *a = u;
	a->stream_closes++;
	a->reset_sid = sid;
	a->reset_code = code;
}
static void atk_closed(struct net_conn *c, const struct net_close_info *info, void *u)
{
	(void)c;
	struct atk *a = u;
	a->closed = true;
	a->close_code = info->code;
	snprintf(a->close_reason, sizeof(a->close_reason), "%s", info->reason);
	a->c = NULL;
}

static void atk_start(struct atk *a, uint8_t seed)
{
	memset(a, 0, sizeof(*a));
	uint8_t s[32];
	memset(s, seed, sizeof(s));
	net_ident_from_seed(&a->id, s);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.ident = &a->id;
	cfg.host = "127.0.0.1";
	cfg.cb.on_conn_ready = atk_ready;
	cfg.cb.on_stream_data = atk_data;
	cfg.cb.on_stream_close = atk_sclose;
	cfg.cb.on_conn_closed = atk_closed;
	cfg.user = a;
	assert_int_equal(net_endpoint_new(&a->ep, base, &cfg), 0);
}

static bool atk_is_ready(void *u)
{
	struct atk *a = u;
	return a->ready || a->closed;
}
static bool atk_is_closed(void *u)
{
	return ((struct atk *)u)->closed;
}

static void atk_dial(struct atk *a, struct mesh *target)
{
	a->ready = a->closed = false;
	a->rx_len = 0;
	a->stream_closes = 0;
	assert_int_equal(
	    net_connect_host(a->ep, "127.0.0.1", mesh_port(target), mesh_node_id(target), a, &a->c),
	    0);
	assert_true(run_until(atk_is_ready, a, 3000));
	assert_true(a->ready);
}

/* Does |a->rx| (control stream bytes, no type byte) hold a GOSSIP message? */
static bool atk_got_gossip(const struct atk *a)
{
	size_t off = 0;
	while (off < a->rx_len) {
		struct net_frame_msg m;
		int n = net_frame_parse(NET_STREAM_CONTROL, a->rx + off, a->rx_len - off, &m);
		if (n <= 0)
			return false;
		if (m.type == NET_MSG_GOSSIP)
			return true;
		off += (size_t)n;
	}
	return false;
}

static void test_mesh_node_unauthenticated(void **state)
{
	(void)state;
	node_start(&A, 1, NULL);
	struct atk a;
	atk_start(&a, 9);
	/* 1. an HTTP stream before any HELLO is reset; the connection stays */
	atk_dial(&a, A.m);
	int64_t sid;
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	uint8_t req[6] = {NET_STREAM_HTTP, NET_MSG_HTTP_REQUEST, 0, 0, 0, 0};
	net_stream_send(a.c, sid, req, sizeof(req), false);
	run_until(never, NULL, 300);
	assert_int_equal(a.stream_closes, 1);
	assert_int_equal(a.reset_code, MESH_STREAM_REFUSED);
	assert_false(a.closed);
	/* 2. gossip before HELLO on the control stream closes the connection */
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	uint8_t g[8] = {NET_STREAM_CONTROL, NET_MSG_GOSSIP, 0, 0, 0, 2, 0, 0};
	net_stream_send(a.c, sid, g, sizeof(g), false);
	assert_true(run_until(atk_is_closed, &a, 3000));
	assert_int_equal(a.close_code, MESH_CLOSE_PROTO);
	assert_int_equal(a.rx_len, 0);
	/* 3. silence after connecting: closed by the HELLO timeout */
	atk_dial(&a, A.m);
	assert_true(run_until(atk_is_closed, &a, 4000));
	assert_int_equal(a.close_code, MESH_CLOSE_TIMEOUT);
	/* nobody was admitted */
	assert_null(mesh_member_get(A.m, a.id.pk));
	net_endpoint_free(a.ep);
	mesh_free(A.m);
}

/* Feeds every complete control message in a->rx to |auth| (dialer side);
 * returns the auth result of the last one. */
static int atk_feed_auth(struct atk *a, struct mesh_auth *auth, struct net_buf *out)
{
	size_t off = 0;
	int rc = 0;
	while (off < a->rx_len) {
		struct net_frame_msg m;
		int n = net_frame_parse(NET_STREAM_CONTROL, a->rx + off, a->rx_len - off, &m);
		if (n <= 0)
			break;
		if (m.type == NET_MSG_HELLO_ACK)
			rc = mesh_auth_recv(auth, m.type, m.payload, m.len, out);
		off += (size_t)n;
	}
	return rc;
}

/* Dialer-side auth state of a secret holder on |a|'s current connection,
 * bound to that connection's TLS session as a real node's is. */
static void atk_auth_init(struct atk *a, struct mesh_auth *au, const uint8_t *secret,
			  uint64_t incarnation)
{
	uint8_t binding[32];
	assert_int_equal(net_conn_export_keying_material(a->c, "EXPORTER-mesh-llm-hello", NULL, 0,
							 binding, sizeof(binding)),
			 0);
	mesh_auth_init(au, true, secret, a->id.pk, mesh_node_id(A.m), incarnation, binding,
		       sizeof(binding));
}

static bool atk_has_rx(void *u)
{
	return ((struct atk *)u)->rx_len > 0 || ((struct atk *)u)->closed;
}

static bool atk_has_gossip(void *u)
{
	return atk_got_gossip(u);
}

static void test_mesh_node_replay_and_malformed(void **state)
{
	(void)state;
	join_ab(); /* A with a connected B, to check A keeps serving */
	char tok[MESH_TOKEN_MAX_LEN];
	mesh_invite_token(A.m, tok, sizeof(tok));
	struct mesh_token t;
	assert_int_equal(mesh_token_decode(&t, tok), 0);
	struct atk a;
	atk_start(&a, 9);

	/* connection 1: the legitimate exchange of a holder of the secret; the
	 * valid phase-2 proof is recorded but not sent */
	atk_dial(&a, A.m);
	struct mesh_auth au;
	atk_auth_init(&a, &au, t.secret, 77);
	struct net_buf b, phase1, proof;
	net_buf_init(&b, 0);
	net_buf_init(&phase1, 0);
	net_buf_init(&proof, 0);
	net_frame_put_stream_type(&phase1, NET_STREAM_CONTROL);
	mesh_auth_start(&au, &phase1);
	int64_t sid;
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	net_stream_send(a.c, sid, phase1.data, phase1.len, false);
	assert_true(run_until(atk_has_rx, &a, 3000));
	assert_int_equal(atk_feed_auth(&a, &au, &proof), 1);
	assert_true(proof.len > 0);
	net_conn_close(a.c, 0, "bye");
	run_until(atk_is_closed, &a, 1000);

	/* connection 2: same id, same phase-1 bytes (same nonce), then the
	 * recorded proof: refused, and not a byte of gossip comes back */
	atk_dial(&a, A.m);
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	net_stream_send(a.c, sid, phase1.data, phase1.len, false);
	assert_true(run_until(atk_has_rx, &a, 3000));
	net_stream_send(a.c, sid, proof.data, proof.len, false);
	assert_true(run_until(atk_is_closed, &a, 3000));
	assert_int_equal(a.close_code, MESH_CLOSE_AUTH);
	assert_false(atk_got_gossip(&a));
	assert_null(mesh_member_get(A.m, a.id.pk));

	/* connection 3: a correct HELLO is admitted and receives gossip (so the
	 * refusal above was the replay, not the harness) */
	atk_dial(&a, A.m);
	atk_auth_init(&a, &au, t.secret, 78);
	net_buf_reset(&b);
	net_frame_put_stream_type(&b, NET_STREAM_CONTROL);
	mesh_auth_start(&au, &b);
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	net_stream_send(a.c, sid, b.data, b.len, false);
	assert_true(run_until(atk_has_rx, &a, 3000));
	net_buf_reset(&b);
	assert_int_equal(atk_feed_auth(&a, &au, &b), 1);
	net_stream_send(a.c, sid, b.data, b.len, false);
	assert_true(run_until(atk_has_gossip, &a, 3000));
	assert_false(a.closed);

	/* a malformed message on an HTTP stream of an authenticated peer
	 * resets only that stream; so does an unknown stream type */
	int64_t hs;
	assert_int_equal(net_stream_open(a.c, &hs), 0);
	uint8_t wrong[6] = {NET_STREAM_HTTP, NET_MSG_GOSSIP, 0, 0, 0, 0};
	int closes = a.stream_closes;
	net_stream_send(a.c, hs, wrong, sizeof(wrong), false);
	run_until(never, NULL, 300);
	assert_int_equal(a.stream_closes, closes + 1);
	assert_int_equal(a.reset_code, MESH_STREAM_BAD);
	assert_int_equal(net_stream_open(a.c, &hs), 0);
	uint8_t unknown[1] = {0x77};
	net_stream_send(a.c, hs, unknown, sizeof(unknown), false);
	run_until(never, NULL, 300);
	assert_int_equal(a.stream_closes, closes + 2);
	assert_int_equal(a.reset_code, MESH_STREAM_BAD);
	assert_false(a.closed);

	/* then malformed gossip from this authenticated peer: only its
	 * connection closes */
	uint8_t bad[9] = {NET_MSG_GOSSIP, 0, 0, 0, 4, 0, 1, 0xff, 0xff};
	net_stream_send(a.c, sid, bad, sizeof(bad), false);
	assert_true(run_until(atk_is_closed, &a, 3000));
	assert_int_equal(a.close_code, MESH_CLOSE_PROTO);
	run_until(never, NULL, 100);
	assert_true(ab_connected(NULL));

	/* an oversized message header closes the connection too */
	atk_dial(&a, A.m);
	atk_auth_init(&a, &au, t.secret, 79);
	net_buf_reset(&b);
	net_frame_put_stream_type(&b, NET_STREAM_CONTROL);
	mesh_auth_start(&au, &b);
	assert_int_equal(net_stream_open(a.c, &sid), 0);
	net_stream_send(a.c, sid, b.data, b.len, false);
	assert_true(run_until(atk_has_rx, &a, 3000));
	net_buf_reset(&b);
	assert_int_equal(atk_feed_auth(&a, &au, &b), 1);
	uint8_t huge[5] = {NET_MSG_GOSSIP, 0x7f, 0xff, 0xff, 0xff};
	net_buf_put_bytes(&b, huge, sizeof(huge));
	net_stream_send(a.c, sid, b.data, b.len, false);
	assert_true(run_until(atk_is_closed, &a, 3000));
	assert_int_equal(a.close_code, MESH_CLOSE_PROTO);
	run_until(never, NULL, 100);
	assert_true(ab_connected(NULL));

	net_buf_free(&b);
	net_buf_free(&phase1);
	net_buf_free(&proof);
	net_endpoint_free(a.ep);
	stop_ab();
}

int main(void)
{
	if (!getenv("MESH_LLM_LOG"))
		ml_log_set_level(ML_LOG_WARN);
	base = net_event_base_new();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_node_join_and_tunnel),
	    cmocka_unit_test(test_mesh_node_leave),
	    cmocka_unit_test(test_mesh_node_unauthenticated),
	    cmocka_unit_test(test_mesh_node_replay_and_malformed),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	event_base_free(base);
	return rc;
}
