/* QUIC transport for the mesh: the one wrapper around ngtcp2 0.12 + GnuTLS.
 *
 * An endpoint is one UDP socket on a libevent loop that carries both roles:
 * it dials peers (net_connect) and, when configured to, accepts them. Every
 * connection is mutually authenticated with pinned Ed25519 keys: each side
 * presents a self-signed certificate for its node key (net_ident), the
 * dialer names the id it expects and the handshake fails if the server's key
 * differs; the acceptor learns the dialer's id from its certificate (and may
 * refuse it through allow_peer). ALPN is "mesh-llm/1", TLS 1.3 only.
 *
 * Streams are bidirectional. Sending copies the bytes into a per-stream
 * chunk list that is freed as the peer acknowledges it; there is no limit
 * besides memory, so callers that produce a lot watch net_stream_unacked().
 * Received bytes are handed to on_stream_data in order and the flow-control
 * credit is returned as soon as the callback returns (or, with manual_credit,
 * when the application calls net_stream_consume: that is how a slow
 * consumer pushes back on the sender).
 *
 * Threading: everything here runs on the loop's thread. Callbacks run on it
 * too, from inside packet processing: they may call net_stream_open,
 * net_stream_send, net_stream_shutdown, net_stream_consume,
 * net_datagram_send, net_conn_close and net_connect (all only queue work;
 * packets go out after the callback), but must not free the endpoint.
 *
 * Lifetime: a struct net_conn is owned by the endpoint. The application's
 * pointer is valid from net_connect() (dialer) or on_conn_ready (acceptor)
 * until on_conn_closed returns; the memory is released later, at a safe
 * point of the loop. on_conn_closed fires exactly once for every dialed
 * connection (also when the handshake fails) and for every accepted
 * connection that became ready. */
#ifndef NET_QUIC_H
#define NET_QUIC_H

#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct net_endpoint;
struct net_conn;

#define NET_ALPN "mesh-llm/1"

/* Why a connection ended. */
struct net_close_info {
	int err;            /* ML_ERR_CLOSED (orderly close by either side), ML_ERR_AUTH
	                     * (handshake or key pinning failed), ML_ERR_TIMEOUT (idle or
	                     * handshake timeout), ML_ERR_PROTO (protocol error), ML_ERR_IO */
	bool by_peer;       /* the peer sent the close */
	bool app_error;     /* |code| is an application code (net_conn_close) */
	uint64_t code;      /* application or QUIC transport error code */
	const char *reason; /* human-readable, never NULL; valid during the callback */
};

struct net_quic_callbacks {
	/* Handshake done and the peer authenticated; net_conn_peer_id() is set. */
	void (*on_conn_ready)(struct net_conn *c, void *user);
	/* The peer opened stream |sid| (called before its first data). */
	void (*on_stream_open)(struct net_conn *c, int64_t sid, void *user);
	/* In-order bytes of stream |sid|; |fin| marks the end of the peer's
	 * side (possibly with len == 0). |data| is valid during the call. */
	void (*on_stream_data)(struct net_conn *c, int64_t sid, const uint8_t *data, size_t len,
	                       bool fin, void *user);
	/* Stream |sid| is gone (both sides finished, or reset); |app_error| is
	 * the peer's or our reset code, 0 for a clean close. */
	void (*on_stream_close)(struct net_conn *c, int64_t sid, uint64_t app_error, void *user);
	/* The connection ended; see the lifetime rules above. */
	void (*on_conn_closed)(struct net_conn *c, const struct net_close_info *info, void *user);
	/* An unreliable DATAGRAM arrived (only when datagrams are enabled). */
	void (*on_datagram)(struct net_conn *c, const uint8_t *data, size_t len, void *user);
	/* The peer acknowledged data on |sid|; |unacked| bytes remain queued.
	 * Producers use it to refill (optional). */
	void (*on_stream_acked)(struct net_conn *c, int64_t sid, uint64_t unacked, void *user);
	/* Acceptor side: return false to refuse a dialer whose key is |id|
	 * (called during the handshake). NULL accepts every authenticated key. */
	bool (*allow_peer)(const uint8_t id[NET_ID_LEN], void *user);
};

