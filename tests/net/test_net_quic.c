/* Tests for src/net/net_quic.c: two endpoints in one process on loopback.
 * Handshake with pinned keys, wrong expected id refused, echo, 50 MB bulk
 * intact, 100 concurrent streams, peer close with code and reason, idle
 * timeout, DATAGRAM, and the delay knob adding the configured latency. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "base/ml_rng.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "net/net_ident.h"
#include "net/net_quic.h"

#define MAXS 128

/* Per-endpoint record of what the callbacks saw. */
struct side {
	const char *name;
	bool echo;           /* echo every stream's bytes back, fin included */
	bool hello_on_ready; /* open a stream and send "hello" from on_conn_ready */
	bool verify_pattern;
	int ready, closed, opened, stream_closed, dgrams;
	struct net_conn *conn; /* last ready connection */
	struct net_close_info close;
	char close_reason[256];
	uint64_t rx_bytes;
	uint64_t bad_bytes;
	bool fin_seen;
	/* per stream receive buffers (by index sid/4) */
	uint8_t *rx[MAXS];
	size_t rx_len[MAXS], rx_cap[MAXS];
	bool rx_fin[MAXS];
	uint64_t last_rx_ns;
	uint64_t acked_calls, last_unacked;
};

static void s_ready(struct net_conn *c, void *u)
{
	struct side *s = u;
	s->ready++;
	s->conn = c;
	if (s->hello_on_ready) {
		int64_t sid;
		assert_int_equal(net_stream_open(c, &sid), 0);
		assert_int_equal(net_stream_send(c, sid, "hello", 5, true), 0);
	}
}

static void s_open(struct net_conn *c, int64_t sid, void *u)
{
	struct side *s = u;
	(void)c;
	(void)sid;
	s->opened++;
}

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)((off * 2654435761u) >> 13);
}

static void s_data(struct net_conn *c, int64_t sid, const uint8_t *data, size_t len, bool fin,
                   void *u)
{
	struct side *s = u;
	if (s->verify_pattern) {
		for (size_t i = 0; i < len; i++)
			if (data[i] != pattern(s->rx_bytes + i))
				s->bad_bytes++;
	} else {
		size_t k = (size_t)(sid / 4) % MAXS;
		if (s->rx_len[k] + len > s->rx_cap[k]) {
			size_t cap = (s->rx_len[k] + len) * 2 + 64;
			s->rx[k] = realloc(s->rx[k], cap);
			s->rx_cap[k] = cap;
		}
		if (len)
			memcpy(s->rx[k] + s->rx_len[k], data, len);
		s->rx_len[k] += len;
		if (fin)
			s->rx_fin[k] = true;
	}
	s->rx_bytes += len;
	s->last_rx_ns = ml_time_ns();
	if (fin)
		s->fin_seen = true;
	if (s->echo && (len || fin))
		assert_int_equal(net_stream_send(c, sid, data, len, fin), 0);
}

static void s_sclose(struct net_conn *c, int64_t sid, uint64_t err, void *u)
{
	struct side *s = u;
	(void)c;
	(void)sid;
	(void)err;
	s->stream_closed++;
}

static void s_closed(struct net_conn *c, const struct net_close_info *info, void *u)
{
	struct side *s = u;
	(void)c;
	s->closed++;
	s->close = *info;
	snprintf(s->close_reason, sizeof(s->close_reason), "%s", info->reason);
	s->close.reason = s->close_reason;
	if (s->conn == c)
		s->conn = NULL;
}

static void s_acked(struct net_conn *c, int64_t sid, uint64_t unacked, void *u)
{
	struct side *s = u;
	(void)c;
	(void)sid;
	s->acked_calls++;
	s->last_unacked = unacked;
}

static void s_dgram(struct net_conn *c, const uint8_t *d, size_t n, void *u)
{
	struct side *s = u;
	(void)d;
	(void)n;
	s->dgrams++;
	if (s->echo)
		net_datagram_send(c, d, n);
}

struct pair {
	struct event_base *base;
	struct net_ident ia, ib, ic;
	struct net_endpoint *a, *b; /* a accepts, b dials */
	struct side sa, sb;
	struct net_conn *cb; /* b's connection to a */
};

static void side_free(struct side *s)
{
	for (int i = 0; i < MAXS; i++)
		free(s->rx[i]);
}

static struct event_base *new_base(void)
{
	struct event_config *cfg = event_config_new();
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	struct event_base *b = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return b;
}

