/* QUIC endpoint/connection/stream wrapper over ngtcp2 0.12 + GnuTLS on a
 * libevent loop. See net_quic.h for the contract and
 * /work/shared/notes/dependencies.md for the ngtcp2 0.12 facts it relies on.
 *
 * Structure, in the order of this file:
 *   streams     send chunk lists (zero-copy: queued bytes never move until
 *               acknowledged), lookup by id
 *   callbacks   ngtcp2 and GnuTLS callbacks (no writes from inside them)
 *   write loop  coalescing writev_stream loop with pacing and send quantum
 *   lifecycle   create (dial/accept), close, fail, deferred free
 *   endpoint    socket, CID demux, accept, public API */
#include "net/net_quic.h"

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_time.h"
#include "net/net_cidmap.h"
#include "net/net_udp.h"

#include <event2/event.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCID_LEN 16
#define TXBUF_SIZE 65536
#define GSO_MAX_BYTES 64000 /* below the 65507-byte UDP limit of one GSO send */
#define MAX_VEC 16
#define CHUNK_MIN 16384      /* small sends are appended into one chunk of this size */
#define CHUNK_MAX (1u << 20) /* large sends are split so acked memory is freed early */
#define MAX_BURST_PKTS 64    /* packets per write call, besides the send quantum */
#define DGRAM_QUEUE_MAX 256
#define RESETS_PER_SEC 100 /* stateless resets we send, at most */

static const char tls_priority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:%DISABLE_TLS13_COMPAT_MODE";

struct net_chunk {
	struct net_chunk *next;
	size_t len; /* bytes queued in data[] */
	size_t cap;
	uint8_t data[];
};

struct net_stream {
	int64_t id;
	struct net_stream *next;    /* conn->streams */
	struct net_stream *sq_next; /* conn send queue */
	bool in_sendq;
	bool blocked; /* STREAM_DATA_BLOCKED until extend_max_stream_data */
	bool fin_queued, fin_sent;
	struct net_chunk *head, *tail;
	uint64_t head_off;            /* stream offset of head->data[0] */
	struct net_chunk *send_chunk; /* chunk holding sent_off (NULL: none left) */
	uint64_t send_chunk_off;
	uint64_t sent_off;   /* bytes handed to ngtcp2 */
	uint64_t queued_end; /* bytes queued */
	uint64_t acked_off;  /* bytes acknowledged */
	void *user;
};

struct net_dgram {
	struct net_dgram *next;
	size_t len;
	uint8_t data[];
};

struct net_conn {
	struct net_endpoint *ep;
	struct net_conn *next, *prev; /* ep->conns or ep->graveyard */
	ngtcp2_conn *conn;
	gnutls_session_t tls;
	ngtcp2_crypto_conn_ref ref;
	struct sockaddr_storage remote;
	socklen_t remote_len;
	struct event *timer;
	struct event *wev; /* deferred flush */
	bool dialer;
	bool ready;     /* handshake done, peer verified */
	bool announced; /* the application knows this connection */
	bool verified;
	bool dead;
	bool close_pending;
	bool got_reset;  /* the peer answered with a stateless reset */
	bool got_crypto; /* a packet decrypted and carried TLS data */
	uint8_t peer_id[NET_ID_LEN];
	uint8_t expected_id[NET_ID_LEN];
	uint64_t app_close_code;
	char close_reason[128];
	char fail_reason[192]; /* why verification failed, for on_conn_closed */
	struct net_stream *streams;
	struct net_stream *sq_head, *sq_tail;
	struct net_dgram *dq_head, *dq_tail;
	size_t dq_len;
	uint64_t created_ns, handshake_ns;
	void *user;
};

struct net_endpoint {
	struct event_base *base;
	struct net_endpoint_config cfg;
	struct net_ident ident;
	struct net_udp udp;
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	struct net_cidmap cids;
	struct net_conn *conns;
	struct net_conn *graveyard;
	struct event *reap_ev;
	uint32_t nconns;
	/* Stateless-reset tokens are derived from this secret and the CID. It
	 * comes from the node key, so a node that restarts with the same key
	 * can still reset connections its previous run had. */
	uint8_t reset_secret[32];
	uint64_t reset_window_start_ns;
	uint32_t resets_in_window;
	uint8_t txbuf[TXBUF_SIZE];
};

static void conn_schedule_write(struct net_conn *c);
static void conn_finish(struct net_conn *c, const struct net_close_info *info);

static const char *cid_short(const uint8_t *id, char buf[9])
{
	net_id_short(id, buf);
	return buf;
}

/* ---- streams ------------------------------------------------------- */

static struct net_stream *stream_find(const struct net_conn *c, int64_t sid)
{
	for (struct net_stream *s = c->streams; s; s = s->next)
		if (s->id == sid)
			return s;
	return NULL;
}

static struct net_stream *stream_new(struct net_conn *c, int64_t sid)
{
	struct net_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->id = sid;
	s->next = c->streams;
	c->streams = s;
	return s;
}

static bool stream_pending(const struct net_stream *s)
{
	return s->sent_off < s->queued_end || (s->fin_queued && !s->fin_sent);
}

static void sendq_push(struct net_conn *c, struct net_stream *s)
{
	if (s->in_sendq || s->blocked)
		return;
	s->in_sendq = true;
	s->sq_next = NULL;
	if (c->sq_tail)
		c->sq_tail->sq_next = s;
	else
		c->sq_head = s;
	c->sq_tail = s;
}

static void sendq_pop_head(struct net_conn *c)
{
	struct net_stream *s = c->sq_head;
	c->sq_head = s->sq_next;
	if (!c->sq_head)
		c->sq_tail = NULL;
	s->sq_next = NULL;
	s->in_sendq = false;
}

static void sendq_remove(struct net_conn *c, struct net_stream *s)
{
	if (!s->in_sendq)
		return;
	struct net_stream **pp = &c->sq_head, *prev = NULL;
	while (*pp && *pp != s) {
		prev = *pp;
		pp = &(*pp)->sq_next;
	}
	if (*pp) {
		*pp = s->sq_next;
		if (c->sq_tail == s)
			c->sq_tail = prev;
	}
	s->sq_next = NULL;
	s->in_sendq = false;
}

