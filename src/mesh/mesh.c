/* The mesh node: connections, HELLO admission, gossip, liveness, status
 * and application streams over one net_quic endpoint (see mesh.h). */
#include "mesh/mesh.h"

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "mesh/mesh_auth.h"
#include "mesh/mesh_local.h"
#include "net/net_quic.h"

#include <event2/event.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS (1000000ull)
#define TICK_MS 100
#define GOSSIP_BATCH 48 /* announcements per GOSSIP message (<= 1 MiB) */
#define LEAVE_WAIT_MS 1000
#define DIAL_GRACE_MS 1500 /* the bigger id waits this long for the smaller to dial */

struct mesh_stream {
	struct mesh_conn *c;
	int64_t sid;
	uint8_t type; /* 0 until the stream-type byte arrived */
	bool local;   /* opened by us */
	bool taken;   /* the application set callbacks */
	bool closed;  /* reset requested; waiting for on_stream_close */
	struct net_frame_decoder dec;
	struct mesh_stream_callbacks cb;
	void *user;
	struct mesh_stream *next, *prev;
};

struct mesh_conn {
	struct mesh *mesh;
	struct net_conn *nc;
	struct mesh_conn *next, *prev;
	uint8_t peer[NET_ID_LEN];
	bool dialer, ready, authed, superseded;
	struct mesh_auth auth;
	struct mesh_stream *ctl;
	struct mesh_stream *streams;
	uint64_t ready_ns;
	uint64_t next_ping_ns;
	int join_token; /* >= 0 when dialed to join through token #i */
	struct mesh_addr addr;
	char addr_str[MESH_ADDR_STR_LEN];
};

struct mesh {
	struct event_base *base;
	struct mesh_config cfg;
	struct net_ident ident;
	struct net_endpoint *ep;
	struct event *tick_ev, *announce_ev, *leave_ev;
	uint8_t mesh_id[MESH_ID_LEN];
	uint8_t secret[MESH_SECRET_LEN];
	char version[MESH_NAME_MAX + 1];
	struct mesh_token *tokens; /* cfg.join decoded */
	size_t n_tokens;
	bool joined, leaving;
	bool resumed; /* continued a mesh from cfg.mesh_file */
	uint64_t join_next_ns;
	uint32_t join_attempt;
	struct mesh_conn *conns;
	struct mesh_members members;
	struct mesh_ann *self; /* what we advertise; seq bumps on every send */
	uint64_t next_announce_ns;
	bool announce_pending;
	uint64_t ping_nonce;
	uint64_t leave_deadline_ns;
	struct mesh_traffic traffic;
	void (*leave_done)(void *);
	void *leave_user;
};

static void id_short(const uint8_t id[NET_ID_LEN], char out[9])
{
	net_id_short(id, out);
}

static uint64_t now_ns(void)
{
	return ml_time_ns();
}

/* --- sending --------------------------------------------------------- */

/* Sends whole framed messages on the control stream, counting them. */
static int ctl_send(struct mesh_conn *c, struct net_buf *b)
{
	if (!c->ctl || net_buf_error(b))
		return net_buf_error(b) ? net_buf_error(b) : ML_ERR_CLOSED;
	int rc = net_stream_send(c->nc, c->ctl->sid, b->data, b->len, false);
	if (rc == 0) {
		struct mesh_traffic *t = &c->mesh->traffic;
		size_t off = 0;
		struct net_frame_msg msg;
		int n;
		while (off < b->len && (n = net_frame_parse(NET_STREAM_CONTROL, b->data + off,
		                                            b->len - off, &msg)) > 0) {
			t->tx_msgs[msg.type]++;
			t->tx_bytes[msg.type] += (uint64_t)n;
			off += (size_t)n;
		}
	}
	return rc;
}

static void conn_close(struct mesh_conn *c, uint64_t code, const char *reason)
{
	if (c->nc)
		net_conn_close(c->nc, code, reason);
}

/* Re-signs our announcement with the next seq into |out|. */
static int self_encode(struct mesh *m, struct net_buf *out)
{
	m->self->seq++;
	m->self->n_rtts = 0;
	for (size_t i = 0; i < m->members.n && m->self->n_rtts < MESH_ANN_MAX_RTTS; i++) {
		struct mesh_member *mm = m->members.v[i];
		if (mm->self || !mm->conn || mm->rtt_us == 0)
			continue;
		struct mesh_rtt *r = &m->self->rtts[m->self->n_rtts++];
		memcpy(r->id, mm->id, NET_ID_LEN);
		r->rtt_us = mm->rtt_us;
	}
	net_buf_reset(out);
	int rc = mesh_ann_encode(m->self, &m->ident, out);
	if (rc == 0)
		rc = mesh_members_set_self(&m->members, m->self, out->data, out->len, now_ns());
	return rc;
}

static void send_gossip(struct mesh *m, struct mesh_conn *only, struct mesh_conn *skip,
                        const uint8_t *skip_id, const uint8_t *const *anns, const size_t *lens,
                        size_t n)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	if (mesh_gossip_put(&b, anns, lens, n) == 0) {
		for (struct mesh_conn *c = m->conns; c; c = c->next) {
			if (!c->authed || c->superseded || c == skip || (only && c != only))
				continue;
			if (skip_id && memcmp(c->peer, skip_id, NET_ID_LEN) == 0)
				continue;
			ctl_send(c, &b);
		}
	}
	net_buf_free(&b);
}

/* Announces ourselves to every authenticated peer. */
static void announce(struct mesh *m)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	m->announce_pending = false;
	m->next_announce_ns = now_ns() + (uint64_t)m->cfg.announce_ms * MS;
	if (self_encode(m, &b) == 0) {
		const uint8_t *p = b.data;
		size_t l = b.len;
		send_gossip(m, NULL, NULL, NULL, &p, &l, 1);
	} else {
		ML_WARN("mesh: cannot encode our announcement: %s", ml_last_error());
	}
	net_buf_free(&b);
}

/* Sends every live member's announcement (ours included) to |c|. */
static void send_full_table(struct mesh *m, struct mesh_conn *c)
{
	const uint8_t *anns[GOSSIP_BATCH];
	size_t lens[GOSSIP_BATCH], n = 0;
	for (size_t i = 0; i < m->members.n; i++) {
		struct mesh_member *mm = m->members.v[i];
		if (!mm->raw || (mm->state != MESH_ALIVE && mm->state != MESH_SUSPECT))
			continue;
		if (memcmp(mm->id, c->peer, NET_ID_LEN) == 0)
			continue;
		anns[n] = mm->raw;
		lens[n] = mm->raw_len;
		if (++n == GOSSIP_BATCH) {
			send_gossip(m, c, NULL, NULL, anns, lens, n);
			n = 0;
		}
	}
	if (n)
		send_gossip(m, c, NULL, NULL, anns, lens, n);
}

static void schedule_announce(struct mesh *m)
{
	if (!m->announce_pending) {
		m->announce_pending = true;
		event_active(m->announce_ev, EV_TIMEOUT, 0);
	}
}

static void on_announce_ev(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct mesh *m = arg;
	if (m->announce_pending && !m->leaving)
		announce(m);
}

/* --- streams ------------------------------------------------------------- */

static struct mesh_stream *stream_new(struct mesh_conn *c, int64_t sid, bool local)
{
	struct mesh_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->c = c;
	s->sid = sid;
	s->local = local;
	net_frame_decoder_init(&s->dec, 0);
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	net_stream_set_user(c->nc, sid, s);
	return s;
}