static void pair_open(struct pair *p, uint32_t idle_ms, bool datagrams)
{
	memset(p, 0, sizeof(*p));
	uint8_t seed[32];
	memset(seed, 1, sizeof(seed));
	assert_int_equal(net_ident_from_seed(&p->ia, seed), 0);
	memset(seed, 2, sizeof(seed));
	assert_int_equal(net_ident_from_seed(&p->ib, seed), 0);
	assert_int_equal(net_ident_generate(&p->ic), 0);
	p->base = new_base();
	assert_non_null(p->base);
	p->sa.name = "a";
	p->sb.name = "b";
	struct net_quic_callbacks cb = {.on_conn_ready = s_ready,
	                                .on_stream_open = s_open,
	                                .on_stream_data = s_data,
	                                .on_stream_close = s_sclose,
	                                .on_conn_closed = s_closed,
	                                .on_datagram = s_dgram,
	                                .on_stream_acked = s_acked};
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = "127.0.0.1";
	cfg.cb = cb;
	cfg.datagrams = datagrams;
	if (idle_ms) {
		cfg.idle_timeout_ms = idle_ms;
		cfg.keepalive_ms = 0;
	}
	cfg.ident = &p->ia;
	cfg.accept = true;
	cfg.user = &p->sa;
	assert_int_equal(net_endpoint_new(&p->a, p->base, &cfg), 0);
	cfg.ident = &p->ib;
	cfg.accept = false;
	cfg.user = &p->sb;
	assert_int_equal(net_endpoint_new(&p->b, p->base, &cfg), 0);
	assert_true(net_endpoint_port(p->a) != 0);
}

static void pair_close(struct pair *p)
{
	net_endpoint_free(p->b);
	net_endpoint_free(p->a);
	event_base_free(p->base);
	side_free(&p->sa);
	side_free(&p->sb);
}