static void stream_free(struct net_conn *c, struct net_stream *s)
{
	sendq_remove(c, s);
	for (struct net_stream **pp = &c->streams; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	struct net_chunk *k = s->head;
	while (k) {
		struct net_chunk *n = k->next;
		free(k);
		k = n;
	}
	free(s);
}

/* Appends |len| bytes. Bytes already handed to ngtcp2 are never moved:
 * small sends go into the spare room at the end of the tail chunk, which
 * ngtcp2 has not seen yet, or into a fresh chunk. */
static int stream_append(struct net_stream *s, const uint8_t *data, size_t len)
{
	while (len > 0) {
		struct net_chunk *t = s->tail;
		if (t && t->cap > t->len) {
			size_t n = t->cap - t->len < len ? t->cap - t->len : len;
			memcpy(t->data + t->len, data, n);
			t->len += n;
			s->queued_end += n;
			data += n;
			len -= n;
			continue;
		}
		size_t cap = len < CHUNK_MIN ? CHUNK_MIN : len > CHUNK_MAX ? CHUNK_MAX : len;
		struct net_chunk *k = malloc(sizeof(*k) + cap);
		if (!k)
			return ml_error(ML_ERR_NOMEM, "%s: %zu-byte chunk", __func__, cap);
		k->next = NULL;
		k->len = 0;
		k->cap = cap;
		if (t)
			t->next = k;
		else {
			s->head = k;
			s->head_off = s->queued_end;
		}
		s->tail = k;
		if (!s->send_chunk) {
			s->send_chunk = k;
			s->send_chunk_off = s->queued_end;
		}
	}
	return 0;
}

/* Fills |vec| with unsent bytes from sent_off; sets |*all| when every
 * queued byte is included. */
static size_t stream_fill_vec(struct net_stream *s, ngtcp2_vec *vec, size_t max, bool *all)
{
	/* skip chunks that were sent completely */
	while (s->send_chunk && s->sent_off >= s->send_chunk_off + s->send_chunk->len &&
	       s->send_chunk->next) {
		s->send_chunk_off += s->send_chunk->len;
		s->send_chunk = s->send_chunk->next;
	}
	size_t n = 0;
	struct net_chunk *k = s->send_chunk;
	uint64_t koff = s->send_chunk_off;
	uint64_t pos = s->sent_off;
	while (k && n < max) {
		if (pos < koff + k->len) {
			vec[n].base = k->data + (pos - koff);
			vec[n].len = (size_t)(koff + k->len - pos);
			pos = koff + k->len;
			n++;
		}
		koff += k->len;
		k = k->next;
	}
	*all = pos == s->queued_end;
	return n;
}

static void stream_advance(struct net_conn *c, struct net_stream *s, ngtcp2_ssize ndata, bool fin)
{
	if (ndata > 0)
		s->sent_off += (uint64_t)ndata;
	if (fin && s->sent_off == s->queued_end)
		s->fin_sent = true;
	if (!stream_pending(s))
		sendq_remove(c, s);
}

static void stream_acked(struct net_stream *s, uint64_t end)
{
	if (end > s->acked_off)
		s->acked_off = end;
	while (s->head && s->head_off + s->head->len <= s->acked_off &&
	       (s->head->next || s->head->len == s->head->cap)) {
		struct net_chunk *k = s->head;
		if (s->send_chunk == k) {
			s->send_chunk = k->next;
			s->send_chunk_off = s->head_off + k->len;
		}
		s->head_off += k->len;
		s->head = k->next;
		if (!s->head)
			s->tail = NULL;
		free(k);
	}
}

/* ---- callbacks ------------------------------------------------------ */

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	(void)ctx;
	randombytes_buf(dest, len);
}

static int cb_get_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *user)
{
	struct net_conn *c = user;
	(void)conn;
	randombytes_buf(cid->data, cidlen);
	cid->datalen = cidlen;
	if (ngtcp2_crypto_generate_stateless_reset_token(token, c->ep->reset_secret,
	                                                 sizeof(c->ep->reset_secret), cid) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	if (net_cidmap_put(&c->ep->cids, cid->data, cid->datalen, c))
		return NGTCP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int cb_remove_cid(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user)
{
	struct net_conn *c = user;
	(void)conn;
	net_cidmap_del(&c->ep->cids, cid->data, cid->datalen);
	return 0;
}

static int cb_recv_crypto_data(ngtcp2_conn *conn, ngtcp2_crypto_level level, uint64_t offset,
                               const uint8_t *data, size_t len, void *user)
{
	struct net_conn *c = user;
	c->got_crypto = true;
	return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, len, user);
}

static int cb_recv_stateless_reset(ngtcp2_conn *conn, const ngtcp2_pkt_stateless_reset *sr,
                                   void *user)
{
	struct net_conn *c = user;
	(void)conn;
	(void)sr;
	c->got_reset = true;
	return 0;
}

static int cb_handshake_completed(ngtcp2_conn *conn, void *user)
{
	struct net_conn *c = user;
	(void)conn;
	char a[9];
	gnutls_datum_t alpn = {NULL, 0};
	if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) != 0 ||
	    alpn.size != strlen(NET_ALPN) || memcmp(alpn.data, NET_ALPN, alpn.size) != 0) {
		snprintf(c->fail_reason, sizeof(c->fail_reason), "peer did not agree on ALPN %s",
		         NET_ALPN);
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	if (!c->verified) {
		snprintf(c->fail_reason, sizeof(c->fail_reason),
		         "peer certificate was not verified");
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	c->ready = true;
	c->announced = true;
	c->handshake_ns = ml_time_ns() - c->created_ns;
	ML_DEBUG("net: %s connection with %s ready in %.2f ms", c->dialer ? "outgoing" : "incoming",
	         cid_short(c->peer_id, a), (double)c->handshake_ns / 1e6);
	/* Called from inside packet processing, before any stream frame of the
	 * same packet, so on_conn_ready always precedes on_stream_open. */
	if (c->ep->cfg.cb.on_conn_ready)
		c->ep->cfg.cb.on_conn_ready(c, c->ep->cfg.user);
	return 0;
}

static int cb_stream_open(ngtcp2_conn *conn, int64_t sid, void *user)
{
	struct net_conn *c = user;
	if (!ngtcp2_is_bidi_stream(sid)) {
		/* We never allow unidirectional streams, so this cannot happen. */
		return 0;
	}
	struct net_stream *s = stream_new(c, sid);
	if (!s)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	ngtcp2_conn_set_stream_user_data(conn, sid, s);
	if (c->ep->cfg.cb.on_stream_open)
		c->ep->cfg.cb.on_stream_open(c, sid, c->ep->cfg.user);
	return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *user, void *stream_user)
{
	struct net_conn *c = user;
	(void)offset;
	(void)stream_user;
	bool fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0;
	if (c->ep->cfg.cb.on_stream_data && !c->close_pending)
		c->ep->cfg.cb.on_stream_data(c, sid, data, len, fin, c->ep->cfg.user);
	if (!c->ep->cfg.manual_credit) {
		/* Consumed: give the credit back (the stream may be gone already). */
		ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
		ngtcp2_conn_extend_max_offset(conn, len);
	}
	return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *conn, int64_t sid, uint64_t offset,
                                       uint64_t datalen, void *user, void *stream_user)
{
	(void)conn;
	struct net_conn *c = user;
	struct net_stream *s = stream_user;
	if (s) {
		stream_acked(s, offset + datalen);
		if (c->ep->cfg.cb.on_stream_acked && !c->close_pending)
			c->ep->cfg.cb.on_stream_acked(c, sid, s->queued_end - s->acked_off,
			                              c->ep->cfg.user);
	}
	return 0;
}

static int cb_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t app_error,
                           void *user, void *stream_user)
{
	struct net_conn *c = user;
	struct net_stream *s = stream_user;
	if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
		app_error = 0;
	if (s) {
		if (c->ep->cfg.cb.on_stream_close && !c->dead)
			c->ep->cfg.cb.on_stream_close(c, sid, app_error, c->ep->cfg.user);
		stream_free(c, s);
	}
	if (!ngtcp2_conn_is_local_stream(conn, sid) && ngtcp2_is_bidi_stream(sid))
		ngtcp2_conn_extend_max_streams_bidi(conn, 1);
	return 0;
}

static int cb_extend_max_stream_data(ngtcp2_conn *conn, int64_t sid, uint64_t max_data, void *user,
                                     void *stream_user)
{
	struct net_conn *c = user;
	struct net_stream *s = stream_user;
	(void)conn;
	(void)sid;
	(void)max_data;
	if (s && s->blocked) {
		s->blocked = false;
		if (stream_pending(s))
			sendq_push(c, s);
		conn_schedule_write(c);
	}
	return 0;
}

static int cb_recv_datagram(ngtcp2_conn *conn, uint32_t flags, const uint8_t *data, size_t len,
                            void *user)
{
	struct net_conn *c = user;
	(void)conn;
	(void)flags;
	if (c->ep->cfg.cb.on_datagram && c->ready && !c->close_pending)
		c->ep->cfg.cb.on_datagram(c, data, len, c->ep->cfg.user);
	return 0;
}

static ngtcp2_conn *tls_get_conn(ngtcp2_crypto_conn_ref *ref)
{
	struct net_conn *c = ref->user_data;
	return c->conn;
}

/* GnuTLS certificate verification: the pinning. Returns nonzero to abort
 * the handshake. GnuTLS checks CertificateVerify itself, so a match here
 * proves the peer holds the private key. */