static void stream_free(struct mesh_stream *s, int err)
{
	struct mesh_conn *c = s->c;
	if (s->taken && s->cb.on_close)
		s->cb.on_close(s, err, s->user);
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (c->ctl == s)
		c->ctl = NULL;
	if (c->nc)
		net_stream_set_user(c->nc, s->sid, NULL);
	net_frame_decoder_free(&s->dec);
	free(s);
}

static void stream_reject(struct mesh_stream *s, uint64_t code)
{
	if (!s->closed) {
		s->closed = true;
		net_stream_shutdown(s->c->nc, s->sid, code);
	}
}

/* --- the control stream --------------------------------------------------- */

static void conn_authed(struct mesh_conn *c);

/* Does |peer|'s latest announcement say it has a direct link to |origin|? */
static bool peer_links_to(const struct mesh *m, const uint8_t peer[NET_ID_LEN],
                          const uint8_t origin[NET_ID_LEN])
{
	const struct mesh_member *pm = mesh_members_find(&m->members, peer);
	if (!pm || !pm->ann)
		return false;
	for (unsigned i = 0; i < pm->ann->n_rtts; i++)
		if (memcmp(pm->ann->rtts[i].id, origin, NET_ID_LEN) == 0)
			return true;
	return false;
}

/* Forwards an announcement of |origin| that was news to us. Changes go to
 * every peer (but the sender and the origin); heartbeats only to peers
 * that have no direct link to the origin, which in a full mesh is nobody,
 * so the periodic traffic stays O(n) per node instead of O(n^2). */
static void relay_ann(struct mesh *m, struct mesh_conn *from, const uint8_t *origin,
                      const uint8_t *raw, size_t len, bool change)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	if (mesh_gossip_put(&b, &raw, &len, 1) == 0)
		for (struct mesh_conn *c = m->conns; c; c = c->next) {
			if (!c->authed || c->superseded || c == from ||
			    memcmp(c->peer, origin, NET_ID_LEN) == 0)
				continue;
			if (!change && peer_links_to(m, c->peer, origin))
				continue;
			ctl_send(c, &b);
		}
	net_buf_free(&b);
}

struct gossip_ctx {
	struct mesh *m;
	struct mesh_conn *c;
	struct mesh_ann *ann;
	int bad;
};

static int on_gossip_ann(const uint8_t *raw, size_t len, void *user)
{
	struct gossip_ctx *g = user;
	struct mesh *m = g->m;
	char who[9];
	if (mesh_ann_decode(g->ann, raw, len) != 0) {
		g->bad = MESH_CLOSE_PROTO;
		return ML_ERR_FORMAT;
	}
	if (mesh_ann_verify(raw, len) != 0) {
		id_short(g->ann->id, who);
		ml_error(ML_ERR_AUTH, "announcement of %s has a bad signature", who);
		g->bad = MESH_CLOSE_AUTH;
		return ML_ERR_AUTH;
	}
	bool direct = memcmp(g->ann->id, g->c->peer, NET_ID_LEN) == 0;
	int rc = mesh_members_apply(&m->members, g->ann, raw, len, direct, now_ns());
	struct mesh_member *mm = mesh_members_find(&m->members, g->ann->id);
	if (mm && !mm->self && !mm->conn) {
		for (struct mesh_conn *c = m->conns; c; c = c->next)
			if (c->authed && !c->superseded && memcmp(c->peer, mm->id, NET_ID_LEN) == 0)
				mm->conn = c;
	}
	if (rc == MESH_APPLY_CHANGE || rc == MESH_APPLY_REFRESH)
		relay_ann(m, g->c, g->ann->id, raw, len, rc == MESH_APPLY_CHANGE);
	return 0;
}

static void relay_leaving(struct mesh *m, struct mesh_conn *from, const uint8_t *payload,
                          size_t len, const uint8_t *origin)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	if (net_frame_put(&b, NET_STREAM_CONTROL, NET_MSG_PEER_LEAVING, payload, len) == 0)
		for (struct mesh_conn *c = m->conns; c; c = c->next)
			if (c->authed && !c->superseded && c != from &&
			    memcmp(c->peer, origin, NET_ID_LEN) != 0)
				ctl_send(c, &b);
	net_buf_free(&b);
}

/* One message on the control stream. Returns 0 or a close code. */
static uint64_t ctl_msg(struct mesh_conn *c, const struct net_frame_msg *msg)
{
	struct mesh *m = c->mesh;
	char who[9];
	id_short(c->peer, who);
	if (!c->authed) {
		struct net_buf out;
		net_buf_init(&out, 0);
		int rc = mesh_auth_recv(&c->auth, msg->type, msg->payload, msg->len, &out);
		if (rc >= 0 && out.len)
			ctl_send(c, &out);
		net_buf_free(&out);
		if (rc < 0) {
			if (c->join_token >= 0)
				ML_ERROR("mesh: could not join through %s: %s (is the invite token "
				         "right?)",
				         who, c->auth.reason);
			else
				ML_WARN("mesh: refused %s connection with %s: %s",
				        c->dialer ? "outgoing" : "incoming", who, c->auth.reason);
			return rc == ML_ERR_AUTH ? MESH_CLOSE_AUTH : MESH_CLOSE_PROTO;
		}
		if (rc == 1)
			conn_authed(c);
		return 0;
	}
	mesh_members_heard(&m->members, c->peer, now_ns());
	switch (msg->type) {
	case NET_MSG_GOSSIP: {
		struct gossip_ctx g = {.m = m, .c = c, .ann = malloc(sizeof(struct mesh_ann))};
		if (!g.ann)
			return 0; /* drop it; the next round repeats it */
		int rc = mesh_gossip_walk(msg->payload, msg->len, on_gossip_ann, &g);
		free(g.ann);
		if (rc) {
			ML_WARN("mesh: bad gossip from %s (%s); closing the connection", who,
			        ml_last_error());
			return g.bad ? (uint64_t)g.bad : MESH_CLOSE_PROTO;
		}
		return 0;
	}
	case NET_MSG_PEER_LEAVING: {
		struct mesh_leaving l;
		if (mesh_leaving_decode(&l, msg->payload, msg->len) != 0) {
			ML_WARN("mesh: bad PEER_LEAVING from %s (%s); closing the connection", who,
			        ml_last_error());
			return MESH_CLOSE_PROTO;
		}
		if (mesh_members_leave(&m->members, &l, now_ns()) == 1)
			relay_leaving(m, c, msg->payload, msg->len, l.id);
		return 0;
	}
	case NET_MSG_PING: {
		uint64_t nonce, t;
		if (mesh_ping_decode(msg->payload, msg->len, &nonce, &t))
			return MESH_CLOSE_PROTO;
		struct net_buf b;
		net_buf_init(&b, 0);
		mesh_ping_put(&b, NET_MSG_PONG, nonce, t);
		ctl_send(c, &b);
		net_buf_free(&b);
		return 0;
	}
	case NET_MSG_PONG: {
		uint64_t nonce, t;
		if (mesh_ping_decode(msg->payload, msg->len, &nonce, &t))
			return MESH_CLOSE_PROTO;
		uint64_t now = now_ns();
		struct mesh_member *mm = mesh_members_find(&m->members, c->peer);
		if (mm && t <= now && now - t < 60000 * MS) /* our own clock, echoed */
			mm->ping_us = (uint32_t)((now - t) / 1000) + 1;
		return 0;
	}
	case NET_MSG_PEER_DOWN:
		return 0; /* advisory; every node detects failures itself */
	default:
		ML_WARN("mesh: unexpected %s from %s after the handshake; closing the connection",
		        net_msg_type_name(msg->type), who);
		return MESH_CLOSE_PROTO;
	}
}