struct net_endpoint_config {
	/* copied */
	const struct net_ident *ident;
	/* address to bind, e.g. "127.0.0.1", "::" (dual stack); NULL = 0.0.0.0 */
	const char *host;
	/* 0 = ephemeral (see net_endpoint_port) */
	uint16_t port;
	/* accept incoming connections */
	bool accept;
	/* offer QUIC DATAGRAM frames */
	bool datagrams;
	/* receive credit comes back only through net_stream_consume() */
	bool manual_credit;
	/* a silent peer is declared gone after this; default 15000 */
	uint32_t idle_timeout_ms;
	/* PINGs when idle this long; default 5000, 0 = off */
	uint32_t keepalive_ms;
	/* default 10000 */
	uint32_t handshake_timeout_ms;
	/* default 10 (the library default of 333 stalls handshakes) */
	uint32_t initial_rtt_ms;
	/* initial receive windows per stream and per connection, default 1 MiB
	 * and 8 MiB; auto-tuning may grow them to the ceilings, default 16 MiB
	 * and 64 MiB */
	uint64_t stream_window, conn_window;
	uint64_t max_stream_window, max_conn_window;
	/* concurrent streams the peer may open, default 1024 */
	uint32_t max_streams;
	/* connections (both roles) before new dialers are ignored, default 512 */
	uint32_t max_conns;
	struct net_quic_callbacks cb;
	/* passed to every callback */
	void *user;
};

/* A libevent base with precise (sub-millisecond) timers, which pacing and
 * the delay knob want; plain event_base_new() rounds timers to 1 ms. The
 * caller frees it with event_base_free(). NULL on failure. */
struct event_base *net_event_base_new(void);

/* Fills |cfg| with the defaults above (ident and callbacks NULL). */
void net_endpoint_default_config(struct net_endpoint_config *cfg);

/* Opens an endpoint on |base|. Returns 0, ML_ERR_INVALID (no identity),
 * ML_ERR_IO (bind failed), ML_ERR_AUTH (certificate) or ML_ERR_NOMEM. */
int net_endpoint_new(struct net_endpoint **out, struct event_base *base,
                     const struct net_endpoint_config *cfg);
/* Closes every connection (a CONNECTION_CLOSE is sent, no callbacks fire),
 * the socket, and frees the endpoint. Accepts NULL. Not from a callback. */
void net_endpoint_free(struct net_endpoint *ep);
/* Bound UDP port. */
uint16_t net_endpoint_port(const struct net_endpoint *ep);
/* The endpoint's own node id. */
const uint8_t *net_endpoint_id(const struct net_endpoint *ep);
/* Test knob: delays each outgoing packet of this endpoint by |delay_us|
 * (+- uniform |jitter_us|) and drops |loss_pct| percent of them. Zeroes turn
 * it off. Applies to packets sent from now on. */
void net_endpoint_set_netem(struct net_endpoint *ep, uint32_t delay_us, uint32_t jitter_us,
                            double loss_pct);

/* Sends one plain UDP datagram of 1..20 bytes from the endpoint's socket,
 * e.g. to punch a NAT hole towards |addr| before dialing it. The first byte
 * must have bit 0x40 clear so no QUIC stack mistakes it for a packet
 * (receivers drop it silently). Returns 0, ML_ERR_INVALID or ML_ERR_IO. */
int net_endpoint_send_raw(struct net_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                          const void *data, size_t len);

struct net_endpoint_stats {
	uint64_t tx_packets, tx_bytes, tx_dropped; /* dropped = netem loss or full socket buffer */
	uint64_t tx_calls; /* send system calls (GSO sends many packets per call) */
	uint64_t rx_packets, rx_bytes;
	uint64_t rx_calls; /* receive system calls (GRO delivers many packets per call) */
	uint32_t conns;
};
void net_endpoint_get_stats(const struct net_endpoint *ep, struct net_endpoint_stats *st);

/* Dials |addr|, expecting the peer's node id to be |expected_id|. |user|
 * is stored on the connection (net_conn_user). On success |*out| is the
 * new connection, which reports on_conn_ready or on_conn_closed later.
 * An IPv4 |addr| on a dual-stack ("::") endpoint is mapped to ::ffff:a.b.c.d.
 * Returns 0, ML_ERR_INVALID (address family the socket cannot reach),
 * ML_ERR_NOMEM or ML_ERR_AUTH (TLS setup). */
int net_connect(struct net_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                const uint8_t expected_id[NET_ID_LEN], void *user, struct net_conn **out);
/* Same with a numeric address or a host name. Name resolution blocks the
 * loop (getaddrinfo), so the mesh should pass numeric addresses. Also
 * ML_ERR_NOT_FOUND. */