static int tls_verify_peer(gnutls_session_t session)
{
	ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
	struct net_conn *c = ref->user_data;
	uint8_t id[NET_ID_LEN];
	char a[9], b[9];
	if (net_tls_peer_id(session, id) != 0) {
		snprintf(c->fail_reason, sizeof(c->fail_reason), "%s", ml_last_error());
		return -1;
	}
	if (c->dialer) {
		if (sodium_memcmp(id, c->expected_id, NET_ID_LEN) != 0) {
			snprintf(c->fail_reason, sizeof(c->fail_reason),
			         "peer key %s is not the expected node %s", cid_short(id, a),
			         cid_short(c->expected_id, b));
			return -1;
		}
	} else if (c->ep->cfg.cb.allow_peer && !c->ep->cfg.cb.allow_peer(id, c->ep->cfg.user)) {
		snprintf(c->fail_reason, sizeof(c->fail_reason), "node %s is not allowed",
		         cid_short(id, a));
		return -1;
	}
	memcpy(c->peer_id, id, NET_ID_LEN);
	c->verified = true;
	return 0;
}

/* ---- write loop ----------------------------------------------------- */

static int conn_send_packet(struct net_conn *c, const ngtcp2_path *path, const uint8_t *data,
                            size_t len)
{
	const struct sockaddr *to =
	    path->remote.addrlen ? path->remote.addr : (struct sockaddr *)&c->remote;
	socklen_t tolen = path->remote.addrlen ? path->remote.addrlen : c->remote_len;
	return net_udp_send(&c->ep->udp, to, tolen, data, len);
}

static void conn_arm_timer(struct net_conn *c)
{
	ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->conn);
	if (exp == UINT64_MAX) {
		evtimer_del(c->timer);
		return;
	}
	uint64_t now = ml_time_ns();
	uint64_t wait = exp > now ? exp - now : 0;
	struct timeval tv = {(time_t)(wait / 1000000000u),
	                     (suseconds_t)((wait % 1000000000u) / 1000u)};
	evtimer_add(c->timer, &tv);
}

static int close_err_of(int liberr, const struct net_conn *c)
{
	switch (liberr) {
	case NGTCP2_ERR_IDLE_CLOSE:
	case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
		return ML_ERR_TIMEOUT;
	case NGTCP2_ERR_CRYPTO:
	case NGTCP2_ERR_CALLBACK_FAILURE:
		return c->ready ? ML_ERR_PROTO : ML_ERR_AUTH;
	case NGTCP2_ERR_NOMEM:
		return ML_ERR_NOMEM;
	}
	return ML_ERR_PROTO;
}

/* Ends the connection because of ngtcp2 error |liberr|: sends a
 * CONNECTION_CLOSE when the protocol wants one, then finishes. */
static void conn_fail(struct net_conn *c, int liberr, const char *where)
{
	struct net_close_info info = {0};
	char reason[256];
	info.err = close_err_of(liberr, c);
	if (c->fail_reason[0])
		snprintf(reason, sizeof(reason), "%s", c->fail_reason);
	else if (liberr == NGTCP2_ERR_IDLE_CLOSE)
		snprintf(reason, sizeof(reason), "idle timeout");
	else if (liberr == NGTCP2_ERR_HANDSHAKE_TIMEOUT)
		snprintf(reason, sizeof(reason), "handshake timeout");
	else
		snprintf(reason, sizeof(reason), "%s: %s", where, ngtcp2_strerror(liberr));
	info.reason = reason;
	if (liberr != NGTCP2_ERR_IDLE_CLOSE && liberr != NGTCP2_ERR_DROP_CONN &&
	    liberr != NGTCP2_ERR_DRAINING && liberr != NGTCP2_ERR_HANDSHAKE_TIMEOUT &&
	    !ngtcp2_conn_is_in_closing_period(c->conn) &&
	    !ngtcp2_conn_is_in_draining_period(c->conn)) {
		ngtcp2_connection_close_error ccerr;
		ngtcp2_connection_close_error_default(&ccerr);
		if (liberr == NGTCP2_ERR_CRYPTO)
			ngtcp2_connection_close_error_set_transport_error_tls_alert(
			    &ccerr, ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
		else
			ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr,
			                                                         NULL, 0);
		info.code = ccerr.error_code;
		ngtcp2_path_storage ps;
		ngtcp2_path_storage_zero(&ps);
		ngtcp2_pkt_info pi;
		ngtcp2_ssize n =
		    ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, c->ep->txbuf,
		                                       sizeof(c->ep->txbuf), &ccerr, ml_time_ns());
		if (n > 0)
			conn_send_packet(c, &ps.path, c->ep->txbuf, (size_t)n);
	}
	conn_finish(c, &info);
}

static void conn_send_close(struct net_conn *c)
{
	struct net_close_info info = {0};
	info.err = ML_ERR_CLOSED;
	info.app_error = true;
	info.code = c->app_close_code;
	info.reason = c->close_reason;
	if (!ngtcp2_conn_is_in_closing_period(c->conn) &&
	    !ngtcp2_conn_is_in_draining_period(c->conn)) {
		ngtcp2_connection_close_error ccerr;
		ngtcp2_connection_close_error_default(&ccerr);
		ngtcp2_connection_close_error_set_application_error(
		    &ccerr, c->app_close_code, (const uint8_t *)c->close_reason,
		    strlen(c->close_reason));
		ngtcp2_path_storage ps;
		ngtcp2_path_storage_zero(&ps);
		ngtcp2_pkt_info pi;
		ngtcp2_ssize n =
		    ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, c->ep->txbuf,
		                                       sizeof(c->ep->txbuf), &ccerr, ml_time_ns());
		if (n > 0)
			conn_send_packet(c, &ps.path, c->ep->txbuf, (size_t)n);
	}
	conn_finish(c, &info);
}

/* Packets of one write burst, laid out back to back in ep->txbuf so that
 * runs of equal-sized packets leave in one GSO system call. */
struct tx_batch {
	size_t len;  /* bytes in txbuf */
	size_t seg;  /* size of the first packet; 0 when empty */
	bool closed; /* the last packet was shorter: nothing may follow */
};

static void batch_flush(struct net_conn *c, const ngtcp2_path *path, struct tx_batch *b)
{
	if (b->len == 0)
		return;
	const struct sockaddr *to =
	    path->remote.addrlen ? path->remote.addr : (struct sockaddr *)&c->remote;
	socklen_t tolen = path->remote.addrlen ? path->remote.addrlen : c->remote_len;
	if (net_udp_send_segments(&c->ep->udp, to, tolen, c->ep->txbuf, b->len, b->seg) != 0)
		ML_DEBUG("net: send: %s", ml_last_error());
	b->len = b->seg = 0;
	b->closed = false;
}

/* Accounts a packet of |n| bytes just written at txbuf + b->len. A GSO
 * run is packets of one size, the last possibly shorter. */
static void batch_add(struct net_conn *c, const ngtcp2_path *path, struct tx_batch *b, size_t n,
                      size_t mtu)
{
	uint8_t *tx = c->ep->txbuf;
	if (b->len > 0 && n > b->seg) {
		/* bigger than the run so far: send the run, start over with it */
		size_t at = b->len;
		batch_flush(c, path, b);
		memmove(tx, tx + at, n);
	}
	if (b->len == 0)
		b->seg = n;
	else if (n < b->seg)
		b->closed = true;
	b->len += n;
	if (b->closed || b->len + mtu > GSO_MAX_BYTES)
		batch_flush(c, path, b);
}

/* Writes as many packets as congestion control, pacing, flow control and
 * the send quantum allow. Never called from inside an ngtcp2 callback. */
