/* Gossip payloads: signed node announcements, GOSSIP batches, PEER_LEAVING
 * and PING/PONG (see mesh_gossip.h for the layouts). */
#include "mesh/mesh_gossip.h"

#include "base/ml_err.h"
#include "net/net_frame.h"

#include <sodium.h>
#include <string.h>

static const char ANN_DOMAIN[] = "mesh-llm ann v1";
static const char LEAVE_DOMAIN[] = "mesh-llm leaving v1";

const char *mesh_role_name(int role)
{
	switch (role) {
	case MESH_ROLE_STANDBY:
		return "standby";
	case MESH_ROLE_HOST:
		return "host";
	case MESH_ROLE_WORKER:
		return "worker";
	case MESH_ROLE_CLIENT:
		return "client";
	default:
		return "?";
	}
}

static void put_s(struct net_buf *b, const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n > max)
		b->err = b->err ? b->err : ML_ERR_RANGE;
	net_buf_put_str(b, s, n);
}

/* Signs |len| bytes at |p| under |domain| (domain separation keeps an
 * announcement signature from being valid as anything else). */
static void sign_domain(const struct net_ident *id, const char *domain, const uint8_t *p,
                        size_t len, uint8_t sig[NET_SIG_LEN])
{
	crypto_sign_state st;
	crypto_sign_init(&st);
	crypto_sign_update(&st, (const uint8_t *)domain, strlen(domain));
	crypto_sign_update(&st, p, len);
	crypto_sign_final_create(&st, sig, NULL, id->sk);
}

static int verify_domain(const uint8_t pk[NET_ID_LEN], const char *domain, const uint8_t *p,
                         size_t len, const uint8_t sig[NET_SIG_LEN])
{
	crypto_sign_state st;
	crypto_sign_init(&st);
	crypto_sign_update(&st, (const uint8_t *)domain, strlen(domain));
	crypto_sign_update(&st, p, len);
	if (crypto_sign_final_verify(&st, sig, pk) != 0)
		return ML_ERR_AUTH;
	return 0;
}

int mesh_ann_encode(const struct mesh_ann *a, const struct net_ident *ident, struct net_buf *out)
{
	if (memcmp(a->id, ident->pk, NET_ID_LEN) != 0)
		return ml_error(ML_ERR_INVALID, "%s: announcement id is not the signing key",
		                __func__);
	if (a->n_addrs > MESH_ANN_MAX_ADDRS || a->n_models > MESH_ANN_MAX_MODELS ||
	    a->n_rtts > MESH_ANN_MAX_RTTS)
		return ml_error(ML_ERR_INVALID, "%s: too many addresses, models or rtts", __func__);
	size_t start = out->len;
	net_buf_put_u8(out, MESH_ANN_VERSION);
	net_buf_put_bytes(out, a->id, NET_ID_LEN);
	net_buf_put_u64(out, a->incarnation);
	net_buf_put_u64(out, a->seq);
	net_buf_put_u8(out, a->role);
	net_buf_put_u16(out, a->proto);
	put_s(out, a->version, MESH_NAME_MAX);
	net_buf_put_u8(out, a->n_addrs);
	for (unsigned i = 0; i < a->n_addrs; i++)
		mesh_addr_put(out, &a->addrs[i]);
	net_buf_put_u64(out, a->vram_bytes);
	net_buf_put_u8(out, a->n_models);
	for (unsigned i = 0; i < a->n_models; i++) {
		put_s(out, a->models[i].name, MESH_NAME_MAX);
		net_buf_put_u64(out, a->models[i].bytes);
	}
	put_s(out, a->serving, MESH_NAME_MAX);
	put_s(out, a->fingerprint, MESH_FP_MAX);
	put_s(out, a->source, MESH_SOURCE_MAX);
	net_buf_put_u32(out, a->layer_start);
	net_buf_put_u32(out, a->layer_end);
	net_buf_put_u32(out, a->n_layers);
	net_buf_put_u16(out, a->n_rtts);
	for (unsigned i = 0; i < a->n_rtts; i++) {
		net_buf_put_bytes(out, a->rtts[i].id, NET_ID_LEN);
		net_buf_put_u32(out, a->rtts[i].rtt_us);
	}
	put_s(out, a->extra, MESH_EXTRA_MAX);
	if (net_buf_error(out))
		return net_buf_error(out);
	uint8_t sig[NET_SIG_LEN];
	sign_domain(ident, ANN_DOMAIN, out->data + start, out->len - start, sig);
	net_buf_put_bytes(out, sig, NET_SIG_LEN);
	if (net_buf_error(out) == 0 && out->len - start > MESH_ANN_MAX_BYTES)
		return ml_error(ML_ERR_RANGE, "%s: announcement of %zu bytes (max %d)", __func__,
		                out->len - start, MESH_ANN_MAX_BYTES);
	return net_buf_error(out);
}

