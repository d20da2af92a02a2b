/* Gossip payloads on the control stream (explicit encode/decode, strict).
 *
 * A node announcement describes one node and is signed by that node's
 * Ed25519 key, so relays forward it verbatim and cannot alter it:
 *
 *   u8 ann version (1) | id[32] | u64 incarnation | u64 seq | u8 role
 *   | u16 proto version | str software version
 *   | u8 n_addrs | addrs | u64 vram bytes
 *   | u8 n_models | (str name, u64 bytes) * n
 *   | str serving model | str model fingerprint | str model source
 *   | u32 layer start | u32 layer end | u32 layers total
 *   | u16 n_rtt | (id[32], u32 rtt us) * n
 *   | str extra (JSON text for later fields, may be empty)
 *   | sig[64] = Ed25519(id, "mesh-llm ann v1" | everything before sig)
 *
 * (incarnation, seq) orders announcements of one node: the incarnation is
 * chosen at start (wall-clock microseconds, so a restart is newer) and seq
 * increases with every change or refresh. Older or equal versions are
 * stale and ignored.
 *
 *   GOSSIP       u16 count | (u32 len | announcement) * count
 *   PEER_LEAVING id[32] | u64 incarnation | u64 seq
 *                | sig[64] = Ed25519(id, "mesh-llm leaving v1" | preceding)
 *   PING / PONG  u64 nonce | u64 sender's clock (ns); PONG echoes PING */
#ifndef MESH_GOSSIP_H
#define MESH_GOSSIP_H

#include "mesh/mesh_addr.h"
#include "net/net_buf.h"
#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MESH_ANN_VERSION 1
#define MESH_ANN_MAX_ADDRS 16
#define MESH_ANN_MAX_MODELS 32
#define MESH_ANN_MAX_RTTS 256
#define MESH_NAME_MAX 127   /* model names, software version: characters */
#define MESH_SOURCE_MAX 255 /* model source */
#define MESH_FP_MAX 64      /* model fingerprint */
#define MESH_EXTRA_MAX 1024 /* extra JSON text */
#define MESH_ANN_MAX_BYTES 16384
#define MESH_GOSSIP_MAX_ANNS 1024

enum mesh_role {
	MESH_ROLE_STANDBY = 0, /* full node not serving yet */
	MESH_ROLE_HOST = 1,
	MESH_ROLE_WORKER = 2,
	MESH_ROLE_CLIENT = 3,
	MESH_ROLE_COUNT
};
const char *mesh_role_name(int role); /* "standby", "host", ... or "?" */

struct mesh_model_info {
	char name[MESH_NAME_MAX + 1];
	uint64_t bytes;
};

struct mesh_rtt {
	uint8_t id[NET_ID_LEN];
	uint32_t rtt_us;
};

/* A decoded announcement (about 28 KB: allocate it, don't put it on a
 * small stack). Strings are NUL-terminated and hold no control characters. */
struct mesh_ann {
	uint8_t id[NET_ID_LEN];
	uint64_t incarnation, seq;
	uint8_t role;
	uint16_t proto;
	char version[MESH_NAME_MAX + 1];
	uint8_t n_addrs;
	struct mesh_addr addrs[MESH_ANN_MAX_ADDRS];
	uint64_t vram_bytes;
	uint8_t n_models;
	struct mesh_model_info models[MESH_ANN_MAX_MODELS];
	char serving[MESH_NAME_MAX + 1]; /* "" = none */
	char fingerprint[MESH_FP_MAX + 1];
	char source[MESH_SOURCE_MAX + 1];
	uint32_t layer_start, layer_end, n_layers;
	uint16_t n_rtts;
	struct mesh_rtt rtts[MESH_ANN_MAX_RTTS];
	char extra[MESH_EXTRA_MAX + 1];
};

/* True when version (inc_a, seq_a) is newer than (inc_b, seq_b). */
static inline bool mesh_version_newer(uint64_t inc_a, uint64_t seq_a, uint64_t inc_b,
                                      uint64_t seq_b)
{
	return inc_a > inc_b || (inc_a == inc_b && seq_a > seq_b);
}

/* Encodes and signs |a| with |ident| (whose key must be a->id) into |out|
 * (appended, unframed). Returns 0, ML_ERR_INVALID (counts over the caps,
 * wrong key) or the buffer's error. */
int mesh_ann_encode(const struct mesh_ann *a, const struct net_ident *ident, struct net_buf *out);
/* Strict decode of one announcement; does not check the signature.
 * Returns 0 or ML_ERR_FORMAT with the reason in ml_last_error(). */
int mesh_ann_decode(struct mesh_ann *a, const uint8_t *p, size_t len);
/* Checks the signature of an encoded announcement against the id inside
 * it. Returns 0, ML_ERR_FORMAT (too short) or ML_ERR_AUTH. */
int mesh_ann_verify(const uint8_t *p, size_t len);

/* Appends a framed GOSSIP message carrying |n| encoded announcements. */
int mesh_gossip_put(struct net_buf *out, const uint8_t *const *anns, const size_t *lens, size_t n);
/* Walks a GOSSIP payload: calls |fn| for every announcement blob (borrowed
 * from |p|). Checks the structure only (count cap, lengths, no trailing
 * bytes) before calling |fn| at all. Returns 0, ML_ERR_FORMAT, or the first
 * nonzero value |fn| returns. */
int mesh_gossip_walk(const uint8_t *p, size_t len,
                     int (*fn)(const uint8_t *ann, size_t ann_len, void *user), void *user);

struct mesh_leaving {
	uint8_t id[NET_ID_LEN];
	uint64_t incarnation, seq;
};
/* Appends a framed, signed PEER_LEAVING. */
int mesh_leaving_put(struct net_buf *out, const struct mesh_leaving *l,
                     const struct net_ident *ident);
/* Decodes and verifies. Returns 0, ML_ERR_FORMAT or ML_ERR_AUTH. */
int mesh_leaving_decode(struct mesh_leaving *l, const uint8_t *p, size_t len);

/* PING/PONG payloads. */
int mesh_ping_put(struct net_buf *out, uint8_t type, uint64_t nonce, uint64_t t_ns);
int mesh_ping_decode(const uint8_t *p, size_t len, uint64_t *nonce, uint64_t *t_ns);

#endif