/* --- net callbacks -------------------------------------------------------- */

static struct mesh_conn *conn_new(struct mesh *m, struct net_conn *nc, bool dialer)
{
	struct mesh_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->mesh = m;
	c->nc = nc;
	c->dialer = dialer;
	c->join_token = -1;
	c->next = m->conns;
	if (m->conns)
		m->conns->prev = c;
	m->conns = c;
	return c;
}

static void conn_unlink(struct mesh_conn *c)
{
	struct mesh *m = c->mesh;
	if (c->prev)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

static void cb_ready(struct net_conn *nc, void *user)
{
	struct mesh *m = user;
	struct mesh_conn *c = net_conn_user(nc);
	if (!c) {
		if (!(c = conn_new(m, nc, false))) {
			net_conn_close(nc, MESH_CLOSE_PROTO, "out of memory");
			return;
		}
		net_conn_set_user(nc, c);
		socklen_t sl;
		const struct sockaddr *sa = net_conn_peer_addr(nc, &sl);
		if (sa)
			mesh_addr_from_sockaddr(&c->addr, sa);
		mesh_addr_str(&c->addr, c->addr_str);
	}
	memcpy(c->peer, net_conn_peer_id(nc), NET_ID_LEN);
	c->ready = true;
	c->ready_ns = now_ns();
	/* The proof covers keying material exported from this TLS session, so
	 * a proof captured on one connection is worthless on any other. */
	uint8_t binding[32];
	if (net_conn_export_keying_material(nc, "EXPORTER-mesh-llm-hello", NULL, 0, binding,
					    sizeof(binding)) != 0) {
		net_conn_close(nc, MESH_CLOSE_PROTO, "cannot derive the TLS channel binding");
		return;
	}
	mesh_auth_init(&c->auth, c->dialer, m->secret, m->ident.pk, c->peer, m->self->incarnation,
	               binding, sizeof(binding));
	if (c->dialer) {
		int64_t sid;
		struct mesh_stream *s;
		if (net_stream_open(nc, &sid) != 0 || !(s = stream_new(c, sid, true))) {
			net_conn_close(nc, MESH_CLOSE_PROTO, "cannot open the control stream");
			return;
		}
		s->type = NET_STREAM_CONTROL;
		s->dec.stream_type = NET_STREAM_CONTROL; /* replies carry no type byte */
		c->ctl = s;
		uint8_t type = NET_STREAM_CONTROL;
		net_stream_send(nc, sid, &type, 1, false);
		struct net_buf b;
		net_buf_init(&b, 0);
		mesh_auth_start(&c->auth, &b);
		ctl_send(c, &b);
		net_buf_free(&b);
	}
}

static void cb_stream_open(struct net_conn *nc, int64_t sid, void *user)
{
	(void)user;
	struct mesh_conn *c = net_conn_user(nc);
	if (!c || !stream_new(c, sid, false))
		net_stream_shutdown(nc, sid, MESH_STREAM_REFUSED);
}

/* A peer stream's type byte arrived. Returns false when it was refused. */
static bool stream_typed(struct mesh_conn *c, struct mesh_stream *s)
{
	struct mesh *m = c->mesh;
	char who[9];
	id_short(c->peer, who);
	if (s->type == NET_STREAM_CONTROL) {
		if (c->dialer || c->ctl) {
			ML_WARN("mesh: %s opened a second control stream; closing the connection",
			        who);
			conn_close(c, MESH_CLOSE_PROTO, "unexpected control stream");
			return false;
		}
		c->ctl = s;
		return true;
	}
	if (!c->authed) {
		ML_WARN("mesh: %s opened a %s stream before authenticating; reset", who,
		        net_stream_type_name(s->type));
		stream_reject(s, MESH_STREAM_REFUSED);
		return false;
	}
	if (m->cfg.cb.on_stream)
		m->cfg.cb.on_stream(m, s, s->type, c->peer, m->cfg.user);
	if (!s->taken) {
		ML_DEBUG("mesh: nobody takes %s streams from %s; reset",
		         net_stream_type_name(s->type), who);
		stream_reject(s, MESH_STREAM_REFUSED);
		return false;
	}
	return true;
}

static void cb_stream_data(struct net_conn *nc, int64_t sid, const uint8_t *data, size_t len,
                           bool fin, void *user)
{
	(void)user;
	struct mesh_conn *c = net_conn_user(nc);
	struct mesh_stream *s = net_stream_user(nc, sid);
	if (!c || !s || s->closed)
		return;
	char who[9];
	id_short(c->peer, who);
	while (len > 0) {
		struct net_frame_msg msg;
		uint8_t had_type = s->dec.stream_type;
		int n = net_frame_decoder_feed(&s->dec, data, len, &msg);
		if (!had_type && s->dec.stream_type && !s->local) {
			s->type = s->dec.stream_type;
			if (!stream_typed(c, s))
				return;
		}
		if (n == ML_ERR_INCOMPLETE)
			break;
		if (n < 0) {
			ML_WARN("mesh: malformed %s stream from %s (%s); %s",
			        net_stream_type_name(s->type), who, ml_last_error(),
			        s == c->ctl ? "closing the connection" : "reset");
			if (s == c->ctl)
				conn_close(c, MESH_CLOSE_PROTO, "malformed control stream");
			else
				stream_reject(s, MESH_STREAM_BAD);
			return;
		}
		data += n;
		len -= (size_t)n;
		c->mesh->traffic.rx_msgs[msg.type]++;
		c->mesh->traffic.rx_bytes[msg.type] += NET_FRAME_HDR_LEN + (uint64_t)msg.len;
		if (s == c->ctl) {
			uint64_t code = ctl_msg(c, &msg);
			if (code) {
				conn_close(c, code,
				           code == MESH_CLOSE_AUTH ? "mesh authentication failed"
				                                   : "protocol error");
				return;
			}
			if (!c->nc || net_stream_user(nc, sid) != s)
				return;
		} else if (s->taken && s->cb.on_msg) {
			s->cb.on_msg(s, msg.type, msg.payload, msg.len, s->user);
			if (net_stream_user(nc, sid) != s || s->closed)
				return;
		}
	}
	if (fin) {
		if (s == c->ctl) {
			ML_WARN("mesh: %s ended its control stream; closing the connection", who);
			conn_close(c, MESH_CLOSE_PROTO, "control stream ended");
		} else if (s->taken && s->cb.on_fin) {
			s->cb.on_fin(s, s->user);
		}
	}
}

static void cb_stream_close(struct net_conn *nc, int64_t sid, uint64_t app_error, void *user)
{
	(void)user;
	struct mesh_conn *c = net_conn_user(nc);
	struct mesh_stream *s = net_stream_user(nc, sid);
	if (!c || !s)
		return;
	if (s == c->ctl && !c->superseded) {
		char who[9];
		id_short(c->peer, who);
		ML_DEBUG("mesh: control stream with %s closed; closing the connection", who);
		conn_close(c, MESH_CLOSE_PROTO, "control stream closed");
	}
	stream_free(s, app_error == 0 && !s->closed ? 0 : ML_ERR_CLOSED);
}

static void cb_acked(struct net_conn *nc, int64_t sid, uint64_t unacked, void *user)
{
	(void)user;
	struct mesh_stream *s = net_stream_user(nc, sid);
	if (s && s->taken && s->cb.on_acked && !s->closed)
		s->cb.on_acked(s, unacked, s->user);
}

static void cb_closed(struct net_conn *nc, const struct net_close_info *info, void *user)
{
	struct mesh *m = user;
	struct mesh_conn *c = net_conn_user(nc);
	if (!c)
		return;
	char who[9];
	id_short(c->peer, who);
	while (c->streams)
		stream_free(c->streams, ML_ERR_CLOSED);
	struct mesh_member *mm = mesh_members_find(&m->members, c->peer);
	if (mm && mm->conn == c) {
		/* Another link to the same node takes over (the peer may have
		 * picked the other one of a simultaneous pair); if the peer closed
		 * this one as a duplicate while ours is still in its handshake,
		 * wait for that one (silence detection still applies). */
		struct mesh_conn *alt = NULL;
		bool pending = false;
		for (struct mesh_conn *o = m->conns; o; o = o->next) {
			if (o == c || o->superseded || memcmp(o->peer, c->peer, NET_ID_LEN) != 0)
				continue;
			if (o->authed)
				alt = o;
			else
				pending = true;
		}
		bool dup = info->by_peer && info->app_error && info->code == MESH_CLOSE_DUPLICATE;
		mm->conn = alt;
		if (!alt && !(dup && pending) && !m->leaving &&
		    (mm->state == MESH_ALIVE || mm->state == MESH_SUSPECT)) {
			ML_INFO("mesh: connection with %s closed (%s)", who, info->reason);
			mesh_members_conn_lost(&m->members, c->peer, now_ns());
		}
	} else if (!c->authed && c->dialer && !c->superseded) {
		/* a failed attempt; back off once every parallel attempt failed */
		ML_DEBUG("mesh: could not reach %s at %s: %s", who, c->addr_str, info->reason);
		bool others = false;
		for (struct mesh_conn *o = m->conns; o; o = o->next)
			if (o != c && o->dialer && !o->superseded &&
			    memcmp(o->peer, c->peer, NET_ID_LEN) == 0)
				others = true;
		if (mm && !others) {
			mm->dial_failures++;
			uint32_t k = mm->dial_failures;
			uint64_t back = k < 6 ? (250ull << k) : 10000;
			if (mm->state == MESH_DEAD && back < 2000)
				back = 2000;
			if (mm->state == MESH_LEFT && back < 5000)
				back = 5000;
			mm->next_dial_ns = now_ns() + back * MS;
		}
		if (c->join_token >= 0 && !others) {
			uint32_t k = ++m->join_attempt;
			uint64_t back = k < 6 ? (100ull << k) : 5000;
			if (m->joined && back < 5000)
				back = 5000;
			m->join_next_ns = now_ns() + back * MS;
			if (k % 10 == 3 && !m->joined)
				ML_WARN("mesh: still trying to reach the mesh (%s)", info->reason);
		}
	}
	mesh_auth_clear(&c->auth);
	conn_unlink(c);
	net_conn_set_user(nc, NULL);
	free(c);
}

static bool cb_allow_peer(const uint8_t id[NET_ID_LEN], void *user)
{
	struct mesh *m = user;
	return !m->leaving && memcmp(id, m->ident.pk, NET_ID_LEN) != 0;
}

/* --- authentication done ------------------------------------------------- */

static bool dialer_smaller(const struct mesh *m, const struct mesh_conn *c)
{
	const uint8_t *dialer = c->dialer ? m->ident.pk : c->peer;
	const uint8_t *other = c->dialer ? c->peer : m->ident.pk;
	return memcmp(dialer, other, NET_ID_LEN) < 0;
}

static void conn_authed(struct mesh_conn *c)
{
	struct mesh *m = c->mesh;
	char who[9], a[MESH_ADDR_STR_LEN];
	id_short(c->peer, who);
	c->authed = true;
	uint64_t now = now_ns();
	c->next_ping_ns = now;
	mesh_addr_str(&c->addr, a);
	if (c->join_token >= 0) {
		char mid[33];
		for (int i = 0; i < 8; i++)
			snprintf(mid + 2 * i, 3, "%02x", m->mesh_id[i]);
		ML_INFO("mesh: %s mesh %s via %s (node %s)",
		        m->joined ? "reconnected to" : "joined", mid, a, who);
		m->join_attempt = 0;
	} else {
		ML_DEBUG("mesh: %s connection with %s at %s authenticated",
		         c->dialer ? "outgoing" : "incoming", who, a);
	}
	m->joined = true;
	/* parallel attempts to other addresses of this peer are not needed */
	for (struct mesh_conn *o = m->conns; o; o = o->next)
		if (o != c && !o->authed && o->dialer && !o->superseded &&
		    memcmp(o->peer, c->peer, NET_ID_LEN) == 0) {
			o->superseded = true;
			conn_close(o, MESH_CLOSE_DUPLICATE, "connected through another address");
		}
	/* One connection per pair: a newer incarnation wins, else the one
	 * dialed by the smaller id, else the newest. */
	for (struct mesh_conn *o = m->conns; o; o = o->next) {
		if (o == c || !o->authed || o->superseded ||
		    memcmp(o->peer, c->peer, NET_ID_LEN) != 0)
			continue;
		bool keep_new;
		if (c->auth.inc_peer != o->auth.inc_peer)
			keep_new = c->auth.inc_peer > o->auth.inc_peer;
		else if (c->dialer != o->dialer)
			keep_new = dialer_smaller(m, c);
		else
			keep_new = true;
		struct mesh_conn *loser = keep_new ? o : c;
		loser->superseded = true;
		struct mesh_member *mm = mesh_members_find(&m->members, c->peer);
		if (mm && mm->conn == loser)
			mm->conn = keep_new ? c : o;
		conn_close(loser, MESH_CLOSE_DUPLICATE, "duplicate connection");
		if (loser == c)
			return;
	}
	struct mesh_member *mm = mesh_members_find(&m->members, c->peer);
	if (mm) {
		mm->conn = c;
		mm->dial_failures = 0;
	}
	mesh_members_conn_up(&m->members, c->peer, c->auth.inc_peer, now);
	/* our own announcement first (fresh seq), then everything we know */
	struct net_buf b;
	net_buf_init(&b, 0);
	if (self_encode(m, &b) == 0) {
		const uint8_t *p = b.data;
		size_t l = b.len;
		send_gossip(m, c, NULL, NULL, &p, &l, 1);
	}
	net_buf_free(&b);
	send_full_table(m, c);
}

/* --- membership events --------------------------------------------------- */

static void on_member_event(struct mesh_members *t, struct mesh_member *mm, enum mesh_event ev,
                            void *user)
{
	(void)t;
	struct mesh *m = user;
	char who[9];
	id_short(mm->id, who);
	const struct mesh_ann *a = mm->ann;
	switch (ev) {
	case MESH_EV_JOINED:
		if (a && a->serving[0])
			ML_INFO("mesh: peer %s joined (%s, %.1f GB, serving %s)", who,
			        mesh_role_name(a->role), (double)a->vram_bytes / 1e9, a->serving);
		else
			ML_INFO("mesh: peer %s joined (%s, %.1f GB)", who,
			        a ? mesh_role_name(a->role) : "?",
			        a ? (double)a->vram_bytes / 1e9 : 0.0);
		break;
	case MESH_EV_UPDATED:
		ML_DEBUG("mesh: peer %s updated its announcement", who);
		break;
	case MESH_EV_SUSPECT:
		ML_INFO("mesh: peer %s silent for %.0f s, suspect", who,
		        (double)(now_ns() - mm->last_heard_ns) / 1e9);
		break;
	case MESH_EV_ALIVE:
		ML_INFO("mesh: peer %s is reachable again", who);
		break;
	case MESH_EV_DEAD:
		ML_INFO("mesh: peer %s unreachable, declared dead", who);
		if (mm->conn) {
			struct mesh_conn *c = mm->conn;
			mm->conn = NULL;
			c->superseded = true;
			conn_close(c, MESH_CLOSE_DEAD, "declared dead after silence");
		}
		mm->next_dial_ns = now_ns() + 2000 * MS;
		break;
	case MESH_EV_LEFT:
		ML_INFO("mesh: peer %s left", who);
		mm->next_dial_ns = now_ns() + 5000 * MS;
		break;
	case MESH_EV_REJOINED:
		ML_INFO("mesh: peer %s restarted and rejoined", who);
		mm->dial_failures = 0;
		mm->next_dial_ns = 0;
		break;
	}
	if (m->cfg.cb.on_change)
		m->cfg.cb.on_change(m, mm, ev, m->cfg.user);
}

/* --- periodic work -------------------------------------------------------- */

static bool has_conn_to(struct mesh *m, const uint8_t id[NET_ID_LEN])
{
	for (struct mesh_conn *c = m->conns; c; c = c->next)
		if (!c->superseded && memcmp(c->peer, id, NET_ID_LEN) == 0)
			return true;
	return false;
}

static void dial(struct mesh *m, const struct mesh_addr *a, const uint8_t id[NET_ID_LEN],
                 int join_token)
{
	struct sockaddr_storage ss;
	socklen_t sl = mesh_addr_to_sockaddr(a, &ss);
	struct mesh_conn *c = conn_new(m, NULL, true);
	if (!c)
		return;
	memcpy(c->peer, id, NET_ID_LEN);
	c->join_token = join_token;
	c->addr = *a;
	mesh_addr_str(a, c->addr_str);
	struct net_conn *nc;
	if (net_connect(m->ep, (struct sockaddr *)&ss, sl, id, c, &nc) != 0) {
		conn_unlink(c);
		free(c);
		return;
	}
	c->nc = nc;
}

/* Dials every address of every token at once (the first to authenticate
 * wins; the others are dropped), until one admits us. */
static void dial_join(struct mesh *m, uint64_t now)
{
	if (m->n_tokens == 0 || now < m->join_next_ns)
		return;
	for (struct mesh_conn *c = m->conns; c; c = c->next) {
		if (c->join_token >= 0 && !c->superseded)
			return; /* attempts are in flight */
		if (c->authed && !c->superseded)
			return; /* in the mesh: gossip tells us everyone else */
	}
	/* Not joined yet, or every peer is gone (say the whole mesh restarted):
	 * go back to the tokens. */
	int n = 0;
	for (size_t i = 0; i < m->n_tokens; i++) {
		if (memcmp(m->tokens[i].issuer, m->ident.pk, NET_ID_LEN) == 0)
			continue; /* our own token */
		for (unsigned k = 0; k < m->tokens[i].n_addrs; k++, n++)
			dial(m, &m->tokens[i].addrs[k], m->tokens[i].issuer, (int)i);
	}
	if (n == 0 && !m->joined) {
		m->joined = true; /* only our own token: we are the mesh */
		ML_INFO("mesh: the invite token names this node; continuing the mesh alone");
	}
	m->join_next_ns = now + (m->joined ? 5000 : 1000) * MS;
}

static void dial_members(struct mesh *m, uint64_t now)
{
	for (size_t i = 0; i < m->members.n; i++) {
		struct mesh_member *mm = m->members.v[i];
		/* dead and departed nodes are retried too (slower), so a node that
		 * restarts at the same address is found again until forget_ms */
		if (mm->self || mm->conn || !mm->ann || mm->ann->n_addrs == 0 ||
		    now < mm->next_dial_ns)
			continue;
		if (mm->ann->role == MESH_ROLE_CLIENT && m->self->role == MESH_ROLE_CLIENT)
			continue; /* lite clients need no link between them */
		if (has_conn_to(m, mm->id))
			continue;
		/* the smaller id dials; the bigger one only after a grace period */
		bool smaller = memcmp(m->ident.pk, mm->id, NET_ID_LEN) < 0;
		if (!smaller && (mm->state == MESH_ALIVE || mm->state == MESH_SUSPECT) &&
		    now - mm->state_since_ns < DIAL_GRACE_MS * MS && mm->dial_failures == 0) {
			continue;
		}
		mm->next_dial_ns = now + 1000 * MS; /* cb_closed sets the real backoff */
		for (unsigned k = 0; k < mm->ann->n_addrs && k < 8; k++)
			dial(m, &mm->ann->addrs[k], mm->id, -1);
	}
}

static void ping_peers(struct mesh *m, uint64_t now)
{
	for (struct mesh_conn *c = m->conns; c; c = c->next) {
		if (!c->ready)
			continue;
		if (!c->authed) {
			if (now - c->ready_ns > (uint64_t)m->cfg.hello_timeout_ms * MS) {
				char who[9];
				id_short(c->peer, who);
				ML_WARN("mesh: %s did not finish the HELLO in %u ms; closing", who,
				        m->cfg.hello_timeout_ms);
				c->superseded = true;
				conn_close(c, MESH_CLOSE_TIMEOUT, "HELLO timeout");
			}
			continue;
		}
		if (c->superseded)
			continue;
		struct mesh_member *mm = mesh_members_find(&m->members, c->peer);
		struct net_conn_info info;
		if (mm && mm->conn == c && net_conn_get_info(c->nc, &info) == 0 &&
		    info.smoothed_rtt_ns)
			mm->rtt_us =
			    (uint32_t)(info.smoothed_rtt_ns / 1000 ? info.smoothed_rtt_ns / 1000
			                                           : 1);
		if (now >= c->next_ping_ns) {
			c->next_ping_ns = now + (uint64_t)m->cfg.ping_ms * MS;
			struct net_buf b;
			net_buf_init(&b, 0);
			mesh_ping_put(&b, NET_MSG_PING, ++m->ping_nonce, now);
			ctl_send(c, &b);
			net_buf_free(&b);
		}
	}
}

static void finish_leave(struct mesh *m)
{
	event_del(m->tick_ev);
	if (m->leave_done) {
		void (*done)(void *) = m->leave_done;
		m->leave_done = NULL;
		done(m->leave_user);
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct mesh *m = arg;
	uint64_t now = now_ns();
	if (m->leaving) {
		bool pending = false;
		for (struct mesh_conn *c = m->conns; c; c = c->next)
			if (c->authed && c->ctl && net_stream_unacked(c->nc, c->ctl->sid) > 0)
				pending = true;
		if (!pending || now >= m->leave_deadline_ns)
			finish_leave(m);
		return;
	}
	mesh_members_tick(&m->members, now);
	ping_peers(m, now);
	if (now >= m->next_announce_ns)
		announce(m);
	dial_join(m, now);
	dial_members(m, now);
}

/* --- public API ----------------------------------------------------------- */

void mesh_default_config(struct mesh_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->role = MESH_ROLE_STANDBY;
	cfg->ping_ms = 1000;
	cfg->announce_ms = 2000;
	cfg->suspect_ms = 4000;
	cfg->dead_ms = 10000;
	cfg->forget_ms = 60000;
	cfg->hello_timeout_ms = 5000;
	cfg->idle_timeout_ms = 15000;
}

static uint64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static int self_addrs(const struct mesh *m, struct mesh_addr *out, size_t cap)
{
	if (m->cfg.addrs && m->cfg.n_addrs) {
		size_t n = m->cfg.n_addrs < cap ? m->cfg.n_addrs : cap;
		memcpy(out, m->cfg.addrs, n * sizeof(*out));
		return (int)n;
	}
	return mesh_addr_local(m->cfg.bind_host, net_endpoint_port(m->ep), out, cap);
}

int mesh_new(struct mesh **out, struct event_base *base, const struct mesh_config *cfg)
{
	*out = NULL;
	if (!cfg->ident || cfg->role >= MESH_ROLE_COUNT)
		return ml_error(ML_ERR_INVALID, "%s: no identity or bad role", __func__);
	if (sodium_init() < 0)
		return ml_error(ML_ERR_IO, "%s: libsodium initialisation failed", __func__);
	int rc = ML_ERR_NOMEM;
	struct mesh *m = calloc(1, sizeof(*m));
	if (!m)
		return ML_ERR_NOMEM;
	m->base = base;
	m->cfg = *cfg;
	m->cfg.join = NULL;
	m->ident = *cfg->ident;
	snprintf(m->version, sizeof(m->version), "%s", cfg->version ? cfg->version : "dev");
	mesh_members_init(&m->members, (uint64_t)cfg->suspect_ms * MS, (uint64_t)cfg->dead_ms * MS,
	                  (uint64_t)cfg->forget_ms * MS, on_member_event, m);
	if (cfg->n_join) {
		m->tokens = calloc(cfg->n_join, sizeof(*m->tokens));
		if (!m->tokens)
			goto fail;
		for (size_t i = 0; i < cfg->n_join; i++) {
			if (mesh_token_decode(&m->tokens[i], cfg->join[i]) != 0) {
				rc = ml_error(ML_ERR_INVALID, "invite token %zu: %s", i + 1,
				              ml_last_error());
				goto fail;
			}
			if (memcmp(m->tokens[i].mesh_id, m->tokens[0].mesh_id, MESH_ID_LEN) != 0 ||
			    memcmp(m->tokens[i].secret, m->tokens[0].secret, MESH_SECRET_LEN) !=
			        0) {
				rc = ml_error(ML_ERR_INVALID,
				              "the invite tokens name different meshes");
				goto fail;
			}
		}
		m->n_tokens = cfg->n_join;
		memcpy(m->mesh_id, m->tokens[0].mesh_id, MESH_ID_LEN);
		memcpy(m->secret, m->tokens[0].secret, MESH_SECRET_LEN);
	} else if (cfg->mesh_file) {
		bool made;
		rc = mesh_secret_load_or_create(cfg->mesh_file, m->mesh_id, m->secret, &made);
		if (rc)
			goto fail;
		m->joined = true;
		m->resumed = !made;
	} else {
		randombytes_buf(m->mesh_id, MESH_ID_LEN);
		randombytes_buf(m->secret, MESH_SECRET_LEN);
		m->joined = true;
	}
	struct net_endpoint_config ec;
	net_endpoint_default_config(&ec);
	ec.ident = &m->ident;
	ec.host = cfg->bind_host;
	ec.port = cfg->port;
	ec.accept = true;
	ec.idle_timeout_ms = cfg->idle_timeout_ms;
	ec.cb.on_conn_ready = cb_ready;
	ec.cb.on_stream_open = cb_stream_open;
	ec.cb.on_stream_data = cb_stream_data;
	ec.cb.on_stream_close = cb_stream_close;
	ec.cb.on_conn_closed = cb_closed;
	ec.cb.on_stream_acked = cb_acked;
	ec.cb.allow_peer = cb_allow_peer;
	ec.user = m;
	rc = net_endpoint_new(&m->ep, base, &ec);
	if (rc)
		goto fail;
	rc = ML_ERR_NOMEM;
	m->self = calloc(1, sizeof(*m->self));
	m->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, m);
	m->announce_ev = event_new(base, -1, 0, on_announce_ev, m);
	if (!m->self || !m->tick_ev || !m->announce_ev)
		goto fail;
	struct mesh_ann *a = m->self;
	memcpy(a->id, m->ident.pk, NET_ID_LEN);
	a->incarnation = wall_us();
	a->seq = 0;
	a->role = (uint8_t)cfg->role;
	a->proto = MESH_PROTO_VERSION;
	snprintf(a->version, sizeof(a->version), "%s", m->version);
	int na = self_addrs(m, a->addrs, MESH_ANN_MAX_ADDRS);
	a->n_addrs = na > 0 ? (uint8_t)na : 0;
	a->vram_bytes = cfg->vram_bytes;
	struct net_buf b;
	net_buf_init(&b, 0);
	rc = self_encode(m, &b);
	net_buf_free(&b);
	if (rc)
		goto fail;
	struct timeval tv = {0, TICK_MS * 1000};
	event_add(m->tick_ev, &tv);
	m->next_announce_ns = now_ns() + (uint64_t)cfg->announce_ms * MS;
	char id[9];
	id_short(m->ident.pk, id);
	if (m->n_tokens)
		ML_INFO("mesh: node %s on UDP port %u, joining through %zu token(s)", id,
		        net_endpoint_port(m->ep), m->n_tokens);
	else
		ML_INFO("mesh: node %s on UDP port %u %s mesh %02x%02x%02x%02x", id,
		        net_endpoint_port(m->ep), m->resumed ? "continues" : "started a new",
		        m->mesh_id[0], m->mesh_id[1], m->mesh_id[2], m->mesh_id[3]);
	dial_join(m, now_ns());
	*out = m;
	return 0;
fail:
	mesh_free(m);
	return rc;
}

void mesh_free(struct mesh *m)
{
	if (!m)
		return;
	/* the endpoint sends CONNECTION_CLOSE and fires no callbacks */
	for (struct mesh_conn *c = m->conns; c; c = c->next)
		while (c->streams) {
			struct mesh_stream *s = c->streams;
			c->nc = NULL;
			stream_free(s, ML_ERR_CLOSED);
		}
	net_endpoint_free(m->ep);
	while (m->conns) {
		struct mesh_conn *c = m->conns;
		conn_unlink(c);
		mesh_auth_clear(&c->auth);
		free(c);
	}
	if (m->tick_ev)
		event_free(m->tick_ev);
	if (m->announce_ev)
		event_free(m->announce_ev);
	mesh_members_free(&m->members);
	free(m->self);
	if (m->tokens)
		sodium_memzero(m->tokens, m->n_tokens * sizeof(*m->tokens));
	free(m->tokens);
	sodium_memzero(m->secret, sizeof(m->secret));
	net_ident_clear(&m->ident);
	free(m);
}

void mesh_leave(struct mesh *m, void (*done)(void *user), void *user)
{
	m->leave_done = done;
	m->leave_user = user;
	if (m->leaving)
		return;
	m->leaving = true;
	struct mesh_leaving l;
	memcpy(l.id, m->ident.pk, NET_ID_LEN);
	l.incarnation = m->self->incarnation;
	l.seq = ++m->self->seq;
	struct net_buf b;
	net_buf_init(&b, 0);
	mesh_leaving_put(&b, &l, &m->ident);
	int n = 0;
	for (struct mesh_conn *c = m->conns; c; c = c->next)
		if (c->authed && !c->superseded && ctl_send(c, &b) == 0)
			n++;
	net_buf_free(&b);
	ML_INFO("mesh: leaving the mesh (told %d peer%s)", n, n == 1 ? "" : "s");
	m->leave_deadline_ns = now_ns() + LEAVE_WAIT_MS * MS;
	struct timeval tv = {0, 10000};
	event_del(m->tick_ev);
	event_add(m->tick_ev, &tv);
}

int mesh_invite_token(const struct mesh *m, char *out, size_t cap)
{
	struct mesh_token t;
	memset(&t, 0, sizeof(t));
	memcpy(t.mesh_id, m->mesh_id, MESH_ID_LEN);
	memcpy(t.issuer, m->ident.pk, NET_ID_LEN);
	memcpy(t.secret, m->secret, MESH_SECRET_LEN);
	int n = self_addrs(m, t.addrs, MESH_TOKEN_MAX_ADDRS);
	if (n <= 0)
		return n < 0 ? n
		             : ml_error(ML_ERR_NOT_FOUND, "%s: no usable local address", __func__);
	t.n_addrs = (uint8_t)n;
	int rc = mesh_token_encode(&t, out, cap);
	sodium_memzero(&t, sizeof(t));
	return rc;
}

const struct mesh_traffic *mesh_get_traffic(const struct mesh *m)
{
	return &m->traffic;
}

const uint8_t *mesh_node_id(const struct mesh *m)
{
	return m->ident.pk;
}
const uint8_t *mesh_mesh_id(const struct mesh *m)
{
	return m->mesh_id;
}
uint16_t mesh_port(const struct mesh *m)
{
	return net_endpoint_port(m->ep);
}
struct net_endpoint *mesh_endpoint(struct mesh *m)
{
	return m->ep;
}
bool mesh_joined(const struct mesh *m)
{
	return m->joined;
}
const struct mesh_members *mesh_members(const struct mesh *m)
{
	return &m->members;
}
const struct mesh_member *mesh_member_get(const struct mesh *m, const uint8_t id[NET_ID_LEN])
{
	return mesh_members_find(&m->members, id);
}
bool mesh_peer_connected(const struct mesh *m, const uint8_t id[NET_ID_LEN])
{
	const struct mesh_member *mm = mesh_members_find(&m->members, id);
	return mm && !mm->self && mm->conn && mm->state != MESH_DEAD && mm->state != MESH_LEFT;
}

int mesh_set_role(struct mesh *m, enum mesh_role role)
{
	if (role >= MESH_ROLE_COUNT)
		return ML_ERR_INVALID;
	m->self->role = (uint8_t)role;
	schedule_announce(m);
	return 0;
}

int mesh_set_vram(struct mesh *m, uint64_t bytes)
{
	m->self->vram_bytes = bytes;
	schedule_announce(m);
	return 0;
}

static int copy_str(char *dst, size_t cap, const char *src)
{
	if (!src)
		src = "";
	size_t n = strlen(src);
	if (n >= cap)
		return ml_error(ML_ERR_RANGE, "mesh: '%.40s...' is longer than %zu characters", src,
		                cap - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)src[i] < 0x20 || src[i] == 0x7f)
			return ml_error(ML_ERR_INVALID, "mesh: control character in '%.40s'", src);
	memcpy(dst, src, n + 1);
	return 0;
}