/* Reads a str into |dst| (|max| characters + NUL); rejects control
 * characters so the text is safe for logs and JSON. */
static int get_s(struct net_reader *r, char *dst, size_t max, const char *what)
{
	size_t n = 0;
	const char *s = net_reader_str(r, max, &n);
	dst[0] = 0;
	if (!s)
		return ml_error(ML_ERR_FORMAT, "mesh_ann_decode: %s missing or over %zu bytes",
		                what, max);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			r->err = ML_ERR_FORMAT;
			return ml_error(ML_ERR_FORMAT, "mesh_ann_decode: control character in %s",
			                what);
		}
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

int mesh_ann_decode(struct mesh_ann *a, const uint8_t *p, size_t len)
{
	memset(a, 0, sizeof(*a));
	if (len > MESH_ANN_MAX_BYTES || len < 1 + NET_ID_LEN + NET_SIG_LEN)
		return ml_error(ML_ERR_FORMAT, "%s: %zu bytes (allowed %d..%d)", __func__, len,
		                1 + NET_ID_LEN + NET_SIG_LEN, MESH_ANN_MAX_BYTES);
	struct net_reader r;
	net_reader_init(&r, p, len - NET_SIG_LEN);
	uint8_t v = net_reader_u8(&r);
	if (v != MESH_ANN_VERSION)
		return ml_error(ML_ERR_FORMAT, "%s: announcement version %u (we read %d)", __func__,
		                v, MESH_ANN_VERSION);
	net_reader_copy(&r, a->id, NET_ID_LEN);
	a->incarnation = net_reader_u64(&r);
	a->seq = net_reader_u64(&r);
	a->role = net_reader_u8(&r);
	a->proto = net_reader_u16(&r);
	if (get_s(&r, a->version, MESH_NAME_MAX, "version"))
		return ML_ERR_FORMAT;
	a->n_addrs = net_reader_u8(&r);
	if (a->n_addrs > MESH_ANN_MAX_ADDRS)
		return ml_error(ML_ERR_FORMAT, "%s: %u addresses (max %d)", __func__, a->n_addrs,
		                MESH_ANN_MAX_ADDRS);
	for (unsigned i = 0; i < a->n_addrs; i++)
		if (mesh_addr_read(&r, &a->addrs[i]))
			return ML_ERR_FORMAT;
	a->vram_bytes = net_reader_u64(&r);
	a->n_models = net_reader_u8(&r);
	if (a->n_models > MESH_ANN_MAX_MODELS)
		return ml_error(ML_ERR_FORMAT, "%s: %u models (max %d)", __func__, a->n_models,
		                MESH_ANN_MAX_MODELS);
	for (unsigned i = 0; i < a->n_models; i++) {
		if (get_s(&r, a->models[i].name, MESH_NAME_MAX, "model name"))
			return ML_ERR_FORMAT;
		a->models[i].bytes = net_reader_u64(&r);
	}
	if (get_s(&r, a->serving, MESH_NAME_MAX, "serving") ||
	    get_s(&r, a->fingerprint, MESH_FP_MAX, "fingerprint") ||
	    get_s(&r, a->source, MESH_SOURCE_MAX, "source"))
		return ML_ERR_FORMAT;
	a->layer_start = net_reader_u32(&r);
	a->layer_end = net_reader_u32(&r);
	a->n_layers = net_reader_u32(&r);
	a->n_rtts = net_reader_u16(&r);
	if (a->n_rtts > MESH_ANN_MAX_RTTS)
		return ml_error(ML_ERR_FORMAT, "%s: %u rtts (max %d)", __func__, a->n_rtts,
		                MESH_ANN_MAX_RTTS);
	for (unsigned i = 0; i < a->n_rtts; i++) {
		net_reader_copy(&r, a->rtts[i].id, NET_ID_LEN);
		a->rtts[i].rtt_us = net_reader_u32(&r);
	}
	if (get_s(&r, a->extra, MESH_EXTRA_MAX, "extra"))
		return ML_ERR_FORMAT;
	if (net_reader_finish(&r) != 0)
		return ml_error(ML_ERR_FORMAT, "%s: truncated or trailing bytes", __func__);
	if (a->role >= MESH_ROLE_COUNT)
		return ml_error(ML_ERR_FORMAT, "%s: role %u", __func__, a->role);
	if (a->layer_start > a->layer_end || a->layer_end > a->n_layers)
		return ml_error(ML_ERR_FORMAT, "%s: layer range %u..%u of %u", __func__,
		                a->layer_start, a->layer_end, a->n_layers);
	return 0;
}