/* Runs the loop until |*flag| >= |want| or |timeout_ms| passes. */
static bool run_until(struct pair *p, const int *flag, int want, int timeout_ms)
{
	uint64_t end = ml_time_ns() + (uint64_t)timeout_ms * 1000000u;
	while (*flag < want && ml_time_ns() < end)
		event_base_loop(p->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	return *flag >= want;
}

static bool run_until_bool(struct pair *p, const bool *flag, int timeout_ms)
{
	uint64_t end = ml_time_ns() + (uint64_t)timeout_ms * 1000000u;
	while (!*flag && ml_time_ns() < end)
		event_base_loop(p->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	return *flag;
}

static void pair_connect(struct pair *p)
{
	assert_int_equal(
	    net_connect_host(p->b, "127.0.0.1", net_endpoint_port(p->a), p->ia.pk, NULL, &p->cb),
	    0);
	/* generous: the first handshake under valgrind takes seconds */
	assert_true(run_until(p, &p->sb.ready, 1, 10000));
	assert_true(run_until(p, &p->sa.ready, 1, 10000));
}

static void test_net_quic_handshake(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	uint64_t t0 = ml_time_ns();
	pair_connect(&p);
	double ms = (double)(ml_time_ns() - t0) / 1e6;
	print_message("handshake %.2f ms\n", ms);
	assert_true(ms < 10000); /* printed above; the bound only catches a stall */
	assert_ptr_equal(p.sb.conn, p.cb);
	assert_true(net_conn_is_ready(p.cb));
	assert_true(net_conn_is_dialer(p.cb));
	assert_false(net_conn_is_dialer(p.sa.conn));
	/* each side authenticated the other's key */
	assert_memory_equal(net_conn_peer_id(p.cb), p.ia.pk, NET_ID_LEN);
	assert_memory_equal(net_conn_peer_id(p.sa.conn), p.ib.pk, NET_ID_LEN);
	struct net_conn_info info;
	assert_int_equal(net_conn_get_info(p.cb, &info), 0);
	assert_true(info.handshake_ns > 0);
	assert_int_equal(p.sa.closed + p.sb.closed, 0);
	pair_close(&p);
}

/* Both sides send from inside on_conn_ready (the usual HELLO pattern). */
static void test_net_quic_send_on_ready(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.hello_on_ready = p.sb.hello_on_ready = true;
	pair_connect(&p);
	assert_true(run_until_bool(&p, &p.sa.fin_seen, 2000));
	assert_true(run_until_bool(&p, &p.sb.fin_seen, 2000));
	assert_int_equal(p.sa.rx_len[0], 5); /* dialer's first stream: id 0 */
	assert_memory_equal(p.sa.rx[0], "hello", 5);
	assert_int_equal(p.sb.rx_len[0], 5); /* acceptor's first stream: id 1, index 0 */
	pair_close(&p);
}

/* Dialing nobody times out; closing before the handshake ends is orderly. */
static void test_net_quic_dial_failures(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	net_endpoint_free(p.b);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = "127.0.0.1";
	cfg.cb = (struct net_quic_callbacks){.on_conn_ready = s_ready, .on_conn_closed = s_closed};
	cfg.ident = &p.ib;
	cfg.user = &p.sb;
	cfg.handshake_timeout_ms = 300;
	assert_int_equal(net_endpoint_new(&p.b, p.base, &cfg), 0);
	/* a port where nobody listens: our own endpoint b does not accept */
	struct net_conn *c;
	uint64_t t0 = ml_time_ns();
	assert_int_equal(
	    net_connect_host(p.b, "127.0.0.1", net_endpoint_port(p.b), p.ia.pk, NULL, &c), 0);
	assert_true(run_until(&p, &p.sb.closed, 1, 3000));
	double ms = (double)(ml_time_ns() - t0) / 1e6;
	assert_int_equal(p.sb.close.err, ML_ERR_TIMEOUT);
	assert_true(ms >= 250 && ms < 2500);
	/* cancel a dial before it completes */
	assert_int_equal(
	    net_connect_host(p.b, "127.0.0.1", net_endpoint_port(p.a), p.ia.pk, NULL, &c), 0);
	assert_int_equal(net_conn_close(c, 5, "changed my mind"), 0);
	assert_true(run_until(&p, &p.sb.closed, 2, 2000));
	assert_int_equal(p.sb.close.err, ML_ERR_CLOSED);
	assert_int_equal(p.sb.ready, 0);
	run_until(&p, &p.sa.ready, 1, 100);
	assert_int_equal(p.sa.ready, 0);
	pair_close(&p);
}

static void test_net_quic_wrong_id_refused(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	struct net_conn *c;
	/* b expects c's key, but a answers */
	assert_int_equal(
	    net_connect_host(p.b, "127.0.0.1", net_endpoint_port(p.a), p.ic.pk, NULL, &c), 0);
	assert_true(run_until(&p, &p.sb.closed, 1, 3000));
	assert_int_equal(p.sb.ready, 0);
	assert_int_equal(p.sb.close.err, ML_ERR_AUTH);
	assert_non_null(strstr(p.sb.close_reason, "not the expected"));
	/* the acceptor never announced it */
	run_until(&p, &p.sa.closed, 1, 100);
	assert_int_equal(p.sa.ready, 0);
	assert_int_equal(p.sa.closed, 0);
	pair_close(&p);
}

static bool refuse_all(const uint8_t id[NET_ID_LEN], void *u)
{
	(void)id;
	(void)u;
	return false;
}

static void test_net_quic_acceptor_refuses(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	net_endpoint_free(p.a);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = "127.0.0.1";
	cfg.cb = (struct net_quic_callbacks){.on_conn_ready = s_ready,
	                                     .on_stream_open = s_open,
	                                     .on_stream_data = s_data,
	                                     .on_stream_close = s_sclose,
	                                     .on_conn_closed = s_closed,
	                                     .on_datagram = s_dgram,
	                                     .on_stream_acked = s_acked,
	                                     .allow_peer = refuse_all};
	cfg.ident = &p.ia;
	cfg.accept = true;
	cfg.user = &p.sa;
	assert_int_equal(net_endpoint_new(&p.a, p.base, &cfg), 0);
	struct net_conn *c;
	assert_int_equal(
	    net_connect_host(p.b, "127.0.0.1", net_endpoint_port(p.a), p.ia.pk, NULL, &c), 0);
	assert_true(run_until(&p, &p.sb.closed, 1, 3000));
	assert_int_equal(p.sa.ready, 0);
	assert_int_not_equal(p.sb.close.err, ML_ERR_CLOSED);
	pair_close(&p);
}

static void test_net_quic_echo(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.echo = true;
	pair_connect(&p);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	assert_int_equal(net_stream_send(p.cb, sid, "hello, mesh", 11, false), 0);
	assert_int_equal(net_stream_send(p.cb, sid, "!", 1, true), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 1, 3000));
	size_t k = (size_t)(sid / 4);
	assert_int_equal(p.sb.rx_len[k], 12);
	assert_memory_equal(p.sb.rx[k], "hello, mesh!", 12);
	assert_true(p.sb.rx_fin[k]);
	assert_int_equal(p.sa.opened, 1);
	assert_true(run_until(&p, &p.sa.stream_closed, 1, 1000));
	assert_int_equal(net_stream_send(p.cb, sid, "x", 1, false), ML_ERR_NOT_FOUND);

	/* small-message round trips on one stream */
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	k = (size_t)(sid / 4);
	uint64_t t0 = ml_time_ns();
	for (int i = 0; i < 200; i++) {
		uint8_t msg[64];
		memset(msg, i, sizeof(msg));
		size_t before = p.sb.rx_len[k];
		assert_int_equal(net_stream_send(p.cb, sid, msg, sizeof(msg), false), 0);
		uint64_t end = ml_time_ns() + 2000000000u;
		while (p.sb.rx_len[k] < before + 64 && ml_time_ns() < end)
			event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		assert_int_equal(p.sb.rx_len[k], before + 64);
		assert_int_equal(p.sb.rx[k][before], (uint8_t)i);
	}
	print_message("64-byte echo: %.1f us per round trip\n",
	              (double)(ml_time_ns() - t0) / 200 / 1e3);
	pair_close(&p);
}

static void test_net_quic_bulk_50mb(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.verify_pattern = true;
	pair_connect(&p);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	const uint64_t total = 50u << 20;
	const size_t piece = 256 << 10;
	uint8_t *buf = malloc(piece);
	uint64_t sent = 0;
	uint64_t t0 = ml_time_ns();
	uint64_t end = t0 + 60000000000ull;
	/* keep at most 8 MiB unacknowledged, as a real producer would */
	while (!p.sa.fin_seen && ml_time_ns() < end) {
		while (sent < total && net_stream_unacked(p.cb, sid) < (8u << 20)) {
			size_t n = total - sent < piece ? (size_t)(total - sent) : piece;
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(sent + i);
			sent += n;
			assert_int_equal(net_stream_send(p.cb, sid, buf, n, sent == total), 0);
		}
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	double s = (double)(p.sa.last_rx_ns - t0) / 1e9;
	struct net_endpoint_stats st;
	net_endpoint_get_stats(p.b, &st);
	struct net_endpoint_stats sta;
	net_endpoint_get_stats(p.a, &sta);
	print_message("bulk 50 MiB: %.2f s, %.1f MB/s (%llu packets in %llu send calls, received "
	              "in %llu calls, "
	              "%llu dropped)\n",
	              s, (double)total / s / 1e6, (unsigned long long)st.tx_packets,
	              (unsigned long long)st.tx_calls, (unsigned long long)sta.rx_calls,
	              (unsigned long long)st.tx_dropped);
	assert_true(p.sa.fin_seen);
	assert_true(p.sa.rx_bytes == total);
	assert_true(p.sa.bad_bytes == 0);
	/* the sender heard about acknowledgements; all data is acked soon */
	assert_true(p.sb.acked_calls > 0);
	uint64_t until = ml_time_ns() + 2000000000u;
	while (net_stream_unacked(p.cb, sid) > 0 && ml_time_ns() < until)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	free(buf);
	pair_close(&p);
}

static void test_net_quic_100_streams(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.echo = true;
	pair_connect(&p);
	enum { N = 100, LEN = 10000 };
	int64_t sids[N];
	uint8_t *msg = malloc(LEN);
	for (int i = 0; i < N; i++) {
		assert_int_equal(net_stream_open(p.cb, &sids[i]), 0);
		for (int j = 0; j < LEN; j++)
			msg[j] = (uint8_t)(i * 31 + j);
		/* in two pieces, interleaved across streams */
		assert_int_equal(net_stream_send(p.cb, sids[i], msg, LEN / 2, false), 0);
	}
	for (int i = 0; i < N; i++) {
		for (int j = 0; j < LEN; j++)
			msg[j] = (uint8_t)(i * 31 + j);
		assert_int_equal(net_stream_send(p.cb, sids[i], msg + LEN / 2, LEN - LEN / 2, true),
		                 0);
	}
	assert_true(run_until(&p, &p.sb.stream_closed, N, 10000));
	assert_int_equal(p.sa.opened, N);
	for (int i = 0; i < N; i++) {
		size_t k = (size_t)(sids[i] / 4);
		assert_int_equal(p.sb.rx_len[k], LEN);
		assert_true(p.sb.rx_fin[k]);
		for (int j = 0; j < LEN; j++)
			assert_int_equal(p.sb.rx[k][j], (uint8_t)(i * 31 + j));
	}
	free(msg);
	pair_close(&p);
}

static void test_net_quic_peer_close(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	pair_connect(&p);
	struct net_conn *server_side = p.sa.conn;
	assert_non_null(server_side);
	assert_int_equal(net_conn_close(p.cb, 42, "bye now"), 0);
	assert_int_equal(net_conn_close(p.cb, 42, "twice"), ML_ERR_CLOSED);
	assert_true(run_until(&p, &p.sb.closed, 1, 2000));
	assert_true(run_until(&p, &p.sa.closed, 1, 2000));
	assert_int_equal(p.sb.close.err, ML_ERR_CLOSED);
	assert_false(p.sb.close.by_peer);
	assert_int_equal(p.sa.close.err, ML_ERR_CLOSED);
	assert_true(p.sa.close.by_peer);
	assert_true(p.sa.close.app_error);
	assert_int_equal(p.sa.close.code, 42);
	assert_string_equal(p.sa.close_reason, "bye now");
	struct net_endpoint_stats st;
	net_endpoint_get_stats(p.a, &st);
	assert_int_equal(st.conns, 0);
	pair_close(&p);
}

static void test_net_quic_idle_timeout(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 300, false);
	pair_connect(&p);
	uint64_t t0 = ml_time_ns();
	assert_true(run_until(&p, &p.sb.closed, 1, 3000));
	assert_true(run_until(&p, &p.sa.closed, 1, 3000));
	double ms = (double)(ml_time_ns() - t0) / 1e6;
	assert_int_equal(p.sb.close.err, ML_ERR_TIMEOUT);
	assert_int_equal(p.sa.close.err, ML_ERR_TIMEOUT);
	assert_true(ms > 250 && ms < 2000);
	pair_close(&p);
}

static void test_net_quic_datagram(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, true);
	p.sa.echo = true;
	pair_connect(&p);
	for (int i = 0; i < 10; i++)
		assert_int_equal(net_datagram_send(p.cb, "ping", 4), 0);
	assert_true(run_until(&p, &p.sb.dgrams, 10, 2000));
	uint8_t big[1400] = {0};
	assert_int_equal(net_datagram_send(p.cb, big, sizeof(big)), ML_ERR_RANGE);
	pair_close(&p);
}