static void conn_write(struct net_conn *c)
{
	if (c->dead)
		return;
	if (c->close_pending) {
		conn_send_close(c);
		return;
	}
	ngtcp2_tstamp ts = ml_time_ns();
	ngtcp2_path_storage ps;
	ngtcp2_path_storage_zero(&ps);
	ngtcp2_pkt_info pi;
	size_t mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
	if (mtu == 0 || mtu > TXBUF_SIZE / 2)
		mtu = NGTCP2_MAX_UDP_PAYLOAD_SIZE;
	size_t max_pkts = ngtcp2_conn_get_send_quantum(c->conn) / mtu;
	if (max_pkts < 1)
		max_pkts = 1;
	if (max_pkts > MAX_BURST_PKTS)
		max_pkts = MAX_BURST_PKTS;
	size_t npkts = 0;
	struct tx_batch batch = {0};

	for (;;) {
		uint8_t *buf = c->ep->txbuf + batch.len;
		ngtcp2_ssize ndata = -1, n;
		struct net_dgram *d = c->ready ? c->dq_head : NULL;
		if (d) {
			int accepted = 0;
			ngtcp2_vec v = {d->data, d->len};
			n = ngtcp2_conn_writev_datagram(c->conn, &ps.path, &pi, buf, mtu, &accepted,
			                                NGTCP2_WRITE_DATAGRAM_FLAG_MORE, 0, &v, 1,
			                                ts);
			if (accepted || n == NGTCP2_ERR_INVALID_ARGUMENT ||
			    n == NGTCP2_ERR_INVALID_STATE) {
				c->dq_head = d->next;
				if (!c->dq_head)
					c->dq_tail = NULL;
				c->dq_len--;
				free(d);
			}
			if (n == NGTCP2_ERR_WRITE_MORE)
				continue;
			if (n == NGTCP2_ERR_INVALID_ARGUMENT || n == NGTCP2_ERR_INVALID_STATE)
				continue; /* too large or not negotiated: dropped */
			if (n < 0) {
				conn_fail(c, (int)n, "writev_datagram");
				return;
			}
			if (n == 0)
				break; /* not accepted now (pacing, cwnd): retry on the next write
				        */
		} else {
			struct net_stream *s = c->sq_head;
			ngtcp2_vec vec[MAX_VEC];
			size_t nvec = 0;
			int64_t sid = -1;
			uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
			bool all = false;
			if (s) {
				sid = s->id;
				nvec = stream_fill_vec(s, vec, MAX_VEC, &all);
				if (all && s->fin_queued)
					flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
			}
			n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, mtu, &ndata,
			                              flags, sid, vec, nvec, ts);
			if (n < 0) {
				switch (n) {
				case NGTCP2_ERR_STREAM_DATA_BLOCKED:
					sendq_pop_head(c);
					s->blocked = true;
					continue;
				case NGTCP2_ERR_STREAM_SHUT_WR:
				case NGTCP2_ERR_STREAM_NOT_FOUND:
					sendq_pop_head(c);
					continue;
				case NGTCP2_ERR_WRITE_MORE:
					if (!s)
						continue;
					stream_advance(c, s, ndata,
					               flags & NGTCP2_WRITE_STREAM_FLAG_FIN);
					if (s->in_sendq && c->sq_head == s && s->sq_next) {
						/* round robin between streams, frame by frame */
						sendq_pop_head(c);
						sendq_push(c, s);
					}
					continue;
				}
				conn_fail(c, (int)n, "writev_stream");
				return;
			}
			if (s && ndata >= 0)
				stream_advance(c, s, ndata, flags & NGTCP2_WRITE_STREAM_FLAG_FIN);
			if (n == 0)
				break;
		}
		batch_add(c, &ps.path, &batch, (size_t)n, mtu);
		if (++npkts >= max_pkts) {
			/* more may be ready: come back after the loop has had a turn */
			if (c->sq_head || c->dq_head)
				conn_schedule_write(c);
			break;
		}
	}
	batch_flush(c, &ps.path, &batch);
	ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
	conn_arm_timer(c);
}

static void conn_on_write_ev(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_write(arg);
}

static void conn_schedule_write(struct net_conn *c)
{
	/* activating an already active event is a no-op, so many sends in one
	 * callback still cost one flush */
	if (!c->dead)
		event_active(c->wev, EV_TIMEOUT, 0);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct net_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->dead)
		return;
	int rv = ngtcp2_conn_handle_expiry(c->conn, ml_time_ns());
	if (rv != 0) {
		conn_fail(c, rv, "handle_expiry");
		return;
	}
	conn_write(c);
}

/* ---- lifecycle -------------------------------------------------------- */

static void conn_unlink(struct net_conn **list, struct net_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
}

static void conn_link(struct net_conn **list, struct net_conn *c)
{
	c->prev = NULL;
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
}

static void conn_free(struct net_conn *c)
{
	while (c->streams)
		stream_free(c, c->streams);
	while (c->dq_head) {
		struct net_dgram *d = c->dq_head;
		c->dq_head = d->next;
		free(d);
	}
	if (c->timer)
		event_free(c->timer);
	if (c->wev)
		event_free(c->wev);
	if (c->conn)
		ngtcp2_conn_del(c->conn);
	if (c->tls)
		gnutls_deinit(c->tls);
	free(c);
}

/* Marks |c| dead, tells the application if it knows the connection, and
 * queues the memory for release at a safe point. */
static void conn_finish(struct net_conn *c, const struct net_close_info *info)
{
	if (c->dead)
		return;
	struct net_endpoint *ep = c->ep;
	char a[9];
	c->dead = true;
	net_cidmap_del_value(&ep->cids, c);
	evtimer_del(c->timer);
	event_del(c->wev);
	conn_unlink(&ep->conns, c);
	conn_link(&ep->graveyard, c);
	ep->nconns--;
	const uint8_t *who = c->ready || c->dialer ? c->peer_id : NULL;
	if (info->err == ML_ERR_CLOSED)
		ML_DEBUG("net: connection with %s closed by %s (code %llu%s%s)",
		         who ? cid_short(who, a) : "?", info->by_peer ? "peer" : "us",
		         (unsigned long long)info->code, info->reason[0] ? ": " : "", info->reason);
	else
		/* half-open junk from strangers is not worth a line at info */
		ml_log(c->announced || info->err == ML_ERR_AUTH ? ML_LOG_INFO : ML_LOG_DEBUG,
		       "net: connection with %s %s failed: %s",
		       who ? cid_short(who, a) : "unknown peer",
		       c->dialer ? "(outgoing)" : "(incoming)", info->reason);
	if (c->announced && ep->cfg.cb.on_conn_closed)
		ep->cfg.cb.on_conn_closed(c, info, ep->cfg.user);
	event_active(ep->reap_ev, EV_TIMEOUT, 0);
}

static void ep_on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct net_endpoint *ep = arg;
	(void)fd;
	(void)what;
	while (ep->graveyard) {
		struct net_conn *c = ep->graveyard;
		conn_unlink(&ep->graveyard, c);
		conn_free(c);
	}
}

/* ngtcp2's own trace, one line per call, at debug level. Very verbose: only
 * when MESH_LLM_NGTCP2_LOG is set. */