int mesh_set_models(struct mesh *m, const struct mesh_model_info *models, size_t n)
{
	if (n > MESH_ANN_MAX_MODELS)
		n = MESH_ANN_MAX_MODELS;
	struct mesh_ann *a = m->self;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (copy_str(a->models[k].name, sizeof(a->models[k].name), models[i].name) != 0)
			continue;
		a->models[k++].bytes = models[i].bytes;
	}
	a->n_models = (uint8_t)k;
	schedule_announce(m);
	return 0;
}

int mesh_set_serving(struct mesh *m, const char *model, const char *fingerprint, const char *source,
                     uint32_t layer_start, uint32_t layer_end, uint32_t n_layers)
{
	if (layer_start > layer_end || layer_end > n_layers)
		return ml_error(ML_ERR_INVALID, "%s: layers %u..%u of %u", __func__, layer_start,
		                layer_end, n_layers);
	struct mesh_ann tmp;
	int rc;
	if ((rc = copy_str(tmp.serving, sizeof(tmp.serving), model)) ||
	    (rc = copy_str(tmp.fingerprint, sizeof(tmp.fingerprint), fingerprint)) ||
	    (rc = copy_str(tmp.source, sizeof(tmp.source), source)))
		return rc;
	struct mesh_ann *a = m->self;
	memcpy(a->serving, tmp.serving, sizeof(a->serving));
	memcpy(a->fingerprint, tmp.fingerprint, sizeof(a->fingerprint));
	memcpy(a->source, tmp.source, sizeof(a->source));
	a->layer_start = layer_start;
	a->layer_end = layer_end;
	a->n_layers = n_layers;
	schedule_announce(m);
	return 0;
}