static double echo_rtt_ms(struct pair *p, int64_t sid)
{
	size_t k = (size_t)(sid / 4);
	size_t before = p->sb.rx_len[k];
	uint64_t t0 = ml_time_ns();
	assert_int_equal(net_stream_send(p->cb, sid, "ping", 4, false), 0);
	uint64_t end = t0 + 2000000000u;
	while (p->sb.rx_len[k] < before + 4 && ml_time_ns() < end)
		event_base_loop(p->base, EVLOOP_ONCE);
	assert_int_equal(p->sb.rx_len[k], before + 4);
	return (double)(ml_time_ns() - t0) / 1e6;
}

static void test_net_quic_delay_knob(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.echo = true;
	pair_connect(&p);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	double base_rtt = 1e9;
	for (int i = 0; i < 5; i++) {
		double r = echo_rtt_ms(&p, sid);
		base_rtt = r < base_rtt ? r : base_rtt;
	}
	/* 10 ms each way: the round trip grows by ~20 ms */
	net_endpoint_set_netem(p.a, 10000, 0, 0);
	net_endpoint_set_netem(p.b, 10000, 0, 0);
	double mn = 1e9, mx = 0;
	for (int i = 0; i < 10; i++) {
		double r = echo_rtt_ms(&p, sid);
		mn = r < mn ? r : mn;
		mx = r > mx ? r : mx;
	}
	print_message("echo rtt: %.3f ms without delay, %.2f..%.2f ms with 2x10 ms\n", base_rtt, mn,
	              mx);
	assert_true(mn >= 19.5);
	assert_true(mn < 30);
	/* a fresh handshake through the delay takes about 2 RTT... and at least one */
	struct net_conn *c2;
	int before = p.sb.ready;
	uint64_t t0 = ml_time_ns();
	assert_int_equal(
	    net_connect_host(p.b, "127.0.0.1", net_endpoint_port(p.a), p.ia.pk, NULL, &c2), 0);
	assert_true(run_until(&p, &p.sb.ready, before + 1, 3000));
	double hs = (double)(ml_time_ns() - t0) / 1e6;
	print_message("handshake through 2x10 ms: %.1f ms\n", hs);
	assert_true(hs >= 19.5 && hs < 200);
	pair_close(&p);
}

