/* HELLO exchange: mutual proof of the mesh secret bound to one connection. */
#include "mesh/mesh_auth.h"

#include "base/ml_err.h"
#include "net/net_frame.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mesh_auth_init(struct mesh_auth *a, bool dialer, const uint8_t secret[MESH_SECRET_LEN],
                    const uint8_t self_id[NET_ID_LEN], const uint8_t peer_id[NET_ID_LEN],
                    uint64_t incarnation, const uint8_t *binding, size_t binding_len)
{
	memset(a, 0, sizeof(*a));
	if (sodium_init() < 0) {
		a->state = MESH_AUTH_FAILED; /* no CSPRNG: refuse every message */
		snprintf(a->reason, sizeof(a->reason), "libsodium initialisation failed");
		return;
	}
	a->dialer = dialer;
	a->state = dialer ? MESH_AUTH_START : MESH_AUTH_WAIT_HELLO;
	memcpy(a->secret, secret, MESH_SECRET_LEN);
	memcpy(a->self_id, self_id, NET_ID_LEN);
	memcpy(a->peer_id, peer_id, NET_ID_LEN);
	a->inc_self = incarnation;
	if (binding_len > MESH_BINDING_MAX)
		binding_len = MESH_BINDING_MAX;
	if (binding_len)
		memcpy(a->binding, binding, binding_len);
	a->binding_len = (uint8_t)binding_len;
	randombytes_buf(dialer ? a->nonce_d : a->nonce_a, MESH_NONCE_LEN);
}