int mesh_ann_verify(const uint8_t *p, size_t len)
{
	if (len < 1 + NET_ID_LEN + NET_SIG_LEN)
		return ML_ERR_FORMAT;
	return verify_domain(p + 1, ANN_DOMAIN, p, len - NET_SIG_LEN, p + len - NET_SIG_LEN);
}

int mesh_gossip_put(struct net_buf *out, const uint8_t *const *anns, const size_t *lens, size_t n)
{
	if (n > MESH_GOSSIP_MAX_ANNS)
		return ml_error(ML_ERR_RANGE, "%s: %zu announcements", __func__, n);
	size_t m = net_frame_begin(out, NET_MSG_GOSSIP);
	net_buf_put_u16(out, (uint16_t)n);
	for (size_t i = 0; i < n; i++)
		net_buf_put_blob(out, anns[i], lens[i]);
	return net_frame_end(out, NET_STREAM_CONTROL, m);
}

int mesh_gossip_walk(const uint8_t *p, size_t len,
                     int (*fn)(const uint8_t *ann, size_t ann_len, void *user), void *user)
{
	struct net_reader r;
	net_reader_init(&r, p, len);
	uint16_t n = net_reader_u16(&r);
	if (net_reader_error(&r) || n > MESH_GOSSIP_MAX_ANNS)
		return ml_error(ML_ERR_FORMAT, "%s: bad announcement count", __func__);
	for (unsigned i = 0; i < n; i++) {
		size_t l;
		if (!net_reader_blob(&r, MESH_ANN_MAX_BYTES, &l))
			return ml_error(ML_ERR_FORMAT,
			                "%s: announcement %u truncated or over %d bytes", __func__,
			                i, MESH_ANN_MAX_BYTES);
	}
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: trailing bytes", __func__);
	net_reader_init(&r, p, len);
	net_reader_u16(&r);
	for (unsigned i = 0; i < n; i++) {
		size_t l;
		const uint8_t *a = net_reader_blob(&r, MESH_ANN_MAX_BYTES, &l);
		int rc = fn(a, l, user);
		if (rc)
			return rc;
	}
	return 0;
}

int mesh_leaving_put(struct net_buf *out, const struct mesh_leaving *l,
                     const struct net_ident *ident)
{
	size_t m = net_frame_begin(out, NET_MSG_PEER_LEAVING);
	size_t start = out->len;
	net_buf_put_bytes(out, l->id, NET_ID_LEN);
	net_buf_put_u64(out, l->incarnation);
	net_buf_put_u64(out, l->seq);
	if (net_buf_error(out))
		return net_buf_error(out);
	uint8_t sig[NET_SIG_LEN];
	sign_domain(ident, LEAVE_DOMAIN, out->data + start, out->len - start, sig);
	net_buf_put_bytes(out, sig, NET_SIG_LEN);
	return net_frame_end(out, NET_STREAM_CONTROL, m);
}

int mesh_leaving_decode(struct mesh_leaving *l, const uint8_t *p, size_t len)
{
	memset(l, 0, sizeof(*l));
	if (len != NET_ID_LEN + 16 + NET_SIG_LEN)
		return ml_error(ML_ERR_FORMAT, "%s: %zu bytes (expected %d)", __func__, len,
		                NET_ID_LEN + 16 + NET_SIG_LEN);
	struct net_reader r;
	net_reader_init(&r, p, len);
	net_reader_copy(&r, l->id, NET_ID_LEN);
	l->incarnation = net_reader_u64(&r);
	l->seq = net_reader_u64(&r);
	if (verify_domain(l->id, LEAVE_DOMAIN, p, NET_ID_LEN + 16, p + NET_ID_LEN + 16) != 0)
		return ml_error(ML_ERR_AUTH, "%s: bad signature", __func__);
	return 0;
}

int mesh_ping_put(struct net_buf *out, uint8_t type, uint64_t nonce, uint64_t t_ns)
{
	size_t m = net_frame_begin(out, type);
	net_buf_put_u64(out, nonce);
	net_buf_put_u64(out, t_ns);
	return net_frame_end(out, NET_STREAM_CONTROL, m);
}

int mesh_ping_decode(const uint8_t *p, size_t len, uint64_t *nonce, uint64_t *t_ns)
{
	struct net_reader r;
	net_reader_init(&r, p, len);
	*nonce = net_reader_u64(&r);
	*t_ns = net_reader_u64(&r);
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "mesh_ping_decode: %zu bytes (expected 16)", len);
	return 0;
}