int net_connect_host(struct net_endpoint *ep, const char *host, uint16_t port,
                     const uint8_t expected_id[NET_ID_LEN], void *user, struct net_conn **out);

/* Starts an orderly close: pending data is abandoned and the peer gets
 * |app_error| and |reason| (may be NULL). on_conn_closed follows (err
 * ML_ERR_CLOSED, by_peer false) from the loop, not from inside this call.
 * Returns 0 or ML_ERR_CLOSED if the connection is already closing. */
int net_conn_close(struct net_conn *c, uint64_t app_error, const char *reason);

void net_conn_set_user(struct net_conn *c, void *user);
void *net_conn_user(const struct net_conn *c);
/* The authenticated peer id (valid once ready; for a dialer it equals the
 * expected id). */
const uint8_t *net_conn_peer_id(const struct net_conn *c);
bool net_conn_is_ready(const struct net_conn *c);
bool net_conn_is_dialer(const struct net_conn *c);
struct net_endpoint *net_conn_endpoint(const struct net_conn *c);
/* Peer's address as seen by this endpoint. */
const struct sockaddr *net_conn_peer_addr(const struct net_conn *c, socklen_t *len);

struct net_conn_info {
	uint64_t smoothed_rtt_ns, min_rtt_ns, latest_rtt_ns, rttvar_ns;
	uint64_t cwnd, bytes_in_flight;
	uint64_t handshake_ns; /* from creation to handshake completion; 0 before */
};
int net_conn_get_info(const struct net_conn *c, struct net_conn_info *info);

/* TLS exporter (RFC 5705/8446 keying material) of this connection's
 * session: |out_len| bytes derived from |label| and |ctx|. Both ends of one
 * connection get the same bytes; any other connection gets different ones,
 * so a proof computed over them cannot be replayed elsewhere. Returns 0,
 * ML_ERR_INVALID before the handshake completes, ML_ERR_CLOSED, or
 * ML_ERR_PROTO when TLS refuses. */
int net_conn_export_keying_material(const struct net_conn *c, const char *label,
				    const uint8_t *ctx, size_t ctx_len, uint8_t *out,
				    size_t out_len);

/* Opens a bidirectional stream and returns its id in |*sid|. Returns 0,
 * ML_ERR_INVALID (handshake not done), ML_ERR_BUSY (the peer's stream
 * limit is reached; retry after a stream closes), ML_ERR_CLOSED, or
 * ML_ERR_NOMEM. */
int net_stream_open(struct net_conn *c, int64_t *sid);
/* Queues |len| bytes (copied) and, with |fin|, the end of our side.
 * Returns 0, ML_ERR_NOT_FOUND (no such open stream), ML_ERR_CLOSED (fin
 * already queued or connection closing) or ML_ERR_NOMEM. */
int net_stream_send(struct net_conn *c, int64_t sid, const void *data, size_t len, bool fin);
/* Aborts both directions of |sid| with |app_error| (RESET_STREAM and
 * STOP_SENDING). on_stream_close follows. Returns 0 or ML_ERR_NOT_FOUND. */
int net_stream_shutdown(struct net_conn *c, int64_t sid, uint64_t app_error);
/* With |manual_credit|: the application has consumed |n| more bytes of
 * |sid| (delivered earlier by on_stream_data), so the peer may send that
 * much more. Call it for every delivered byte, also after the stream
 * closed, or the connection-wide window shrinks for good. Without
 * manual_credit it does nothing. Returns 0 or ML_ERR_CLOSED. */
int net_stream_consume(struct net_conn *c, int64_t sid, size_t n);
/* Bytes queued on |sid| and not yet acknowledged (0 for unknown streams). */
uint64_t net_stream_unacked(const struct net_conn *c, int64_t sid);
/* Per-stream application pointer. */
int net_stream_set_user(struct net_conn *c, int64_t sid, void *user);
void *net_stream_user(const struct net_conn *c, int64_t sid);

/* Queues one unreliable datagram (copied). Returns 0, ML_ERR_UNSUPPORTED
 * (the peer did not offer datagrams), ML_ERR_RANGE (too large) or
 * ML_ERR_NOMEM. At most 256 datagrams wait for congestion control; beyond
 * that the oldest is dropped. */
int net_datagram_send(struct net_conn *c, const void *data, size_t len);

#endif
