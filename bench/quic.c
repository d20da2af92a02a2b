/* QUIC transport benchmark on loopback: handshake time, 64-byte echo RTT
 * (p50/p99) and one-stream bulk throughput, without and with a 10 ms one-way
 * delay on each side (the net_endpoint_set_netem knob). The server runs its
 * own event loop on a second thread, as a peer process would.
 *
 *   build/bench-quic [--quick]                                              */
#include "base/ml_cpu.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "net/net_ident.h"
#include "net/net_quic.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- server thread: echo streams, or sink streams whose first byte is 'S' */

struct server {
	struct event_base *base;
	struct net_endpoint *ep;
	struct net_ident id;
	atomic_int stop;
	atomic_uint delay_us;
	unsigned applied_delay_us;
	struct event *tick;
	uint16_t port;
	pthread_t th;
};

enum { MODE_UNKNOWN = 0, MODE_ECHO = 1, MODE_SINK = 2 };

static void srv_data(struct net_conn *c, int64_t sid, const uint8_t *data, size_t len, bool fin,
                     void *u)
{
	(void)u;
	uintptr_t mode = (uintptr_t)net_stream_user(c, sid);
	if (mode == MODE_UNKNOWN && len) {
		mode = data[0] == 'S' ? MODE_SINK : MODE_ECHO;
		net_stream_set_user(c, sid, (void *)mode);
	}
	if (mode == MODE_SINK) {
		if (fin)
			net_stream_send(c, sid, "done", 4, true);
	} else if (len || fin) {
		net_stream_send(c, sid, data, len, fin);
	}
}

static void srv_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	(void)fd;
	(void)what;
	if (atomic_load(&s->stop))
		event_base_loopbreak(s->base);
	unsigned d = atomic_load(&s->delay_us);
	if (d != s->applied_delay_us) {
		net_endpoint_set_netem(s->ep, d, 0, 0);
		s->applied_delay_us = d;
	}
}

static void *srv_main(void *arg)
{
	struct server *s = arg;
	event_base_dispatch(s->base);
	return NULL;
}

static struct event_base *new_base(void)
{
	struct event_config *cfg = event_config_new();
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	struct event_base *b = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return b;
}

static int server_start(struct server *s)
{
	memset(s, 0, sizeof(*s));
	if (net_ident_generate(&s->id))
		return -1;
	s->base = new_base();
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.ident = &s->id;
	cfg.host = "127.0.0.1";
	cfg.accept = true;
	cfg.cb.on_stream_data = srv_data;
	if (net_endpoint_new(&s->ep, s->base, &cfg))
		return -1;
	s->port = net_endpoint_port(s->ep);
	s->tick = event_new(s->base, -1, EV_PERSIST, srv_tick, s);
	struct timeval tv = {0, 1000};
	event_add(s->tick, &tv);
	return pthread_create(&s->th, NULL, srv_main, s);
}

static void server_stop(struct server *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->th, NULL);
	event_free(s->tick);
	net_endpoint_free(s->ep);
	event_base_free(s->base);
}

/* ---- client ------------------------------------------------------------- */

struct client {
	struct event_base *base;
	struct net_endpoint *ep;
	struct net_ident id;
	int ready, closed;
	uint64_t rx;
	bool fin;
};

static void cli_ready(struct net_conn *c, void *u)
{
	(void)c;
	((struct client *)u)->ready++;
}

static void cli_closed(struct net_conn *c, const struct net_close_info *info, void *u)
{
	(void)c;
	struct client *cl = u;
	cl->closed++;
	if (info->err != ML_ERR_CLOSED)
		fprintf(stderr, "connection failed: %s\n", info->reason);
}

static void cli_data(struct net_conn *c, int64_t sid, const uint8_t *data, size_t len, bool fin,
                     void *u)
{
	(void)c;
	(void)sid;
	(void)data;
	struct client *cl = u;
	cl->rx += len;
	if (fin)
		cl->fin = true;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	int i = (int)(p * (n - 1) + 0.5);
	return v[i];
}

static bool wait_for(struct client *cl, const int *flag, int want, double timeout_s)
{
	double end = ml_time_s() + timeout_s;
	while (*flag < want && ml_time_s() < end)
		event_base_loop(cl->base, EVLOOP_ONCE);
	return *flag >= want;
}

static struct net_conn *dial(struct client *cl, struct server *s, double *ms)
{
	struct net_conn *c = NULL;
	int want = cl->ready + 1;
	double t0 = ml_time_s();
	if (net_connect_host(cl->ep, "127.0.0.1", s->port, s->id.pk, NULL, &c) != 0)
		return NULL;
	if (!wait_for(cl, &cl->ready, want, 5))
		return NULL;
	*ms = (ml_time_s() - t0) * 1e3;
	return c;
}

