/* Node identity: one Ed25519 key pair (libsodium) that signs mesh messages
 * and also backs the node's self-signed QUIC/TLS certificate (GnuTLS).
 * The node id is the 32-byte Ed25519 public key; peers pin it during the TLS
 * handshake, so a connection to id X is proof of talking to X's key. */
#ifndef NET_IDENT_H
#define NET_IDENT_H

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_ID_LEN 32
#define NET_SIG_LEN 64
#define NET_ID_HEX_LEN 64 /* characters, without the NUL */

struct net_ident {
	uint8_t pk[NET_ID_LEN]; /* public key = node id */
	uint8_t sk[64];         /* libsodium secret key (seed || pk); keep private */
};

/* Creates a fresh random identity. Returns 0 or ML_ERR_IO (libsodium init). */
int net_ident_generate(struct net_ident *id);
/* Derives the identity from a 32-byte |seed| (tests use fixed seeds). */
int net_ident_from_seed(struct net_ident *id, const uint8_t seed[32]);
/* Writes |id| to |path| as a small text file readable only by the owner
 * (mode 0600, written to a temporary file and renamed into place).
 * Returns 0 or ML_ERR_IO. */
int net_ident_save(const struct net_ident *id, const char *path);
/* Reads a key file written by net_ident_save. Returns 0, ML_ERR_NOT_FOUND
 * (no such file), ML_ERR_IO, or ML_ERR_FORMAT (bad contents). Warns in the
 * log when the file is readable by group or others. */
int net_ident_load(struct net_ident *id, const char *path);
/* Loads |path|, or creates and saves a new identity there when it does not
 * exist. |*created| (may be NULL) says which happened. */
int net_ident_load_or_create(struct net_ident *id, const char *path, bool *created);
/* Wipes the secret key. */
void net_ident_clear(struct net_ident *id);

/* Ed25519 signature of |msg|. */
void net_ident_sign(const struct net_ident *id, const void *msg, size_t len,
                    uint8_t sig[NET_SIG_LEN]);
/* Returns 0 when |sig| is |pk|'s signature of |msg|, else ML_ERR_AUTH. */
int net_ident_verify(const uint8_t pk[NET_ID_LEN], const void *msg, size_t len,
                     const uint8_t sig[NET_SIG_LEN]);

/* Lowercase hex of an id into |out| (65 bytes with the NUL). */
void net_id_to_hex(const uint8_t id[NET_ID_LEN], char out[NET_ID_HEX_LEN + 1]);
/* First 8 hex digits, for logs (|out| 9 bytes). */
void net_id_short(const uint8_t id[NET_ID_LEN], char out[9]);
/* Parses exactly 64 hex digits. Returns 0 or ML_ERR_FORMAT. */
int net_id_from_hex(const char *s, uint8_t id[NET_ID_LEN]);
/* Unpadded base64url of |n| bytes into |out| of |cap| bytes (NUL included).
 * Returns the length written or ML_ERR_RANGE if |cap| is too small. */
int net_b64url_encode(const void *in, size_t n, char *out, size_t cap);
/* Decodes unpadded base64url |s| into |out| (|cap| bytes). Returns the
 * number of bytes or ML_ERR_FORMAT / ML_ERR_RANGE. */
int net_b64url_decode(const char *s, size_t len, uint8_t *out, size_t cap);

/* Builds new GnuTLS certificate credentials holding a self-signed X.509
 * certificate for |id|'s key (Ed25519, CN "mesh-llm <short id>", valid for
 * ten years from yesterday). The caller owns |*out| and frees it with
 * gnutls_certificate_free_credentials(). Returns 0, ML_ERR_NOMEM or
 * ML_ERR_AUTH (a GnuTLS failure, described in ml_last_error()). */
int net_ident_tls_credentials(const struct net_ident *id, gnutls_certificate_credentials_t *out);
/* Extracts the Ed25519 public key of the peer's leaf certificate from an
 * (in-progress or finished) TLS session. Returns 0, ML_ERR_AUTH (no
 * certificate, not Ed25519, unparsable). */
int net_tls_peer_id(gnutls_session_t session, uint8_t id[NET_ID_LEN]);

#endif
