/* The mesh node: one QUIC endpoint, invite tokens, the HELLO admission,
 * gossip membership, RTT, failure detection, status, and application
 * streams (HTTP tunnel, pipeline stages) to authenticated peers.
 *
 * Wiring into `mesh-llm serve` (everything on the event-loop thread):
 *
 *   struct net_ident id;  mesh_ident_load(&id, NULL, client, NULL);
 *   // (~/.mesh-llm/key, created 0600 on first run; --client: fresh key)
 *   struct mesh_config cfg; mesh_default_config(&cfg);
 *   cfg.ident = &id; cfg.port = bind_port;            // --bind-port
 *   cfg.join = tokens; cfg.n_join = n;                // --join (repeatable)
 *   cfg.role = client ? MESH_ROLE_CLIENT : MESH_ROLE_STANDBY;   // --client
 *   cfg.vram_bytes = min(detected, max_vram);         // --max-vram
 *   cfg.cb.on_change = ...;  // membership changed: re-elect, re-plan
 *   cfg.cb.on_stream = ...;  // a peer opened an HTTP tunnel / stage stream
 *   mesh_new(&mesh, base, &cfg);
 *   mesh_invite_token(mesh, tok, sizeof tok); -> print "Invite token: %s"
 *   mesh_set_models(...), mesh_set_serving(...) as the node loads a model
 *   mesh_models_scan(NULL, models, n) lists ~/.models for mesh_set_models
 *   GET /mesh/status -> json_t *j = mesh_status_json(mesh); ... json_decref(j)
 *   GET /v1/models   -> mesh_served_models_json(mesh)
 *   proxy a request: mesh_route(mesh, model, host_id, &self) (NOT_FOUND ->
 *                    503), then mesh_stream_open(mesh, host_id,
 *                    NET_STREAM_HTTP, &cbs, ctx, &s) and
 *                    mesh_stream_send(s, NET_MSG_HTTP_REQUEST, ...)
 *   --delay-ms style test knob: net_endpoint_set_netem(mesh_endpoint(mesh),..)
 *   SIGINT/SIGTERM -> mesh_leave(mesh, done, ctx); mesh_free(mesh) may be
 *                     called from |done|
 *
 * Keep the loop responsive: a node whose loop is blocked for suspect_ms
 * (4 s) looks suspect to its peers and for dead_ms (10 s) dead, so long
 * work (loading weights) belongs on a worker thread.
 *
 * Security: the dialer pins the peer's node id (from the token or from
 * gossip), the acceptor learns the dialer's id from TLS; then mesh_auth
 * proves the mesh secret both ways. Until that succeeds nothing else is
 * read or sent on the connection: other streams are reset, any other
 * message closes the connection, and the HELLO must finish within
 * hello_timeout_ms. Announcements are signed by their node, so relays can
 * neither forge nor alter them.
 *
 * Lifetimes: struct mesh_stream pointers are valid until their on_close
 * callback returns; member pointers passed to on_change are valid during
 * the call (look them up again later with mesh_member_get). */
#ifndef MESH_H
#define MESH_H

#include "mesh/mesh_gossip.h"
#include "mesh/mesh_member.h"
#include "mesh/mesh_token.h"
#include "net/net_frame.h"
#include "net/net_ident.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct net_endpoint;
struct mesh;
struct mesh_stream;

/* Close codes we send (QUIC application error codes). */
enum mesh_close_code {
	MESH_CLOSE_NORMAL = 0,
	MESH_CLOSE_AUTH = 0x101,      /* HELLO proof failed */
	MESH_CLOSE_PROTO = 0x102,     /* malformed or unexpected message */
	MESH_CLOSE_TIMEOUT = 0x103,   /* HELLO not finished in time */
	MESH_CLOSE_DUPLICATE = 0x104, /* a second connection between the same nodes */
	MESH_CLOSE_LEAVING = 0x105,   /* this node shuts down */
	MESH_CLOSE_DEAD = 0x106,      /* declared dead after silence */
	MESH_STREAM_REFUSED = 0x110,  /* stream reset: not authenticated / not wanted */
	MESH_STREAM_BAD = 0x111,      /* stream reset: malformed message */
};