static void test_net_quic_lossy_bulk(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.verify_pattern = true;
	pair_connect(&p);
	net_endpoint_set_netem(p.b, 1000, 500, 2.0);
	net_endpoint_set_netem(p.a, 1000, 500, 2.0);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	const uint64_t total = 2u << 20;
	uint8_t *buf = malloc(total);
	for (uint64_t i = 0; i < total; i++)
		buf[i] = pattern(i);
	assert_int_equal(net_stream_send(p.cb, sid, buf, total, true), 0);
	assert_true(run_until_bool(&p, &p.sa.fin_seen, 20000));
	assert_true(p.sa.rx_bytes == total);
	assert_true(p.sa.bad_bytes == 0);
	free(buf);
	pair_close(&p);
}

/* The acceptor disappears: first orderly (endpoint freed, CONNECTION_CLOSE
 * sent), then as a crash followed by a restart with the same key on the
 * same port (the close is lost; the new incarnation answers the dialer's
 * next packet with a stateless reset). */
static void test_net_quic_peer_gone(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	pair_connect(&p);
	net_endpoint_free(p.a);
	p.a = NULL;
	assert_true(run_until(&p, &p.sb.closed, 1, 2000));
	assert_true(p.sb.close.by_peer);
	assert_int_equal(p.sb.close.err, ML_ERR_CLOSED);
	assert_int_equal(p.sa.closed, 0); /* no callbacks from a freed endpoint */

	/* restart with the same key and port */
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = "127.0.0.1";
	cfg.cb = (struct net_quic_callbacks){.on_conn_ready = s_ready,
	                                     .on_stream_open = s_open,
	                                     .on_stream_data = s_data,
	                                     .on_stream_close = s_sclose,
	                                     .on_conn_closed = s_closed,
	                                     .on_datagram = s_dgram,
	                                     .on_stream_acked = s_acked};
	cfg.ident = &p.ia;
	cfg.accept = true;
	cfg.user = &p.sa;
	assert_int_equal(net_endpoint_new(&p.a, p.base, &cfg), 0);
	uint16_t port = net_endpoint_port(p.a);
	p.sb.ready = p.sa.ready = 0;
	pair_connect(&p);
	/* crash: the close packet is lost */
	net_endpoint_set_netem(p.a, 0, 0, 100.0);
	net_endpoint_free(p.a);
	cfg.port = port;
	assert_int_equal(net_endpoint_new(&p.a, p.base, &cfg), 0);
	int closed = p.sb.closed;
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	uint8_t msg[100] = {0};
	uint64_t t0 = ml_time_ns();
	assert_int_equal(net_stream_send(p.cb, sid, msg, sizeof(msg), false), 0);
	assert_true(run_until(&p, &p.sb.closed, closed + 1, 3000));
	double ms = (double)(ml_time_ns() - t0) / 1e6;
	print_message("restarted peer detected by stateless reset in %.2f ms\n", ms);
	assert_true(ms < 1000);
	assert_non_null(strstr(p.sb.close_reason, "stateless reset"));
	pair_close(&p);
}