static void ngtcp2_log_line(void *user, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ngtcp2_log_line(void *user, const char *fmt, ...)
{
	(void)user;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	ML_DEBUG("ngtcp2: %s", line);
}

static void fill_settings(const struct net_endpoint *ep, ngtcp2_settings *s)
{
	ngtcp2_settings_default(s);
	s->initial_ts = ml_time_ns();
	s->initial_rtt = (uint64_t)ep->cfg.initial_rtt_ms * NGTCP2_MILLISECONDS;
	s->max_window = ep->cfg.max_conn_window;
	s->max_stream_window = ep->cfg.max_stream_window;
	s->handshake_timeout = (uint64_t)ep->cfg.handshake_timeout_ms * NGTCP2_MILLISECONDS;
	s->cc_algo = NGTCP2_CC_ALGO_CUBIC;
	if (getenv("MESH_LLM_NGTCP2_LOG"))
		s->log_printf = ngtcp2_log_line;
}

static void fill_params(const struct net_endpoint *ep, ngtcp2_transport_params *p)
{
	ngtcp2_transport_params_default(p);
	p->initial_max_stream_data_bidi_local = ep->cfg.stream_window;
	p->initial_max_stream_data_bidi_remote = ep->cfg.stream_window;
	p->initial_max_stream_data_uni = 0;
	p->initial_max_data = ep->cfg.conn_window;
	p->initial_max_streams_bidi = ep->cfg.max_streams;
	p->initial_max_streams_uni = 0;
	p->max_idle_timeout = (uint64_t)ep->cfg.idle_timeout_ms * NGTCP2_MILLISECONDS;
	p->active_connection_id_limit = 4;
	p->max_datagram_frame_size = ep->cfg.datagrams ? 65535 : 0;
}

/* Fills |cb| for one role; a local per connection, so no shared state. */
static void quic_callbacks(ngtcp2_callbacks *cb, bool dialer)
{
	memset(cb, 0, sizeof(*cb));
	if (dialer) {
		cb->client_initial = ngtcp2_crypto_client_initial_cb;
		cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
	} else {
		cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
	}
	cb->recv_crypto_data = cb_recv_crypto_data;
	cb->encrypt = ngtcp2_crypto_encrypt_cb;
	cb->decrypt = ngtcp2_crypto_decrypt_cb;
	cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
	cb->update_key = ngtcp2_crypto_update_key_cb;
	cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
	cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
	cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
	cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
	cb->rand = cb_rand;
	cb->get_new_connection_id = cb_get_new_cid;
	cb->remove_connection_id = cb_remove_cid;
	cb->handshake_completed = cb_handshake_completed;
	cb->stream_open = cb_stream_open;
	cb->recv_stream_data = cb_recv_stream_data;
	cb->acked_stream_data_offset = cb_acked_stream_data_offset;
	cb->stream_close = cb_stream_close;
	cb->extend_max_stream_data = cb_extend_max_stream_data;
	cb->recv_datagram = cb_recv_datagram;
	cb->recv_stateless_reset = cb_recv_stateless_reset;
}

static int conn_setup_tls(struct net_conn *c)
{
	struct net_endpoint *ep = c->ep;
	unsigned flags = (c->dialer ? GNUTLS_CLIENT : GNUTLS_SERVER) | GNUTLS_ENABLE_EARLY_DATA |
	                 GNUTLS_NO_END_OF_EARLY_DATA | GNUTLS_NO_TICKETS;
	int grc;
	if ((grc = gnutls_init(&c->tls, flags)) < 0)
		return ml_error(ML_ERR_AUTH, "%s: gnutls_init: %s", __func__, gnutls_strerror(grc));
	grc = c->dialer ? ngtcp2_crypto_gnutls_configure_client_session(c->tls)
	                : ngtcp2_crypto_gnutls_configure_server_session(c->tls);
	if (grc != 0)
		return ml_error(ML_ERR_AUTH, "%s: configure QUIC session failed", __func__);
	if ((grc = gnutls_priority_set(c->tls, ep->prio)) < 0 ||
	    (grc = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, ep->cred)) < 0)
		return ml_error(ML_ERR_AUTH, "%s: %s", __func__, gnutls_strerror(grc));
	gnutls_datum_t alpn = {(unsigned char *)NET_ALPN, (unsigned)strlen(NET_ALPN)};
	if ((grc = gnutls_alpn_set_protocols(c->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY)) < 0)
		return ml_error(ML_ERR_AUTH, "%s: alpn: %s", __func__, gnutls_strerror(grc));
	if (!c->dialer)
		gnutls_certificate_server_set_request(c->tls, GNUTLS_CERT_REQUIRE);
	c->ref.get_conn = tls_get_conn;
	c->ref.user_data = c;
	gnutls_session_set_ptr(c->tls, &c->ref);
	return 0;
}

static struct net_conn *conn_alloc(struct net_endpoint *ep, const struct sockaddr *remote,
                                   socklen_t remote_len)
{
	struct net_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->ep = ep;
	c->created_ns = ml_time_ns();
	memcpy(&c->remote, remote, remote_len);
	c->remote_len = remote_len;
	c->timer = evtimer_new(ep->base, conn_on_timer, c);
	c->wev = event_new(ep->base, -1, 0, conn_on_write_ev, c);
	if (!c->timer || !c->wev) {
		conn_free(c);
		return NULL;
	}
	return c;
}

static int conn_register_scids(struct net_conn *c)
{
	ngtcp2_cid ids[8];
	size_t n = ngtcp2_conn_get_num_scid(c->conn);
	if (n > 8)
		n = 8;
	n = ngtcp2_conn_get_scid(c->conn, ids);
	for (size_t i = 0; i < n && i < 8; i++) {
		int rc = net_cidmap_put(&c->ep->cids, ids[i].data, ids[i].datalen, c);
		if (rc)
			return rc;
	}
	return 0;
}

int net_connect(struct net_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                const uint8_t expected_id[NET_ID_LEN], void *user, struct net_conn **out)
{
	*out = NULL;
	if (addrlen > sizeof(struct sockaddr_storage))
		return ml_error(ML_ERR_INVALID, "%s: address too long", __func__);
	struct sockaddr_in6 mapped;
	if (addr->sa_family == AF_INET && ep->udp.local.ss_family == AF_INET6) {
		/* a dual-stack socket reaches IPv4 peers through ::ffff:a.b.c.d */
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
		memset(&mapped, 0, sizeof(mapped));
		mapped.sin6_family = AF_INET6;
		mapped.sin6_port = v4->sin_port;
		mapped.sin6_addr.s6_addr[10] = 0xff;
		mapped.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&mapped.sin6_addr.s6_addr[12], &v4->sin_addr, 4);
		addr = (const struct sockaddr *)&mapped;
		addrlen = sizeof(mapped);
	} else if (addr->sa_family != ep->udp.local.ss_family) {
		return ml_error(ML_ERR_INVALID,
		                "%s: address family %d does not match the endpoint's socket",
		                __func__, addr->sa_family);
	}
	struct net_conn *c = conn_alloc(ep, addr, addrlen);
	if (!c)
		return ml_error(ML_ERR_NOMEM, "%s: connection", __func__);
	c->dialer = true;
	c->user = user;
	memcpy(c->expected_id, expected_id, NET_ID_LEN);
	memcpy(c->peer_id, expected_id, NET_ID_LEN);
	int rc = conn_setup_tls(c);
	if (rc)
		goto fail;
	ngtcp2_cid dcid, scid;
	dcid.datalen = 18;
	randombytes_buf(dcid.data, dcid.datalen);
	scid.datalen = SCID_LEN;
	randombytes_buf(scid.data, scid.datalen);
	ngtcp2_path path = {
	    {(ngtcp2_sockaddr *)&ep->udp.local, ep->udp.local_len},
	    {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
	    NULL,
	};
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_callbacks cbs;
	fill_settings(ep, &settings);
	fill_params(ep, &params);
	quic_callbacks(&cbs, true);
	int nrc = ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs,
	                                 &settings, &params, NULL, c);
	if (nrc != 0) {
		rc = ml_error(ML_ERR_NOMEM, "%s: ngtcp2_conn_client_new: %s", __func__,
		              ngtcp2_strerror(nrc));
		goto fail;
	}
	ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
	if (ep->cfg.keepalive_ms)
		ngtcp2_conn_set_keep_alive_timeout(c->conn, (uint64_t)ep->cfg.keepalive_ms *
		                                                NGTCP2_MILLISECONDS);
	if ((rc = conn_register_scids(c)) != 0)
		goto fail;
	conn_link(&ep->conns, c);
	ep->nconns++;
	c->announced = true; /* the dialer always hears how it ends */
	*out = c;
	conn_schedule_write(c);
	return 0;