struct mesh_stream_callbacks {
	/* One whole message of the stream; |payload| valid during the call. */
	void (*on_msg)(struct mesh_stream *s, uint8_t type, const uint8_t *payload, size_t len,
	               void *user);
	/* The peer finished its side (no more messages). */
	void (*on_fin)(struct mesh_stream *s, void *user);
	/* The stream is gone: |err| 0 after a clean finish both ways, else
	 * ML_ERR_CLOSED (reset or connection lost) or ML_ERR_PROTO (malformed
	 * input; the stream was reset). |s| is freed when this returns. */
	void (*on_close)(struct mesh_stream *s, int err, void *user);
	/* Optional: the peer acknowledged data; |unacked| bytes remain. */
	void (*on_acked)(struct mesh_stream *s, uint64_t unacked, void *user);
};

struct mesh_callbacks {
	/* Membership changed (|m| is the member, |ev| what happened). */
	void (*on_change)(struct mesh *mesh, const struct mesh_member *m, enum mesh_event ev,
	                  void *user);
	/* An authenticated peer opened a stream of |stream_type| (NET_STREAM_HTTP
	 * or NET_STREAM_STAGE). Call mesh_stream_set_callbacks() to take it;
	 * otherwise it is reset when this returns. */
	void (*on_stream)(struct mesh *mesh, struct mesh_stream *s, uint8_t stream_type,
	                  const uint8_t peer[NET_ID_LEN], void *user);
};

struct mesh_config {
	const struct net_ident *ident; /* copied */
	const char *bind_host;         /* NULL = all IPv4 interfaces; "::" dual stack */
	uint16_t port;                 /* UDP port, 0 = ephemeral */
	enum mesh_role role;
	uint64_t vram_bytes;     /* advertised memory (already capped by --max-vram) */
	const char *version;     /* software version string, NULL = "dev" */
	const char *const *join; /* invite tokens (text); none = start a new mesh */
	size_t n_join;
	/* Without tokens: file keeping the started mesh's id and secret across
	 * restarts (mesh_secret_load_or_create), e.g. ~/.mesh-llm/mesh; NULL =
	 * a new mesh every start. */
	const char *mesh_file;
	/* Advertised addresses instead of the ones found on the interfaces
	 * (NAT, tests); NULL = automatic. */
	const struct mesh_addr *addrs;
	size_t n_addrs;
	uint32_t ping_ms;          /* PING each peer this often (RTT, liveness); default 1000 */
	uint32_t announce_ms;      /* re-announce ourselves this often; default 2000 */
	uint32_t suspect_ms;       /* silent this long -> suspect; default 4000 */
	uint32_t dead_ms;          /* silent this long -> dead; default 10000 */
	uint32_t forget_ms;        /* dead/left nodes leave the status after; default 60000 */
	uint32_t hello_timeout_ms; /* default 5000 */
	uint32_t idle_timeout_ms;  /* QUIC idle timeout, default 15000 */
	struct mesh_callbacks cb;
	void *user;
};

void mesh_default_config(struct mesh_config *cfg);

/* Starts the node on |base|: binds the endpoint, and either creates a new
 * mesh (no tokens: fresh random mesh id and secret) or starts dialing the
 * issuers of the tokens (all must name the same mesh). Returns 0,
 * ML_ERR_INVALID (bad config or token; ml_last_error() says which),
 * ML_ERR_IO (bind) or ML_ERR_NOMEM. */
int mesh_new(struct mesh **out, struct event_base *base, const struct mesh_config *cfg);
/* Closes everything without goodbye (peers see the connections close) and
 * frees; open application streams get on_close(ML_ERR_CLOSED) first.
 * Accepts NULL. Not from a mesh callback other than mesh_leave's |done|. */
void mesh_free(struct mesh *mesh);
/* Clean shutdown: tells every peer we are leaving (signed PEER_LEAVING),
 * waits until they acknowledged it (at most ~1 s), then calls |done| from
 * the loop; mesh_free() (in |done| or after) closes the connections.
 * Stops dialing and refuses new peers meanwhile. */
void mesh_leave(struct mesh *mesh, void (*done)(void *user), void *user);

/* This node's invite token (text, NUL-terminated) naming this node and its
 * addresses. Returns the length or a negative ML_ERR_*. */
int mesh_invite_token(const struct mesh *mesh, char *out, size_t cap);
const uint8_t *mesh_node_id(const struct mesh *mesh);
const uint8_t *mesh_mesh_id(const struct mesh *mesh);
uint16_t mesh_port(const struct mesh *mesh);
/* The QUIC endpoint (for the delay/loss test knob and counters). */
struct net_endpoint *mesh_endpoint(struct mesh *mesh);
/* True once at least one peer admitted us (or we started the mesh). */
bool mesh_joined(const struct mesh *mesh);

/* What this node advertises. Each call re-announces at once (calls in the
 * same loop iteration are coalesced). Strings are copied; over-long ones
 * are refused with ML_ERR_RANGE. */