static void test_net_quic_stream_reset(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	pair_connect(&p);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	assert_int_equal(net_stream_send(p.cb, sid, "abc", 3, false), 0);
	assert_true(run_until(&p, &p.sa.opened, 1, 2000));
	assert_int_equal(net_stream_shutdown(p.cb, sid, 7), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 1, 2000));
	assert_true(run_until(&p, &p.sa.stream_closed, 1, 2000));
	assert_int_equal(net_stream_send(p.cb, sid, "x", 1, false), ML_ERR_NOT_FOUND);
	/* the connection is still fine */
	p.sa.echo = true;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	assert_int_equal(net_stream_send(p.cb, sid, "ok", 2, true), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 2, 2000));
	assert_int_equal(p.sb.rx_len[sid / 4], 2);
	pair_close(&p);
}

/* Random datagrams, random long-header "Initials" and truncated real ones
 * must not crash the endpoint or disturb a real connection. */
static void test_net_quic_garbage_packets(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	p.sa.echo = true;
	pair_connect(&p);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in to = {0};
	to.sin_family = AF_INET;
	to.sin_port = htons(net_endpoint_port(p.a));
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct ml_rng rng;
	ml_rng_seed(&rng, 99);
	uint8_t pkt[1500];
	for (int i = 0; i < 2000; i++) {
		size_t len = (size_t)(ml_rng_next(&rng) % sizeof(pkt));
		for (size_t j = 0; j < sizeof(pkt); j++)
			pkt[j] = (uint8_t)ml_rng_next(&rng);
		if (i % 3 == 0 && len > 8) {
			/* long header, QUIC v1, plausible CID lengths */
			pkt[0] = 0xc0 | (pkt[0] & 0x0f);
			pkt[1] = 0, pkt[2] = 0, pkt[3] = 0, pkt[4] = 1;
			pkt[5] = (uint8_t)(ml_rng_next(&rng) % 21);
			if (i % 2 == 0)
				len = 1200;
		}
		sendto(fd, pkt, len, 0, (struct sockaddr *)&to, sizeof(to));
		if (i % 50 == 0)
			for (int k = 0; k < 20; k++)
				event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	/* hole-punch datagrams between the endpoints are ignored too */
	assert_int_equal(
	    net_endpoint_send_raw(p.b, (struct sockaddr *)&to, sizeof(to), "\0punch", 6), 0);
	assert_int_equal(net_endpoint_send_raw(p.b, (struct sockaddr *)&to, sizeof(to), "punch", 5),
	                 ML_ERR_INVALID);
	for (int k = 0; k < 200; k++)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	close(fd);
	struct net_endpoint_stats st;
	net_endpoint_get_stats(p.a, &st);
	assert_int_equal(st.conns, 1); /* no half-open state left behind */
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	assert_int_equal(net_stream_send(p.cb, sid, "still here", 10, true), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 1, 3000));
	assert_int_equal(p.sb.rx_len[sid / 4], 10);
	assert_int_equal(p.sa.ready, 1); /* no garbage became a connection */
	pair_close(&p);
}