fail:
	net_cidmap_del_value(&ep->cids, c);
	conn_free(c);
	return rc;
}

int net_connect_host(struct net_endpoint *ep, const char *host, uint16_t port,
                     const uint8_t expected_id[NET_ID_LEN], void *user, struct net_conn **out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	*out = NULL;
	int rc = net_udp_resolve(host, port, &ss, &len);
	if (rc)
		return rc;
	return net_connect(ep, (struct sockaddr *)&ss, len, expected_id, user, out);
}

static struct net_conn *conn_accept(struct net_endpoint *ep, const ngtcp2_pkt_hd *hd,
                                    const struct sockaddr *from, socklen_t fromlen)
{
	struct net_conn *c = conn_alloc(ep, from, fromlen);
	if (!c)
		return NULL;
	c->dialer = false;
	if (conn_setup_tls(c) != 0)
		goto fail;
	ngtcp2_cid scid;
	scid.datalen = SCID_LEN;
	randombytes_buf(scid.data, scid.datalen);
	ngtcp2_path path = {
	    {(ngtcp2_sockaddr *)&ep->udp.local, ep->udp.local_len},
	    {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
	    NULL,
	};
	ngtcp2_settings settings;
	ngtcp2_transport_params params;
	ngtcp2_callbacks cbs;
	fill_settings(ep, &settings);
	fill_params(ep, &params);
	quic_callbacks(&cbs, false);
	params.original_dcid = hd->dcid;
	params.stateless_reset_token_present = 1;
	if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token,
	                                                 ep->reset_secret, sizeof(ep->reset_secret),
	                                                 &scid) != 0)
		goto fail;
	int nrc = ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &path, hd->version, &cbs,
	                                 &settings, &params, NULL, c);
	if (nrc != 0) {
		ML_WARN("net: cannot accept connection: %s", ngtcp2_strerror(nrc));
		goto fail;
	}
	ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
	if (ep->cfg.keepalive_ms)
		ngtcp2_conn_set_keep_alive_timeout(c->conn, (uint64_t)ep->cfg.keepalive_ms *
		                                                NGTCP2_MILLISECONDS);
	/* The client keeps using its random DCID until it hears our SCID. */
	if (conn_register_scids(c) != 0 ||
	    net_cidmap_put(&ep->cids, hd->dcid.data, hd->dcid.datalen, c) != 0)
		goto fail;
	conn_link(&ep->conns, c);
	ep->nconns++;
	return c;
fail:
	net_cidmap_del_value(&ep->cids, c);
	conn_free(c);
	return NULL;
}

/* Feeds one packet to |c|. With |probe| the packet did not carry one of
 * our CIDs and is only offered so ngtcp2 can recognise a stateless reset;
 * any other failure then just drops the packet. */
static void conn_recv(struct net_conn *c, const uint8_t *data, size_t len,
                      const struct sockaddr *from, socklen_t fromlen, bool probe)
{
	struct net_endpoint *ep = c->ep;
	ngtcp2_path path = {
	    {(ngtcp2_sockaddr *)&ep->udp.local, ep->udp.local_len},
	    {(ngtcp2_sockaddr *)from, fromlen},
	    NULL,
	};
	ngtcp2_pkt_info pi = {0};
	int rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, data, len, ml_time_ns());
	if (probe && rv != NGTCP2_ERR_DRAINING)
		rv = 0;
	if (rv == 0) {
		conn_schedule_write(c);
		return;
	}
	if (rv == NGTCP2_ERR_DRAINING) {
		/* the peer closed the connection */
		ngtcp2_connection_close_error ccerr;
		ngtcp2_conn_get_connection_close_error(c->conn, &ccerr);
		char reason[256];
		size_t rl =
		    ccerr.reasonlen < sizeof(reason) - 1 ? ccerr.reasonlen : sizeof(reason) - 1;
		if (rl)
			memcpy(reason, ccerr.reason, rl);
		reason[rl] = 0;
		for (size_t i = 0; i < rl; i++)
			if ((unsigned char)reason[i] < 0x20 || (unsigned char)reason[i] == 0x7f)
				reason[i] = '?';
		struct net_close_info info = {0};
		info.by_peer = true;
		info.app_error = ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
		info.code = ccerr.error_code;
		info.err = info.app_error || ccerr.error_code == NGTCP2_NO_ERROR ? ML_ERR_CLOSED
		           : c->ready                                            ? ML_ERR_PROTO
		                                                                 : ML_ERR_AUTH;
		info.reason = reason;
		if (c->got_reset) {
			info.err = ML_ERR_CLOSED;
			info.code = 0;
			info.app_error = false;
			snprintf(reason, sizeof(reason),
			         "peer no longer knows this connection (stateless reset)");
		} else if (!rl && info.err != ML_ERR_CLOSED && !info.app_error &&
		           ccerr.error_code >= 0x100 && ccerr.error_code <= 0x1ff) {
			/* CRYPTO_ERROR: 0x100 + TLS alert (42 bad_certificate is
			 * what a pinning mismatch or allow_peer refusal gives) */
			snprintf(reason, sizeof(reason),
			         "peer refused the TLS handshake (alert %u)",
			         (unsigned)(ccerr.error_code - 0x100));
		} else if (!rl && info.err != ML_ERR_CLOSED) {
			snprintf(reason, sizeof(reason), "peer closed with transport error 0x%llx",
			         (unsigned long long)ccerr.error_code);
		}
		conn_finish(c, &info);
		return;
	}
	if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
		struct net_close_info info = {ML_ERR_PROTO, false, false, 0,
		                              "packet dropped the connection"};
		conn_finish(c, &info);
		return;
	}
	conn_fail(c, rv, "read_pkt");
}

/* ---- endpoint ---------------------------------------------------------- */

static bool addr_eq(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

/* Answers a short-header packet for a connection we do not know with a
 * stateless reset, so a peer that talks to our previous incarnation (we
 * restarted) learns at once instead of after its idle timeout. The reset is
 * shorter than the packet that triggered it, so two endpoints cannot loop,
 * and the rate is capped. */
static void ep_send_stateless_reset(struct net_endpoint *ep, const uint8_t *dcid, size_t dcidlen,
                                    size_t pktlen, const struct sockaddr *to, socklen_t tolen)
{
	if (dcidlen != SCID_LEN || pktlen < 1 + SCID_LEN + 22)
		return;
	uint64_t now = ml_time_ns();
	if (now - ep->reset_window_start_ns > 1000000000u) {
		ep->reset_window_start_ns = now;
		ep->resets_in_window = 0;
	}
	if (ep->resets_in_window >= RESETS_PER_SEC)
		return;
	ep->resets_in_window++;
	ngtcp2_cid cid;
	ngtcp2_cid_init(&cid, dcid, dcidlen);
	uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
	if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->reset_secret,
	                                                 sizeof(ep->reset_secret), &cid) != 0)
		return;
	size_t randlen = pktlen - 1 - NGTCP2_STATELESS_RESET_TOKENLEN;
	if (randlen > 40)
		randlen = 40;
	uint8_t rnd[40];
	randombytes_buf(rnd, randlen);
	ngtcp2_ssize n =
	    ngtcp2_pkt_write_stateless_reset(ep->txbuf, sizeof(ep->txbuf), token, rnd, randlen);
	ML_DEBUG("net: stateless reset of %zu bytes for a %zu-byte packet to an unknown connection",
	         (size_t)n, pktlen);
	if (n > 0)
		net_udp_send(&ep->udp, to, tolen, ep->txbuf, (size_t)n);
}

