/* Invite tokens: versioned binary blob in base64url (see mesh_token.h). */
#include "mesh/mesh_token.h"

#include "base/ml_err.h"

#include <ctype.h>
#include <sodium.h>
#include <string.h>

static const uint8_t TOKEN_MAGIC[4] = {'M', 'L', 'T', 'K'};
#define TOKEN_FIXED (4 + 1 + MESH_ID_LEN + NET_ID_LEN + MESH_SECRET_LEN + 1)
#define TOKEN_CHECK 4

static void token_check(const uint8_t *p, size_t n, uint8_t out[TOKEN_CHECK])
{
	uint8_t h[32];
	crypto_generichash(h, sizeof(h), p, n, NULL, 0);
	memcpy(out, h, TOKEN_CHECK);
}

int mesh_token_encode_blob(const struct mesh_token *t, uint8_t *out, size_t cap)
{
	if (t->n_addrs == 0 || t->n_addrs > MESH_TOKEN_MAX_ADDRS)
		return ml_error(ML_ERR_INVALID, "%s: %u addresses (need 1..%d)", __func__,
		                t->n_addrs, MESH_TOKEN_MAX_ADDRS);
	struct net_buf b;
	net_buf_init(&b, MESH_TOKEN_MAX_BLOB);
	net_buf_put_bytes(&b, TOKEN_MAGIC, 4);
	net_buf_put_u8(&b, MESH_TOKEN_VERSION);
	net_buf_put_bytes(&b, t->mesh_id, MESH_ID_LEN);
	net_buf_put_bytes(&b, t->issuer, NET_ID_LEN);
	net_buf_put_bytes(&b, t->secret, MESH_SECRET_LEN);
	net_buf_put_u8(&b, t->n_addrs);
	for (unsigned i = 0; i < t->n_addrs; i++) {
		if (t->addrs[i].family != 4 && t->addrs[i].family != 6) {
			net_buf_free(&b);
			return ml_error(ML_ERR_INVALID, "%s: address %u has family %u", __func__, i,
			                t->addrs[i].family);
		}
		mesh_addr_put(&b, &t->addrs[i]);
	}
	uint8_t chk[TOKEN_CHECK];
	if (!net_buf_error(&b)) {
		token_check(b.data, b.len, chk);
		net_buf_put_bytes(&b, chk, TOKEN_CHECK);
	}
	int rc = net_buf_error(&b);
	if (rc == 0 && b.len > cap)
		rc = ml_error(ML_ERR_RANGE, "%s: %zu bytes, buffer %zu", __func__, b.len, cap);
	if (rc == 0) {
		memcpy(out, b.data, b.len);
		rc = (int)b.len;
	}
	sodium_memzero(b.data, b.cap);
	net_buf_free(&b);
	return rc;
}

int mesh_token_decode_blob(struct mesh_token *t, const uint8_t *in, size_t len)
{
	memset(t, 0, sizeof(*t));
	if (len < TOKEN_FIXED + 7 + TOKEN_CHECK || len > MESH_TOKEN_MAX_BLOB)
		return ml_error(ML_ERR_FORMAT, "%s: %zu bytes, a token has %d..%d", __func__, len,
		                TOKEN_FIXED + 7 + TOKEN_CHECK, MESH_TOKEN_MAX_BLOB);
	if (memcmp(in, TOKEN_MAGIC, 4) != 0)
		return ml_error(ML_ERR_FORMAT, "%s: not a mesh-llm invite token", __func__);
	if (in[4] != MESH_TOKEN_VERSION)
		return ml_error(
		    ML_ERR_FORMAT,
		    "%s: token version %u, this build reads version %d (upgrade mesh-llm?)",
		    __func__, in[4], MESH_TOKEN_VERSION);
	uint8_t chk[TOKEN_CHECK];
	token_check(in, len - TOKEN_CHECK, chk);
	if (sodium_memcmp(chk, in + len - TOKEN_CHECK, TOKEN_CHECK) != 0)
		return ml_error(ML_ERR_FORMAT,
		                "%s: token checksum mismatch (mistyped or truncated?)", __func__);
	struct net_reader r;
	net_reader_init(&r, in, len - TOKEN_CHECK);
	net_reader_bytes(&r, 5);
	net_reader_copy(&r, t->mesh_id, MESH_ID_LEN);
	net_reader_copy(&r, t->issuer, NET_ID_LEN);
	net_reader_copy(&r, t->secret, MESH_SECRET_LEN);
	t->n_addrs = net_reader_u8(&r);
	if (t->n_addrs == 0 || t->n_addrs > MESH_TOKEN_MAX_ADDRS) {
		int n = t->n_addrs;
		sodium_memzero(t, sizeof(*t));
		return ml_error(ML_ERR_FORMAT, "%s: %d addresses (allowed 1..%d)", __func__, n,
		                MESH_TOKEN_MAX_ADDRS);
	}
	for (unsigned i = 0; i < t->n_addrs; i++)
		if (mesh_addr_read(&r, &t->addrs[i]) != 0)
			break;
	if (net_reader_finish(&r) != 0) {
		sodium_memzero(t, sizeof(*t));
		return ml_error(ML_ERR_FORMAT, "%s: bad address list or trailing bytes", __func__);
	}
	return 0;
}

int mesh_token_encode(const struct mesh_token *t, char *out, size_t cap)
{
	uint8_t blob[MESH_TOKEN_MAX_BLOB];
	int n = mesh_token_encode_blob(t, blob, sizeof(blob));
	if (n < 0)
		return n;
	int rc = net_b64url_encode(blob, (size_t)n, out, cap);
	sodium_memzero(blob, sizeof(blob));
	return rc;
}

int mesh_token_decode(struct mesh_token *t, const char *s)
{
	memset(t, 0, sizeof(*t));
	if (!s)
		return ml_error(ML_ERR_FORMAT, "%s: no token", __func__);
	while (isspace((unsigned char)*s))
		s++;
	size_t len = strlen(s);
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	if (len == 0 || len > MESH_TOKEN_MAX_LEN - 1)
		return ml_error(ML_ERR_FORMAT, "%s: token of %zu characters (at most %d)", __func__,
		                len, MESH_TOKEN_MAX_LEN - 1);
	uint8_t blob[MESH_TOKEN_MAX_BLOB];
	int n = net_b64url_decode(s, len, blob, sizeof(blob));
	if (n < 0)
		return ml_error(ML_ERR_FORMAT, "%s: token is not valid base64url", __func__);
	int rc = mesh_token_decode_blob(t, blob, (size_t)n);
	sodium_memzero(blob, sizeof(blob));
	return rc;
}