/* With manual_credit a receiver that does not consume stops the sender
 * after one window; consuming lets the rest through. */
static void test_net_quic_manual_credit(void **state)
{
	(void)state;
	struct pair p;
	pair_open(&p, 0, false);
	net_endpoint_free(p.a);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = "127.0.0.1";
	cfg.cb = (struct net_quic_callbacks){.on_conn_ready = s_ready,
	                                     .on_stream_data = s_data,
	                                     .on_stream_close = s_sclose,
	                                     .on_conn_closed = s_closed};
	cfg.ident = &p.ia;
	cfg.accept = true;
	cfg.user = &p.sa;
	cfg.manual_credit = true;
	cfg.stream_window = cfg.max_stream_window = 64 << 10;
	cfg.conn_window = cfg.max_conn_window = 1 << 20;
	assert_int_equal(net_endpoint_new(&p.a, p.base, &cfg), 0);
	p.sa.verify_pattern = true;
	pair_connect(&p);
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	const size_t total = 1 << 20;
	uint8_t *buf = malloc(total);
	for (size_t i = 0; i < total; i++)
		buf[i] = pattern(i);
	assert_int_equal(net_stream_send(p.cb, sid, buf, total, true), 0);
	/* only one stream window gets through, and then nothing more */
	uint64_t end = ml_time_ns() + 5000000000ull;
	while (p.sa.rx_bytes < 64 << 10 && ml_time_ns() < end)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	end = ml_time_ns() + 200000000u;
	while (ml_time_ns() < end)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(p.sa.rx_bytes == 64 << 10);
	assert_true(net_stream_unacked(p.cb, sid) >= total - (64 << 10));
	/* consume as it arrives */
	uint64_t consumed = 0;
	end = ml_time_ns() + 10000000000ull;
	while (!p.sa.fin_seen && ml_time_ns() < end) {
		if (p.sa.rx_bytes > consumed) {
			assert_int_equal(
			    net_stream_consume(p.sa.conn, sid, p.sa.rx_bytes - consumed), 0);
			consumed = p.sa.rx_bytes;
		}
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	assert_true(p.sa.fin_seen);
	assert_true(p.sa.rx_bytes == total);
	assert_true(p.sa.bad_bytes == 0);
	free(buf);
	pair_close(&p);
}

/* Two real processes: a forked child runs an echo endpoint on its own loop
 * and exits when its only peer closes. */
static void child_closed(struct net_conn *c, const struct net_close_info *info, void *u)
{
	(void)c;
	(void)info;
	event_base_loopbreak(u);
}

static void child_data(struct net_conn *c, int64_t sid, const uint8_t *data, size_t len, bool fin,
                       void *u)
{
	(void)u;
	net_stream_send(c, sid, data, len, fin);
}

static void test_net_quic_two_processes(void **state)
{
	(void)state;
	struct net_ident ia;
	uint8_t seed[32];
	memset(seed, 5, sizeof(seed));
	assert_int_equal(net_ident_from_seed(&ia, seed), 0);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		struct event_base *base = net_event_base_new();
		struct net_endpoint_config cfg;
		net_endpoint_default_config(&cfg);
		cfg.host = "127.0.0.1";
		cfg.ident = &ia;
		cfg.accept = true;
		cfg.cb.on_stream_data = child_data;
		cfg.cb.on_conn_closed = child_closed;
		cfg.user = base;
		struct net_endpoint *ep;
		uint16_t port = 0;
		if (net_endpoint_new(&ep, base, &cfg) == 0)
			port = net_endpoint_port(ep);
		if (write(fds[1], &port, sizeof(port)) != sizeof(port) || !port)
			_exit(1);
		close(fds[1]);
		struct timeval limit = {20, 0};
		event_base_loopexit(base, &limit);
		event_base_dispatch(base);
		net_endpoint_free(ep);
		event_base_free(base);
		_exit(0);
	}
	close(fds[1]);
	uint16_t port = 0;
	assert_int_equal(read(fds[0], &port, sizeof(port)), sizeof(port));
	close(fds[0]);
	assert_true(port != 0);

	struct pair p;
	pair_open(&p, 0, false);
	assert_int_equal(net_connect_host(p.b, "127.0.0.1", port, ia.pk, NULL, &p.cb), 0);
	assert_true(run_until(&p, &p.sb.ready, 1, 5000));
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	const size_t total = 4 << 20;
	uint8_t *buf = malloc(total);
	for (size_t i = 0; i < total; i++)
		buf[i] = pattern(i);
	assert_int_equal(net_stream_send(p.cb, sid, buf, total, true), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 1, 20000));
	size_t k = (size_t)(sid / 4);
	assert_int_equal(p.sb.rx_len[k], total);
	assert_memory_equal(p.sb.rx[k], buf, total);
	assert_int_equal(net_conn_close(p.cb, 0, "done"), 0);
	assert_true(run_until(&p, &p.sb.closed, 1, 2000));
	int status = -1;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	free(buf);
	pair_close(&p);
}