void mesh_auth_clear(struct mesh_auth *a)
{
	sodium_memzero(a->secret, sizeof(a->secret));
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

void mesh_auth_proof(const struct mesh_auth *a, bool accept, uint8_t out[MESH_PROOF_LEN])
{
	static const char la[] = "mesh-llm/1 hello accept";
	static const char ld[] = "mesh-llm/1 hello dial";
	const uint8_t *id_d = a->dialer ? a->self_id : a->peer_id;
	const uint8_t *id_a = a->dialer ? a->peer_id : a->self_id;
	uint64_t inc_d = a->dialer ? a->inc_self : a->inc_peer;
	uint64_t inc_a = a->dialer ? a->inc_peer : a->inc_self;
	uint8_t b8[8];
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, a->secret, MESH_SECRET_LEN);
	if (accept)
		crypto_auth_hmacsha256_update(&st, (const uint8_t *)la, sizeof(la) - 1);
	else
		crypto_auth_hmacsha256_update(&st, (const uint8_t *)ld, sizeof(ld) - 1);
	crypto_auth_hmacsha256_update(&st, id_d, NET_ID_LEN);
	crypto_auth_hmacsha256_update(&st, id_a, NET_ID_LEN);
	crypto_auth_hmacsha256_update(&st, a->nonce_d, MESH_NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, a->nonce_a, MESH_NONCE_LEN);
	put_be64(b8, inc_d);
	crypto_auth_hmacsha256_update(&st, b8, 8);
	put_be64(b8, inc_a);
	crypto_auth_hmacsha256_update(&st, b8, 8);
	uint8_t bl[2] = {0, a->binding_len};
	crypto_auth_hmacsha256_update(&st, bl, 2);
	crypto_auth_hmacsha256_update(&st, a->binding, a->binding_len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

static int fail(struct mesh_auth *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct mesh_auth *a, int code, const char *fmt, ...)
{
	a->state = MESH_AUTH_FAILED;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
	va_end(ap);
	return ml_error(code, "mesh_auth: %s", a->reason);
}

int mesh_auth_start(struct mesh_auth *a, struct net_buf *out)
{
	size_t m = net_frame_begin(out, NET_MSG_HELLO);
	net_buf_put_u16(out, MESH_PROTO_VERSION);
	net_buf_put_u8(out, 1);
	net_buf_put_bytes(out, a->nonce_d, MESH_NONCE_LEN);
	net_buf_put_u64(out, a->inc_self);
	a->state = MESH_AUTH_WAIT_ACK;
	return net_frame_end(out, NET_STREAM_CONTROL, m);
}

static int check_version(struct mesh_auth *a, uint16_t v)
{
	a->peer_version = v;
	if (v != MESH_PROTO_VERSION)
		return fail(a, ML_ERR_PROTO, "peer speaks mesh protocol version %u, we speak %d", v,
		            MESH_PROTO_VERSION);
	return 0;
}

int mesh_auth_recv(struct mesh_auth *a, uint8_t type, const uint8_t *payload, size_t len,
                   struct net_buf *out)
{
	struct net_reader r;
	net_reader_init(&r, payload, len);
	uint8_t proof[MESH_PROOF_LEN], want[MESH_PROOF_LEN];
	switch (a->state) {
	case MESH_AUTH_WAIT_HELLO: {
		if (type != NET_MSG_HELLO)
			return fail(a, ML_ERR_PROTO, "expected HELLO, got %s",
			            net_msg_type_name(type));
		uint16_t v = net_reader_u16(&r);
		uint8_t phase = net_reader_u8(&r);
		net_reader_copy(&r, a->nonce_d, MESH_NONCE_LEN);
		a->inc_peer = net_reader_u64(&r);
		if (net_reader_error(&r) == 0 && v != MESH_PROTO_VERSION)
			return check_version(a, v);
		if (net_reader_finish(&r) != 0 || phase != 1)
			return fail(a, ML_ERR_PROTO, "malformed HELLO (%zu bytes)", len);
		size_t m = net_frame_begin(out, NET_MSG_HELLO_ACK);
		net_buf_put_u16(out, MESH_PROTO_VERSION);
		net_buf_put_bytes(out, a->nonce_a, MESH_NONCE_LEN);
		net_buf_put_u64(out, a->inc_self);
		mesh_auth_proof(a, true, proof);
		net_buf_put_bytes(out, proof, MESH_PROOF_LEN);
		int rc = net_frame_end(out, NET_STREAM_CONTROL, m);
		if (rc)
			return rc;
		a->state = MESH_AUTH_WAIT_PROOF;
		return 0;
	}
	case MESH_AUTH_WAIT_PROOF: {
		if (type != NET_MSG_HELLO)
			return fail(a, ML_ERR_PROTO, "expected the HELLO proof, got %s",
			            net_msg_type_name(type));
		uint16_t v = net_reader_u16(&r);
		uint8_t phase = net_reader_u8(&r);
		net_reader_copy(&r, proof, MESH_PROOF_LEN);
		if (net_reader_error(&r) == 0 && v != MESH_PROTO_VERSION)
			return check_version(a, v);
		if (net_reader_finish(&r) != 0 || phase != 2)
			return fail(a, ML_ERR_PROTO, "malformed HELLO proof (%zu bytes)", len);
		mesh_auth_proof(a, false, want);
		if (sodium_memcmp(proof, want, MESH_PROOF_LEN) != 0)
			return fail(a, ML_ERR_AUTH,
			            "peer does not know the mesh secret (wrong or forged token, or "
			            "a replayed proof)");
		a->state = MESH_AUTH_DONE;
		return 1;
	}
	case MESH_AUTH_WAIT_ACK: {
		if (type != NET_MSG_HELLO_ACK)
			return fail(a, ML_ERR_PROTO, "expected HELLO_ACK, got %s",
			            net_msg_type_name(type));
		uint16_t v = net_reader_u16(&r);
		net_reader_copy(&r, a->nonce_a, MESH_NONCE_LEN);
		a->inc_peer = net_reader_u64(&r);
		net_reader_copy(&r, proof, MESH_PROOF_LEN);
		if (net_reader_error(&r) == 0 && v != MESH_PROTO_VERSION)
			return check_version(a, v);
		if (net_reader_finish(&r) != 0)
			return fail(a, ML_ERR_PROTO, "malformed HELLO_ACK (%zu bytes)", len);
		mesh_auth_proof(a, true, want);
		if (sodium_memcmp(proof, want, MESH_PROOF_LEN) != 0)
			return fail(a, ML_ERR_AUTH,
			            "peer does not know the mesh secret (wrong or forged token, or "
			            "a replayed proof)");
		size_t m = net_frame_begin(out, NET_MSG_HELLO);
		net_buf_put_u16(out, MESH_PROTO_VERSION);
		net_buf_put_u8(out, 2);
		mesh_auth_proof(a, false, proof);
		net_buf_put_bytes(out, proof, MESH_PROOF_LEN);
		int rc = net_frame_end(out, NET_STREAM_CONTROL, m);
		if (rc)
			return rc;
		a->state = MESH_AUTH_DONE;
		return 1;
	}
	default:
		return fail(a, ML_ERR_PROTO, "unexpected %s during the handshake",
		            net_msg_type_name(type));
	}
}
