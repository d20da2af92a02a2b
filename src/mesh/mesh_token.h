/* Invite tokens: what a node needs to join a mesh, as one copy-pasteable
 * string. The string is the unpadded base64url of a versioned binary blob:
 *
 *   "MLTK" | u8 version (1) | mesh id [16] | issuer node id [32]
 *   | mesh secret [32] | u8 address count (1..MESH_TOKEN_MAX_ADDRS)
 *   | addresses (mesh_addr wire form) | check [4]
 *
 * where check = the first 4 bytes of BLAKE2b-256 of everything before it,
 * so a mistyped or truncated token is reported as such. Decoding is strict:
 * exact length, known version, address count within the cap, no trailing
 * bytes. The secret is what proves membership (mesh_auth); anyone holding
 * the token can join, so treat it like a password. */
#ifndef MESH_TOKEN_H
#define MESH_TOKEN_H

#include "mesh/mesh_addr.h"
#include "net/net_ident.h"

#include <stddef.h>
#include <stdint.h>

#define MESH_TOKEN_VERSION 1
#define MESH_ID_LEN 16
#define MESH_SECRET_LEN 32
#define MESH_TOKEN_MAX_ADDRS 16
/* Longest blob: 4+1+16+32+32+1 + 16*19 + 4 = 394 bytes -> 526 characters. */
#define MESH_TOKEN_MAX_BLOB 394
#define MESH_TOKEN_MAX_LEN 528 /* characters with the NUL */

struct mesh_token {
	uint8_t mesh_id[MESH_ID_LEN];
	uint8_t issuer[NET_ID_LEN];
	uint8_t secret[MESH_SECRET_LEN];
	uint8_t n_addrs;
	struct mesh_addr addrs[MESH_TOKEN_MAX_ADDRS];
};

/* Binary blob of |t| into |out| (|cap| >= MESH_TOKEN_MAX_BLOB suffices).
 * Returns its length, ML_ERR_INVALID (no address or too many, bad family)
 * or ML_ERR_RANGE (|cap| too small). */
int mesh_token_encode_blob(const struct mesh_token *t, uint8_t *out, size_t cap);
/* Strict decode of a blob. Returns 0 or ML_ERR_FORMAT (with the reason in
 * ml_last_error()). */
int mesh_token_decode_blob(struct mesh_token *t, const uint8_t *in, size_t len);
/* The text form, NUL-terminated, into |out| (MESH_TOKEN_MAX_LEN bytes).
 * Returns its length or a negative ML_ERR_*. */
int mesh_token_encode(const struct mesh_token *t, char *out, size_t cap);
/* Parses the text form; surrounding whitespace is ignored. Returns 0 or
 * ML_ERR_FORMAT. */
int mesh_token_decode(struct mesh_token *t, const char *s);

#endif