int mesh_set_extra(struct mesh *m, const char *json_text)
{
	int rc = copy_str(m->self->extra, sizeof(m->self->extra), json_text);
	if (rc == 0)
		schedule_announce(m);
	return rc;
}

static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	return j ? j : json_string("?");
}

json_t *mesh_status_json(const struct mesh *m)
{
	char hex[NET_ID_HEX_LEN + 1], mid[2 * MESH_ID_LEN + 1];
	for (int i = 0; i < MESH_ID_LEN; i++)
		snprintf(mid + 2 * i, 3, "%02x", m->mesh_id[i]);
	net_id_to_hex(m->ident.pk, hex);
	json_t *root = json_object();
	json_t *nodes = json_array();
	if (!root || !nodes) {
		json_decref(root);
		json_decref(nodes);
		return NULL;
	}
	json_object_set_new(root, "mesh_id", json_string(mid));
	json_object_set_new(root, "node_id", json_string(hex));
	json_object_set_new(root, "port", json_integer(net_endpoint_port(m->ep)));
	json_object_set_new(root, "joined", json_boolean(m->joined));
	uint64_t now = now_ns();
	for (size_t i = 0; i < m->members.n; i++) {
		const struct mesh_member *mm = m->members.v[i];
		if (!mm->ann || mm->state == MESH_LEFT)
			continue; /* a node that said goodbye is gone at once */
		const struct mesh_ann *a = mm->self ? m->self : mm->ann;
		json_t *n = json_object();
		net_id_to_hex(mm->id, hex);
		json_object_set_new(n, "id", json_string(hex));
		json_object_set_new(n, "self", json_boolean(mm->self));
		json_object_set_new(n, "role", json_string(mesh_role_name(a->role)));
		json_object_set_new(n, "state", json_string(mesh_state_name(mm->state)));
		json_t *addrs = json_array();
		for (unsigned k = 0; k < a->n_addrs; k++) {
			char s[MESH_ADDR_STR_LEN];
			mesh_addr_str(&a->addrs[k], s);
			json_array_append_new(addrs, json_string(s));
		}
		json_object_set_new(n, "addresses", addrs);
		json_object_set_new(n, "vram_gb", json_real((double)a->vram_bytes / 1e9));
		json_t *models = json_array();
		for (unsigned k = 0; k < a->n_models; k++)
			json_array_append_new(models, jstr(a->models[k].name));
		json_object_set_new(n, "models", models);
		json_object_set_new(n, "serving", a->serving[0] ? jstr(a->serving) : json_null());
		if (a->serving[0] && a->n_layers) {
			json_t *l = json_array();
			json_array_append_new(l, json_integer(a->layer_start));
			json_array_append_new(l, json_integer(a->layer_end));
			json_object_set_new(n, "layers", l);
			json_object_set_new(n, "n_layers", json_integer(a->n_layers));
		}
		if (a->fingerprint[0])
			json_object_set_new(n, "fingerprint", jstr(a->fingerprint));
		if (a->source[0])
			json_object_set_new(n, "source", jstr(a->source));
		if (mm->self)
			json_object_set_new(n, "rtt_ms", json_real(0));
		else if (mm->rtt_us && mm->conn)
			json_object_set_new(n, "rtt_ms", json_real((double)mm->rtt_us / 1000.0));
		else
			json_object_set_new(n, "rtt_ms", json_null());
		if (!mm->self && mm->ping_us && mm->conn)
			json_object_set_new(n, "ping_ms", json_real((double)mm->ping_us / 1000.0));
		json_object_set_new(n, "version", jstr(a->version));
		json_object_set_new(n, "incarnation", json_integer((json_int_t)a->incarnation));
		json_object_set_new(n, "seq", json_integer((json_int_t)a->seq));
		json_object_set_new(n, "connected", json_boolean(!mm->self && mm->conn != NULL));
		json_object_set_new(
		    n, "last_seen_ms",
		    json_integer(mm->self ? 0 : (json_int_t)((now - mm->last_heard_ns) / MS)));
		json_array_append_new(nodes, n);
	}
	json_object_set_new(root, "nodes", nodes);
	json_t *tr = json_object();
	for (int t = 0; t < 256 && tr; t++) {
		const struct mesh_traffic *x = &m->traffic;
		if (!x->tx_msgs[t] && !x->rx_msgs[t])
			continue;
		json_t *o = json_object();
		json_object_set_new(o, "tx_msgs", json_integer((json_int_t)x->tx_msgs[t]));
		json_object_set_new(o, "tx_bytes", json_integer((json_int_t)x->tx_bytes[t]));
		json_object_set_new(o, "rx_msgs", json_integer((json_int_t)x->rx_msgs[t]));
		json_object_set_new(o, "rx_bytes", json_integer((json_int_t)x->rx_bytes[t]));
		json_object_set_new(tr, net_msg_type_name((uint8_t)t), o);
	}
	json_object_set_new(root, "traffic", tr);
	return root;
}