static void ep_on_packet(void *user, const uint8_t *data, size_t len, const struct sockaddr *from,
                         socklen_t fromlen)
{
	struct net_endpoint *ep = user;
	ngtcp2_version_cid vc;
	if (len == 0)
		return;
	int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, SCID_LEN);
	if (rv != 0) {
		/* version negotiation needed or garbage: we speak only v1 and
		 * answer nothing to strangers */
		return;
	}
	struct net_conn *c = net_cidmap_get(&ep->cids, vc.dcid, vc.dcidlen);
	if (c) {
		if (!c->dead)
			conn_recv(c, data, len, from, fromlen, false);
		return;
	}
	if (!(data[0] & 0x80)) {
		/* A short-header packet for no connection of ours is either a
		 * stateless reset from a peer that lost one of our connections
		 * (its "DCID" is random) or a packet for a connection we lost
		 * (we restarted, or closed and the close got lost). Offer it to
		 * every connection with that peer address so ngtcp2 can check
		 * the reset token; if none recognises it, answer with our own
		 * reset. Resets shrink by a byte per exchange and are rate
		 * limited, so two endpoints cannot loop for long. */
		if (len >= 21) {
			struct net_conn *next;
			for (c = ep->conns; c; c = next) {
				next = c->next;
				if (c->dead || !addr_eq((struct sockaddr *)&c->remote, from))
					continue;
				conn_recv(c, data, len, from, fromlen, true);
				if (c->dead)
					return;
			}
		}
		ep_send_stateless_reset(ep, vc.dcid, vc.dcidlen, len, from, fromlen);
		return;
	}
	if (!ep->cfg.accept)
		return;
	if (ep->nconns >= ep->cfg.max_conns) {
		ML_DEBUG("net: refusing a new connection: %u connections open", ep->nconns);
		return;
	}
	ngtcp2_pkt_hd hd;
	if (ngtcp2_accept(&hd, data, len) != 0)
		return;
	c = conn_accept(ep, &hd, from, fromlen);
	if (!c)
		return;
	conn_recv(c, data, len, from, fromlen, false);
	if (!c->dead && !c->got_crypto) {
		/* The Initial did not decrypt (garbage or a forgery): drop the
		 * state now rather than holding it until the handshake timeout. */
		struct net_close_info info = {ML_ERR_PROTO, false, false, 0,
		                              "undecryptable Initial"};
		conn_finish(c, &info);
	}
}

void net_endpoint_default_config(struct net_endpoint_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->idle_timeout_ms = 15000;
	cfg->keepalive_ms = 5000;
	cfg->handshake_timeout_ms = 10000;
	cfg->initial_rtt_ms = 10;
	cfg->stream_window = 1u << 20;
	cfg->conn_window = 8u << 20;
	cfg->max_stream_window = 16u << 20;
	cfg->max_conn_window = 64u << 20;
	cfg->max_streams = 1024;
	cfg->max_conns = 512;
}

struct event_base *net_event_base_new(void)
{
	struct event_config *cfg = event_config_new();
	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	struct event_base *b = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return b;
}

int net_endpoint_new(struct net_endpoint **out, struct event_base *base,
                     const struct net_endpoint_config *cfg)
{
	*out = NULL;
	if (!cfg->ident)
		return ml_error(ML_ERR_INVALID, "%s: no identity", __func__);
	struct net_endpoint *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return ml_error(ML_ERR_NOMEM, "%s: endpoint", __func__);
	int rc = 0, grc;
	ep->udp.fd = -1;
	ep->base = base;
	ep->cfg = *cfg;
	ep->ident = *cfg->ident;
	ep->cfg.ident = &ep->ident;
	if (!ep->cfg.idle_timeout_ms || !ep->cfg.initial_rtt_ms || !ep->cfg.stream_window ||
	    !ep->cfg.conn_window) {
		struct net_endpoint_config d;
		net_endpoint_default_config(&d);
		if (!ep->cfg.idle_timeout_ms)
			ep->cfg.idle_timeout_ms = d.idle_timeout_ms;
		if (!ep->cfg.initial_rtt_ms)
			ep->cfg.initial_rtt_ms = d.initial_rtt_ms;
		if (!ep->cfg.stream_window)
			ep->cfg.stream_window = d.stream_window;
		if (!ep->cfg.conn_window)
			ep->cfg.conn_window = d.conn_window;
	}
	if (!ep->cfg.max_conns)
		ep->cfg.max_conns = 512;
	net_cidmap_init(&ep->cids);
	crypto_generichash(ep->reset_secret, sizeof(ep->reset_secret),
	                   (const uint8_t *)"mesh-llm stateless reset", 24, ep->ident.sk, 32);
	if ((rc = net_ident_tls_credentials(&ep->ident, &ep->cred)) != 0)
		goto fail;
	gnutls_certificate_set_verify_function(ep->cred, tls_verify_peer);
	if ((grc = gnutls_priority_init(&ep->prio, tls_priority, NULL)) < 0) {
		rc = ml_error(ML_ERR_AUTH, "%s: priority: %s", __func__, gnutls_strerror(grc));
		goto fail;
	}
	ep->reap_ev = event_new(base, -1, 0, ep_on_reap, ep);
	if (!ep->reap_ev) {
		rc = ml_error(ML_ERR_NOMEM, "%s: event", __func__);
		goto fail;
	}
	struct sockaddr_storage ss;
	socklen_t sl;
	if ((rc = net_udp_resolve(cfg->host ? cfg->host : "0.0.0.0", cfg->port, &ss, &sl)) != 0)
		goto fail;
	if ((rc = net_udp_open(&ep->udp, base, (struct sockaddr *)&ss, sl, ep_on_packet, ep)) != 0)
		goto fail;
	*out = ep;
	return 0;
fail:
	net_endpoint_free(ep);
	return rc;
}

void net_endpoint_free(struct net_endpoint *ep)
{
	if (!ep)
		return;
	/* Say goodbye to every peer; the application is not called back. */
	while (ep->conns) {
		struct net_conn *c = ep->conns;
		c->announced = false;
		if (!c->close_pending) {
			c->app_close_code = 0;
			snprintf(c->close_reason, sizeof(c->close_reason),
			         "endpoint shutting down");
		}
		if (ep->udp.fd >= 0 && c->conn)
			conn_send_close(c);
		else
			conn_finish(c,
			            &(struct net_close_info){ML_ERR_CLOSED, false, false, 0, ""});
	}
	if (ep->reap_ev) {
		ep_on_reap(-1, 0, ep);
		event_free(ep->reap_ev);
	}
	net_udp_close(&ep->udp);
	net_cidmap_free(&ep->cids);
	if (ep->prio)
		gnutls_priority_deinit(ep->prio);
	if (ep->cred)
		gnutls_certificate_free_credentials(ep->cred);
	net_ident_clear(&ep->ident);
	free(ep);
}