/* Endpoints bound to the wildcard address (as a node is) and over IPv6. */
static void wildcard_case(const char *bind_host, const char *dial_host)
{
	struct pair p;
	memset(&p, 0, sizeof(p));
	uint8_t seed[32];
	memset(seed, 3, sizeof(seed));
	assert_int_equal(net_ident_from_seed(&p.ia, seed), 0);
	memset(seed, 4, sizeof(seed));
	assert_int_equal(net_ident_from_seed(&p.ib, seed), 0);
	p.base = net_event_base_new();
	assert_non_null(p.base);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.host = bind_host;
	cfg.cb = (struct net_quic_callbacks){.on_conn_ready = s_ready,
	                                     .on_stream_data = s_data,
	                                     .on_stream_close = s_sclose,
	                                     .on_conn_closed = s_closed};
	cfg.ident = &p.ia;
	cfg.accept = true;
	cfg.user = &p.sa;
	if (net_endpoint_new(&p.a, p.base, &cfg) != 0) {
		print_message("skipping %s: %s\n", bind_host, ml_last_error());
		event_base_free(p.base);
		return;
	}
	cfg.ident = &p.ib;
	cfg.accept = false;
	cfg.user = &p.sb;
	assert_int_equal(net_endpoint_new(&p.b, p.base, &cfg), 0);
	p.sa.echo = true;
	assert_int_equal(
	    net_connect_host(p.b, dial_host, net_endpoint_port(p.a), p.ia.pk, NULL, &p.cb), 0);
	assert_true(run_until(&p, &p.sb.ready, 1, 3000));
	int64_t sid;
	assert_int_equal(net_stream_open(p.cb, &sid), 0);
	uint8_t *big = calloc(1, 300000);
	assert_int_equal(net_stream_send(p.cb, sid, big, 300000, true), 0);
	assert_true(run_until(&p, &p.sb.stream_closed, 1, 5000));
	assert_int_equal(p.sb.rx_len[sid / 4], 300000);
	assert_int_equal(p.sa.closed + p.sb.closed, 0);
	free(big);
	pair_close(&p);
}

static void test_net_quic_wildcard_and_ipv6(void **state)
{
	(void)state;
	wildcard_case(NULL, "127.0.0.1");
	wildcard_case("::1", "::1");
	wildcard_case("::", "127.0.0.1");
}

int main(void)
{
	if (!getenv("MESH_LLM_LOG"))
		ml_log_set_level(ML_LOG_WARN);
	if (getenv("NET_TEST_FILTER")) /* e.g. NET_TEST_FILTER='*two_proc*' */
		cmocka_set_test_filter(getenv("NET_TEST_FILTER"));
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_net_quic_handshake),
	    cmocka_unit_test(test_net_quic_send_on_ready),
	    cmocka_unit_test(test_net_quic_dial_failures),
	    cmocka_unit_test(test_net_quic_wrong_id_refused),
	    cmocka_unit_test(test_net_quic_acceptor_refuses),
	    cmocka_unit_test(test_net_quic_echo),
	    cmocka_unit_test(test_net_quic_bulk_50mb),
	    cmocka_unit_test(test_net_quic_100_streams),
	    cmocka_unit_test(test_net_quic_peer_close),
	    cmocka_unit_test(test_net_quic_idle_timeout),
	    cmocka_unit_test(test_net_quic_datagram),
	    cmocka_unit_test(test_net_quic_delay_knob),
	    cmocka_unit_test(test_net_quic_lossy_bulk),
	    cmocka_unit_test(test_net_quic_peer_gone),
	    cmocka_unit_test(test_net_quic_stream_reset),
	    cmocka_unit_test(test_net_quic_garbage_packets),
	    cmocka_unit_test(test_net_quic_wildcard_and_ipv6),
	    cmocka_unit_test(test_net_quic_manual_credit),
	    cmocka_unit_test(test_net_quic_two_processes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