/* --- routing ------------------------------------------------------------------ */

static bool hosts(const struct mesh_member *mm, const struct mesh_ann *a, const char *model)
{
	if (mm->state != MESH_ALIVE && mm->state != MESH_SUSPECT)
		return false;
	if (!a->serving[0] || a->role != MESH_ROLE_HOST)
		return false;
	if (!mm->self && !mm->conn)
		return false;
	return !model || !model[0] || strcmp(a->serving, model) == 0;
}

int mesh_route(const struct mesh *m, const char *model, uint8_t id[NET_ID_LEN], bool *is_self)
{
	const struct mesh_member *best = NULL;
	for (size_t i = 0; i < m->members.n; i++) {
		const struct mesh_member *mm = m->members.v[i];
		const struct mesh_ann *a = mm->self ? m->self : mm->ann;
		if (!a || !hosts(mm, a, model))
			continue;
		if (!best || mm->self ||
		    (!best->self && mm->rtt_us && (!best->rtt_us || mm->rtt_us < best->rtt_us)))
			best = mm;
		if (best->self)
			break;
	}
	if (!best)
		return ML_ERR_NOT_FOUND;
	memcpy(id, best->id, NET_ID_LEN);
	if (is_self)
		*is_self = best->self;
	return 0;
}

json_t *mesh_served_models_json(const struct mesh *m)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < m->members.n; i++) {
		const struct mesh_member *mm = m->members.v[i];
		const struct mesh_ann *a = mm->self ? m->self : mm->ann;
		if (!a || !hosts(mm, a, NULL))
			continue;
		bool dup = false;
		for (size_t k = 0; k < json_array_size(arr); k++)
			dup |= strcmp(json_string_value(json_array_get(arr, k)), a->serving) == 0;
		if (!dup)
			json_array_append_new(arr, jstr(a->serving));
	}
	return arr;
}