uint16_t net_endpoint_port(const struct net_endpoint *ep)
{
	const struct sockaddr *sa = (const struct sockaddr *)&ep->udp.local;
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

const uint8_t *net_endpoint_id(const struct net_endpoint *ep)
{
	return ep->ident.pk;
}

void net_endpoint_set_netem(struct net_endpoint *ep, uint32_t delay_us, uint32_t jitter_us,
                            double loss_pct)
{
	net_udp_set_netem(&ep->udp, (uint64_t)delay_us * 1000u, (uint64_t)jitter_us * 1000u,
	                  loss_pct / 100.0, 0x6e65746dull);
}

int net_endpoint_send_raw(struct net_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                          const void *data, size_t len)
{
	/* Short enough that no receiver takes it for a stateless reset (21+
	 * bytes) and answers it. */
	if (len == 0 || len > 20 || ((const uint8_t *)data)[0] & 0x40)
		return ml_error(ML_ERR_INVALID,
		                "%s: raw datagrams are 1..20 bytes and start with a byte "
		                "without bit 0x40",
		                __func__);
	return net_udp_send(&ep->udp, addr, addrlen, data, len);
}

void net_endpoint_get_stats(const struct net_endpoint *ep, struct net_endpoint_stats *st)
{
	st->tx_packets = ep->udp.tx_packets;
	st->tx_bytes = ep->udp.tx_bytes;
	st->tx_dropped = ep->udp.tx_dropped;
	st->tx_calls = ep->udp.tx_calls;
	st->rx_packets = ep->udp.rx_packets;
	st->rx_bytes = ep->udp.rx_bytes;
	st->rx_calls = ep->udp.rx_calls;
	st->conns = ep->nconns;
}

/* ---- connection and stream API ------------------------------------------ */

int net_conn_close(struct net_conn *c, uint64_t app_error, const char *reason)
{
	if (c->dead || c->close_pending)
		return ML_ERR_CLOSED;
	c->close_pending = true;
	c->app_close_code = app_error;
	snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
	conn_schedule_write(c);
	return 0;
}

void net_conn_set_user(struct net_conn *c, void *user)
{
	c->user = user;
}
void *net_conn_user(const struct net_conn *c)
{
	return c->user;
}
const uint8_t *net_conn_peer_id(const struct net_conn *c)
{
	return c->peer_id;
}
bool net_conn_is_ready(const struct net_conn *c)
{
	return c->ready && !c->dead && !c->close_pending;
}
bool net_conn_is_dialer(const struct net_conn *c)
{
	return c->dialer;
}
struct net_endpoint *net_conn_endpoint(const struct net_conn *c)
{
	return c->ep;
}

const struct sockaddr *net_conn_peer_addr(const struct net_conn *c, socklen_t *len)
{
	if (c->conn) {
		const ngtcp2_path *p = ngtcp2_conn_get_path(c->conn);
		if (p && p->remote.addrlen) {
			*len = p->remote.addrlen;
			return p->remote.addr;
		}
	}
	*len = c->remote_len;
	return (const struct sockaddr *)&c->remote;
}

int net_conn_get_info(const struct net_conn *c, struct net_conn_info *info)
{
	memset(info, 0, sizeof(*info));
	if (c->dead)
		return ML_ERR_CLOSED;
	ngtcp2_conn_stat st;
	ngtcp2_conn_get_conn_stat(c->conn, &st);
	info->smoothed_rtt_ns = st.smoothed_rtt;
	info->min_rtt_ns = st.min_rtt;
	info->latest_rtt_ns = st.latest_rtt;
	info->rttvar_ns = st.rttvar;
	info->cwnd = st.cwnd;
	info->bytes_in_flight = st.bytes_in_flight;
	info->handshake_ns = c->handshake_ns;
	return 0;
}

int net_conn_export_keying_material(const struct net_conn *c, const char *label,
				    const uint8_t *ctx, size_t ctx_len, uint8_t *out,
				    size_t out_len)
{
	if (c->dead)
		return ML_ERR_CLOSED;
	if (!c->ready)
		return ML_ERR_INVALID;
	int grc = gnutls_prf_rfc5705(c->tls, strlen(label), label, ctx_len, (const char *)ctx,
				     out_len, (char *)out);
	if (grc < 0)
		return ml_error(ML_ERR_PROTO, "%s: TLS exporter failed: %s", __func__,
				gnutls_strerror(grc));
	return 0;
}

int net_stream_open(struct net_conn *c, int64_t *sid)
{
	if (c->dead || c->close_pending)
		return ML_ERR_CLOSED;
	if (!c->ready)
		return ml_error(ML_ERR_INVALID, "%s: handshake not finished", __func__);
	struct net_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return ml_error(ML_ERR_NOMEM, "%s: stream", __func__);
	int rv = ngtcp2_conn_open_bidi_stream(c->conn, sid, s);
	if (rv != 0) {
		free(s);
		if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
			return ML_ERR_BUSY;
		return ml_error(ML_ERR_INVALID, "%s: %s", __func__, ngtcp2_strerror(rv));
	}
	s->id = *sid;
	s->next = c->streams;
	c->streams = s;
	return 0;
}

int net_stream_send(struct net_conn *c, int64_t sid, const void *data, size_t len, bool fin)
{
	if (c->dead || c->close_pending)
		return ML_ERR_CLOSED;
	struct net_stream *s = stream_find(c, sid);
	if (!s)
		return ml_error(ML_ERR_NOT_FOUND, "%s: no stream %lld", __func__, (long long)sid);
	if (s->fin_queued)
		return ml_error(ML_ERR_CLOSED, "%s: stream %lld already finished", __func__,
		                (long long)sid);
	int rc = stream_append(s, data, len);
	if (rc)
		return rc;
	if (fin)
		s->fin_queued = true;
	if (stream_pending(s))
		sendq_push(c, s);
	conn_schedule_write(c);
	return 0;
}

int net_stream_shutdown(struct net_conn *c, int64_t sid, uint64_t app_error)
{
	if (c->dead)
		return ML_ERR_CLOSED;
	struct net_stream *s = stream_find(c, sid);
	if (!s)
		return ML_ERR_NOT_FOUND;
	sendq_remove(c, s);
	s->fin_queued = s->fin_sent = true;
	s->queued_end = s->sent_off;
	ngtcp2_conn_shutdown_stream(c->conn, sid, app_error);
	conn_schedule_write(c);
	return 0;
}

int net_stream_consume(struct net_conn *c, int64_t sid, size_t n)
{
	if (c->dead)
		return ML_ERR_CLOSED;
	if (!c->ep->cfg.manual_credit || n == 0)
		return 0;
	/* also for streams that closed meanwhile: the connection-level credit
	 * must come back in any case */
	ngtcp2_conn_extend_max_stream_offset(c->conn, sid, n);
	ngtcp2_conn_extend_max_offset(c->conn, n);
	conn_schedule_write(c);
	return 0;
}

uint64_t net_stream_unacked(const struct net_conn *c, int64_t sid)
{
	struct net_stream *s = stream_find(c, sid);
	return s ? s->queued_end - s->acked_off : 0;
}

int net_stream_set_user(struct net_conn *c, int64_t sid, void *user)
{
	struct net_stream *s = stream_find(c, sid);
	if (!s)
		return ML_ERR_NOT_FOUND;
	s->user = user;
	return 0;
}

void *net_stream_user(const struct net_conn *c, int64_t sid)
{
	struct net_stream *s = stream_find(c, sid);
	return s ? s->user : NULL;
}

int net_datagram_send(struct net_conn *c, const void *data, size_t len)
{
	if (c->dead || c->close_pending)
		return ML_ERR_CLOSED;
	if (!c->ready)
		return ml_error(ML_ERR_INVALID, "%s: handshake not finished", __func__);
	const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(c->conn);
	if (!rp || rp->max_datagram_frame_size == 0 || !c->ep->cfg.datagrams)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: datagrams not negotiated", __func__);
	if (len > 1200 || len + 16 > rp->max_datagram_frame_size)
		return ml_error(ML_ERR_RANGE, "%s: %zu-byte datagram is too large", __func__, len);
	if (c->dq_len >= DGRAM_QUEUE_MAX) {
		/* drop the oldest: datagrams are for fresh, loss-tolerant data */
		struct net_dgram *old = c->dq_head;
		c->dq_head = old->next;
		if (!c->dq_head)
			c->dq_tail = NULL;
		free(old);
		c->dq_len--;
	}
	struct net_dgram *d = malloc(sizeof(*d) + len);
	if (!d)
		return ml_error(ML_ERR_NOMEM, "%s", __func__);
	d->next = NULL;
	d->len = len;
	memcpy(d->data, data, len);
	if (c->dq_tail)
		c->dq_tail->next = d;
	else
		c->dq_head = d;
	c->dq_tail = d;
	c->dq_len++;
	conn_schedule_write(c);
	return 0;
}
