/* The HELLO exchange that admits a peer into the mesh (sans-I/O).
 *
 * It runs first on the control stream of every new QUIC connection, after
 * TLS has authenticated both node ids with pinned keys. Each side proves it
 * holds the mesh secret from the invite token, bound to this connection:
 *
 *   dialer   -> HELLO     v | phase 1 | nonce_d[32] | incarnation_d
 *   acceptor -> HELLO_ACK v | nonce_a[32] | incarnation_a | proof_a[32]
 *   dialer   -> HELLO     v | phase 2 | proof_d[32]
 *
 *   proof_x = HMAC-SHA256(secret, label_x | dialer id | acceptor id
 *                          | nonce_d | nonce_a | incarnation_d | incarnation_a
 *                          | u16 len | channel binding)
 *
 * with label_a = "mesh-llm/1 hello accept", label_d = "mesh-llm/1 hello dial".
 * Both nonces are fresh per connection and both ids are the TLS-pinned
 * keys, so a proof captured on one connection fails on any other (other
 * nonces, or other ids), and a relay between two real nodes fails because
 * the ids it would have to present are its own. The channel binding slot is
 * for a TLS exporter value (RFC 5705) once net exposes one; until then it
 * is empty and freshness comes from the nonces (see the report in
 * mesh.h).
 *
 * The dialer verifies proof_a before it sends anything else; the acceptor
 * verifies proof_d before it sends anything else. A side that fails never
 * learns more than a MAC of nonces it chose. All integers are big-endian. */
#ifndef MESH_AUTH_H
#define MESH_AUTH_H

#include "mesh/mesh_token.h"
#include "net/net_buf.h"

#include <stdbool.h>
#include <stdint.h>

#define MESH_PROTO_VERSION 2
#define MESH_NONCE_LEN 32
#define MESH_PROOF_LEN 32
#define MESH_BINDING_MAX 64

enum mesh_auth_state {
	MESH_AUTH_START = 0,
	MESH_AUTH_WAIT_ACK,   /* dialer sent phase 1 */
	MESH_AUTH_WAIT_HELLO, /* acceptor waits for phase 1 */
	MESH_AUTH_WAIT_PROOF, /* acceptor sent its ACK */
	MESH_AUTH_DONE,
	MESH_AUTH_FAILED,
};

struct mesh_auth {
	bool dialer;
	enum mesh_auth_state state;
	uint8_t secret[MESH_SECRET_LEN];
	uint8_t self_id[NET_ID_LEN], peer_id[NET_ID_LEN];
	uint8_t nonce_d[MESH_NONCE_LEN], nonce_a[MESH_NONCE_LEN];
	uint64_t inc_self, inc_peer; /* incarnations */
	uint8_t binding[MESH_BINDING_MAX];
	uint8_t binding_len;
	uint16_t peer_version;
	char reason[160]; /* why it failed, for the log */
};

/* Prepares one side. |peer_id| is the TLS-authenticated id of the other
 * end; |binding| (may be NULL with len 0, at most MESH_BINDING_MAX bytes)
 * is channel-binding material both sides derive from the TLS session.
 * Nonces come from the system CSPRNG. */
void mesh_auth_init(struct mesh_auth *a, bool dialer, const uint8_t secret[MESH_SECRET_LEN],
                    const uint8_t self_id[NET_ID_LEN], const uint8_t peer_id[NET_ID_LEN],
                    uint64_t incarnation, const uint8_t *binding, size_t binding_len);
/* Dialer only: appends the framed phase-1 HELLO to |out|. Returns 0 or the
 * buffer's error. */
int mesh_auth_start(struct mesh_auth *a, struct net_buf *out);
/* Handles one control-stream message of type |type|. Replies (framed) are
 * appended to |out|. Returns 1 when this side is now done (the peer
 * proved the secret; for the dialer the phase-2 HELLO is in |out|), 0 when
 * more is expected, or ML_ERR_AUTH (wrong proof) / ML_ERR_PROTO (bad or
 * unexpected message, version mismatch) with |a->reason| set. */
int mesh_auth_recv(struct mesh_auth *a, uint8_t type, const uint8_t *payload, size_t len,
                   struct net_buf *out);
/* Wipes the secret. */
void mesh_auth_clear(struct mesh_auth *a);

/* The proof for the given transcript (exposed for tests). |accept| selects
 * the acceptor's label. */
void mesh_auth_proof(const struct mesh_auth *a, bool accept, uint8_t out[MESH_PROOF_LEN]);

#endif