static void set_delay(struct client *cl, struct server *s, unsigned us)
{
	net_endpoint_set_netem(cl->ep, us, 0, 0);
	atomic_store(&s->delay_us, us);
	/* let the server thread pick it up */
	double end = ml_time_s() + 0.01;
	while (ml_time_s() < end)
		event_base_loop(cl->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void run_suite(struct client *cl, struct server *s, const char *label, int n_hs, int n_rtt,
                      uint64_t bulk_bytes, int bulk_runs)
{
	/* handshakes: connect, wait for ready, close */
	double *hs = calloc((size_t)n_hs, sizeof(double));
	for (int i = 0; i < n_hs; i++) {
		struct net_conn *c = dial(cl, s, &hs[i]);
		if (!c) {
			fprintf(stderr, "handshake failed\n");
			exit(1);
		}
		int want = cl->closed + 1;
		net_conn_close(c, 0, "bench");
		wait_for(cl, &cl->closed, want, 2);
	}
	double hs_med = pct(hs, n_hs, 0.5), hs_max = hs[n_hs - 1];

	double dummy;
	struct net_conn *c = dial(cl, s, &dummy);
	if (!c)
		exit(1);
	/* echo RTT on one stream (warm-up 10) */
	int64_t sid;
	net_stream_open(c, &sid);
	double *rtt = calloc((size_t)n_rtt, sizeof(double));
	uint8_t msg[64];
	memset(msg, 'E', sizeof(msg));
	for (int i = -10; i < n_rtt; i++) {
		uint64_t want = cl->rx + sizeof(msg);
		double t0 = ml_time_s();
		net_stream_send(c, sid, msg, sizeof(msg), false);
		double end = t0 + 5;
		while (cl->rx < want && ml_time_s() < end)
			event_base_loop(cl->base, EVLOOP_ONCE);
		if (i >= 0)
			rtt[i] = (ml_time_s() - t0) * 1e6;
	}
	double r50 = pct(rtt, n_rtt, 0.5), r99 = pct(rtt, n_rtt, 0.99);

	/* bulk: one stream, at most 16 MiB unacknowledged */
	double *mbs = calloc((size_t)bulk_runs, sizeof(double));
	size_t piece = 256 << 10;
	uint8_t *buf = malloc(piece);
	memset(buf, 'S', piece);
	for (int r = 0; r < bulk_runs; r++) {
		int64_t bs;
		net_stream_open(c, &bs);
		cl->fin = false;
		uint64_t sent = 0;
		double t0 = ml_time_s(), end = t0 + 120;
		while (!cl->fin && ml_time_s() < end) {
			while (sent < bulk_bytes && net_stream_unacked(c, bs) < (16u << 20)) {
				size_t n =
				    bulk_bytes - sent < piece ? (size_t)(bulk_bytes - sent) : piece;
				sent += n;
				net_stream_send(c, bs, buf, n, sent == bulk_bytes);
			}
			event_base_loop(cl->base, EVLOOP_ONCE);
		}
		mbs[r] = (double)bulk_bytes / (ml_time_s() - t0) / 1e6;
	}
	double bmed = pct(mbs, bulk_runs, 0.5), bmin = mbs[0], bmax = mbs[bulk_runs - 1];
	struct net_conn_info info;
	net_conn_get_info(c, &info);
	int want = cl->closed + 1;
	net_conn_close(c, 0, "bench done");
	wait_for(cl, &cl->closed, want, 2);

	printf("%-16s handshake median %7.2f ms (max %.2f, n=%d) | 64 B echo RTT p50 %8.1f us p99 "
	       "%8.1f us (n=%d) | "
	       "bulk %.0f MiB x%d: median %6.1f MB/s (min %.1f max %.1f) | srtt %.2f ms\n",
	       label, hs_med, hs_max, n_hs, r50, r99, n_rtt, (double)bulk_bytes / (1 << 20),
	       bulk_runs, bmed, bmin, bmax, (double)info.smoothed_rtt_ns / 1e6);
	free(hs);
	free(rtt);
	free(mbs);
	free(buf);
}

static void git_rev(char *buf, size_t len)
{
	snprintf(buf, len, "unknown");
	FILE *f = popen("git rev-parse --short HEAD 2>/dev/null", "r");
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = 0;
	pclose(f);
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	if (!getenv("MESH_LLM_LOG"))
		ml_log_set_level(ML_LOG_WARN);
	char rev[64];
	git_rev(rev, sizeof(rev));
	printf("bench-quic: git %s; cpu features: %s; %d logical cores\n", rev,
	       ml_cpu_feature_string(), ml_cpu_count_logical());
	printf("loopback, ngtcp2 0.12 + GnuTLS, server on its own thread, UDP GSO/GRO %s\n",
	       getenv("MESH_LLM_NO_GSO") ? "off (MESH_LLM_NO_GSO)" : "on where the kernel has it");

	struct server s;
	if (server_start(&s) != 0) {
		fprintf(stderr, "server: %s\n", ml_last_error());
		return 1;
	}
	struct client cl;
	memset(&cl, 0, sizeof(cl));
	cl.base = new_base();
	net_ident_generate(&cl.id);
	struct net_endpoint_config cfg;
	net_endpoint_default_config(&cfg);
	cfg.ident = &cl.id;
	cfg.host = "127.0.0.1";
	cfg.cb.on_conn_ready = cli_ready;
	cfg.cb.on_conn_closed = cli_closed;
	cfg.cb.on_stream_data = cli_data;
	cfg.user = &cl;
	if (net_endpoint_new(&cl.ep, cl.base, &cfg) != 0) {
		fprintf(stderr, "client: %s\n", ml_last_error());
		return 1;
	}

	run_suite(&cl, &s, "no delay", quick ? 5 : 20, quick ? 200 : 2000,
	          quick ? 20u << 20 : 100u << 20, quick ? 1 : 3);
	set_delay(&cl, &s, 10000);
	run_suite(&cl, &s, "10 ms each way", quick ? 3 : 5, quick ? 20 : 100,
	          quick ? 10u << 20 : 50u << 20, quick ? 1 : 3);
	set_delay(&cl, &s, 0);

	net_endpoint_free(cl.ep);
	event_base_free(cl.base);
	server_stop(&s);
	return 0;
}