int mesh_set_role(struct mesh *mesh, enum mesh_role role);
int mesh_set_vram(struct mesh *mesh, uint64_t bytes);
int mesh_set_models(struct mesh *mesh, const struct mesh_model_info *models, size_t n);
/* |model| NULL or "" = serving nothing. Layers [start, end) of |n_layers|. */
int mesh_set_serving(struct mesh *mesh, const char *model, const char *fingerprint,
                     const char *source, uint32_t layer_start, uint32_t layer_end,
                     uint32_t n_layers);
/* Free-form JSON text for fields the wire format does not have yet. */
int mesh_set_extra(struct mesh *mesh, const char *json_text);

/* The membership table (this node included; read-only; valid until the
 * loop runs again). */
const struct mesh_members *mesh_members(const struct mesh *mesh);
const struct mesh_member *mesh_member_get(const struct mesh *mesh, const uint8_t id[NET_ID_LEN]);
/* True when |id| is alive and has an authenticated connection with us. */
bool mesh_peer_connected(const struct mesh *mesh, const uint8_t id[NET_ID_LEN]);

/* Where to send an API request for |model| (NULL or "" = any served
 * model): an alive node serving it whose role is host (a worker only holds
 * layers), this node or a connected peer, preferring this node, then the
 * lowest RTT. Sets |id| and |*is_self| (may be NULL). Returns 0 or
 * ML_ERR_NOT_FOUND (nobody serves it: answer 503). */
int mesh_route(const struct mesh *mesh, const char *model, uint8_t id[NET_ID_LEN], bool *is_self);
/* The distinct model names hosted by alive nodes (this one included), for
 * /v1/models: a new JSON array of strings (caller decrefs), NULL on
 * allocation failure. */
json_t *mesh_served_models_json(const struct mesh *mesh);

/* Messages and bytes (5-byte header included) sent and received per
 * message type (enum net_msg_type), all streams and peers together; for
 * "no weight bytes on the network" checks and activation-size reports. */
struct mesh_traffic {
	uint64_t tx_msgs[256], tx_bytes[256];
	uint64_t rx_msgs[256], rx_bytes[256];
};
const struct mesh_traffic *mesh_get_traffic(const struct mesh *m);

/* {"mesh_id", "node_id", "port", "joined", "traffic": {type name: {tx_msgs,
 * tx_bytes, rx_msgs, rx_bytes}}, "nodes": [{id, self, role, state,
 * addresses, vram_gb, models, serving, layers, rtt_ms (QUIC smoothed RTT),
 * ping_ms (last PING round trip through both event loops), version,
 * incarnation, seq, connected, last_seen_ms}]}. New reference (caller
 * json_decref()s it); NULL on allocation failure. state is "alive",
 * "suspect" or "dead"; dead nodes stay listed until forget_ms passes, nodes
 * that left cleanly are omitted at once. */
json_t *mesh_status_json(const struct mesh *mesh);

/* --- application streams ------------------------------------------------ */

/* Opens a stream of |stream_type| (NET_STREAM_HTTP or NET_STREAM_STAGE) to
 * peer |id|, which must be connected and authenticated. The stream-type
 * byte is sent for you. Returns 0, ML_ERR_NOT_FOUND (no such connected
 * peer), ML_ERR_INVALID (bad type), ML_ERR_BUSY (peer's stream limit) or
 * ML_ERR_NOMEM. */
int mesh_stream_open(struct mesh *mesh, const uint8_t id[NET_ID_LEN], uint8_t stream_type,
                     const struct mesh_stream_callbacks *cb, void *user, struct mesh_stream **out);
void mesh_stream_set_callbacks(struct mesh_stream *s, const struct mesh_stream_callbacks *cb,
                               void *user);
/* Sends one framed message; |fin| ends our side after it. Returns 0,
 * ML_ERR_PROTO / ML_ERR_RANGE (type not allowed on this stream, too big),
 * ML_ERR_CLOSED or ML_ERR_NOMEM. */
int mesh_stream_send(struct mesh_stream *s, uint8_t type, const void *payload, size_t len,
                     bool fin);
/* Ends our side without a message. */
int mesh_stream_finish(struct mesh_stream *s);
/* Aborts both directions; on_close follows with ML_ERR_CLOSED. */
void mesh_stream_reset(struct mesh_stream *s, uint64_t code);
const uint8_t *mesh_stream_peer(const struct mesh_stream *s);
uint8_t mesh_stream_type(const struct mesh_stream *s);
uint64_t mesh_stream_unacked(const struct mesh_stream *s);

#endif