/* --- application streams ------------------------------------------------- */

int mesh_stream_open(struct mesh *m, const uint8_t id[NET_ID_LEN], uint8_t stream_type,
                     const struct mesh_stream_callbacks *cb, void *user, struct mesh_stream **out)
{
	*out = NULL;
	if (stream_type != NET_STREAM_HTTP && stream_type != NET_STREAM_STAGE)
		return ml_error(ML_ERR_INVALID, "%s: stream type %u", __func__, stream_type);
	struct mesh_member *mm = mesh_members_find(&m->members, id);
	if (!mm || mm->self || !mm->conn || !((struct mesh_conn *)mm->conn)->authed ||
	    mm->state == MESH_DEAD || mm->state == MESH_LEFT)
		return ml_error(ML_ERR_NOT_FOUND, "%s: peer not connected", __func__);
	struct mesh_conn *c = mm->conn;
	int64_t sid;
	int rc = net_stream_open(c->nc, &sid);
	if (rc)
		return rc;
	struct mesh_stream *s = stream_new(c, sid, true);
	if (!s) {
		net_stream_shutdown(c->nc, sid, MESH_STREAM_REFUSED);
		return ML_ERR_NOMEM;
	}
	s->type = stream_type;
	s->dec.stream_type = stream_type; /* the peer's replies carry no type byte */
	s->dec.expect = stream_type;
	uint8_t t = stream_type;
	rc = net_stream_send(c->nc, sid, &t, 1, false);
	if (rc) {
		stream_reject(s, MESH_STREAM_REFUSED);
		return rc;
	}
	mesh_stream_set_callbacks(s, cb, user);
	*out = s;
	return 0;
}

void mesh_stream_set_callbacks(struct mesh_stream *s, const struct mesh_stream_callbacks *cb,
                               void *user)
{
	s->cb = *cb;
	s->user = user;
	s->taken = true;
}

int mesh_stream_send(struct mesh_stream *s, uint8_t type, const void *payload, size_t len, bool fin)
{
	if (s->closed || !s->c->nc)
		return ML_ERR_CLOSED;
	int rc = net_frame_check(s->type, type, len);
	if (rc)
		return rc;
	uint8_t hdr[NET_FRAME_HDR_LEN];
	net_frame_encode_header(hdr, type, (uint32_t)len);
	rc = net_stream_send(s->c->nc, s->sid, hdr, sizeof(hdr), fin && len == 0);
	if (rc == 0 && len)
		rc = net_stream_send(s->c->nc, s->sid, payload, len, fin);
	if (rc == 0) {
		s->c->mesh->traffic.tx_msgs[type]++;
		s->c->mesh->traffic.tx_bytes[type] += NET_FRAME_HDR_LEN + (uint64_t)len;
	}
	return rc;
}

int mesh_stream_finish(struct mesh_stream *s)
{
	if (s->closed || !s->c->nc)
		return ML_ERR_CLOSED;
	return net_stream_send(s->c->nc, s->sid, NULL, 0, true);
}

void mesh_stream_reset(struct mesh_stream *s, uint64_t code)
{
	stream_reject(s, code);
}

const uint8_t *mesh_stream_peer(const struct mesh_stream *s)
{
	return s->c->peer;
}

uint8_t mesh_stream_type(const struct mesh_stream *s)
{
	return s->type;
}

uint64_t mesh_stream_unacked(const struct mesh_stream *s)
{
	return s->c->nc ? net_stream_unacked(s->c->nc, s->sid) : 0;
}
