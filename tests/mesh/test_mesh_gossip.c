/* Tests for src/mesh/mesh_gossip.c and mesh_auth.c: announcement round
 * trip and signature, every truncation, tampering, caps, GOSSIP batches,
 * PEER_LEAVING, and the HELLO exchange (happy path, wrong secret, replayed
 * proofs, other ids, version mismatch, out-of-order messages). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "mesh/mesh_auth.h"
#include "mesh/mesh_gossip.h"
#include "net/net_frame.h"

static void ident(struct net_ident *id, uint8_t seed_byte)
{
	uint8_t seed[32];
	memset(seed, seed_byte, sizeof(seed));
	assert_int_equal(net_ident_from_seed(id, seed), 0);
}

static struct mesh_ann *sample_ann(const struct net_ident *id)
{
	struct mesh_ann *a = calloc(1, sizeof(*a));
	memcpy(a->id, id->pk, NET_ID_LEN);
	a->incarnation = 1700000000000000ull;
	a->seq = 42;
	a->role = MESH_ROLE_WORKER;
	a->proto = MESH_PROTO_VERSION;
	strcpy(a->version, "0.1.0");
	a->n_addrs = 2;
	mesh_addr_parse(&a->addrs[0], "10.0.0.5", 7842);
	mesh_addr_parse(&a->addrs[1], "::1", 7842);
	a->vram_bytes = 12000000000ull;
	a->n_models = 2;
	strcpy(a->models[0].name, "Qwen3-8B-Q4_K_M.gguf");
	a->models[0].bytes = 5000000000ull;
	strcpy(a->models[1].name, "sub/llama.gguf");
	a->models[1].bytes = 123;
	strcpy(a->serving, "Qwen3-8B-Q4_K_M");
	strcpy(a->fingerprint, "abcdef");
	strcpy(a->source, "catalog:qwen3-8b");
	a->layer_start = 10;
	a->layer_end = 20;
	a->n_layers = 36;
	a->n_rtts = 1;
	memset(a->rtts[0].id, 7, NET_ID_LEN);
	a->rtts[0].rtt_us = 1234;
	strcpy(a->extra, "{\"k\":1}");
	return a;
}

static void test_mesh_ann_roundtrip(void **state)
{
	(void)state;
	struct net_ident id;
	ident(&id, 1);
	struct mesh_ann *a = sample_ann(&id), *b = calloc(1, sizeof(*b));
	struct net_buf buf;
	net_buf_init(&buf, 0);
	assert_int_equal(mesh_ann_encode(a, &id, &buf), 0);
	assert_int_equal(mesh_ann_decode(b, buf.data, buf.len), 0);
	assert_int_equal(mesh_ann_verify(buf.data, buf.len), 0);
	assert_memory_equal(a, b, sizeof(*a));
	/* every truncation fails to decode */
	for (size_t k = 0; k < buf.len; k++)
		assert_int_not_equal(mesh_ann_decode(b, buf.data, k), 0);
	/* every flipped byte breaks the signature (or the decode) */
	for (size_t k = 0; k < buf.len; k++) {
		buf.data[k] ^= 0x20;
		assert_true(mesh_ann_verify(buf.data, buf.len) != 0 ||
		            mesh_ann_decode(b, buf.data, buf.len) != 0);
		buf.data[k] ^= 0x20;
	}
	/* a key cannot sign another node's announcement */
	struct net_ident other;
	ident(&other, 2);
	net_buf_reset(&buf);
	assert_int_equal(mesh_ann_encode(a, &other, &buf), ML_ERR_INVALID);
	net_buf_free(&buf);
	free(a);
	free(b);
}

static void test_mesh_ann_caps(void **state)
{
	(void)state;
	struct net_ident id;
	ident(&id, 1);
	struct mesh_ann *a = sample_ann(&id), *b = calloc(1, sizeof(*b));
	struct net_buf buf;
	net_buf_init(&buf, 0);
	/* the largest legal announcement fits under the cap and round-trips */
	a->n_models = MESH_ANN_MAX_MODELS;
	for (int i = 0; i < MESH_ANN_MAX_MODELS; i++)
		memset(a->models[i].name, 'm', MESH_NAME_MAX), a->models[i].name[MESH_NAME_MAX] = 0;
	a->n_rtts = MESH_ANN_MAX_RTTS;
	a->n_addrs = MESH_ANN_MAX_ADDRS;
	for (int i = 0; i < MESH_ANN_MAX_ADDRS; i++)
		mesh_addr_parse(&a->addrs[i], "2001:db8::1", 1);
	memset(a->extra, 'x', MESH_EXTRA_MAX);
	a->extra[MESH_EXTRA_MAX] = 0;
	memset(a->source, 's', MESH_SOURCE_MAX);
	a->source[MESH_SOURCE_MAX] = 0;
	assert_int_equal(mesh_ann_encode(a, &id, &buf), 0);
	assert_true(buf.len <= MESH_ANN_MAX_BYTES);
	assert_int_equal(mesh_ann_decode(b, buf.data, buf.len), 0);
	/* bad role and layer range are refused by the decoder */
	free(a);
	a = sample_ann(&id);
	a->role = 9;
	net_buf_reset(&buf);
	assert_int_equal(mesh_ann_encode(a, &id, &buf), 0);
	assert_int_equal(mesh_ann_decode(b, buf.data, buf.len), ML_ERR_FORMAT);
	a->role = 0;
	a->layer_end = 40;
	net_buf_reset(&buf);
	assert_int_equal(mesh_ann_encode(a, &id, &buf), 0);
	assert_int_equal(mesh_ann_decode(b, buf.data, buf.len), ML_ERR_FORMAT);
	/* control characters in strings */
	a->layer_end = 20;
	strcpy(a->serving, "evil\nname");
	net_buf_reset(&buf);
	assert_int_equal(mesh_ann_encode(a, &id, &buf), 0);
	assert_int_equal(mesh_ann_decode(b, buf.data, buf.len), ML_ERR_FORMAT);
	net_buf_free(&buf);
	free(a);
	free(b);
}

static int count_fn(const uint8_t *p, size_t len, void *user)
{
	(void)p;
	(void)len;
	(*(int *)user)++;
	return 0;
}

static void test_mesh_gossip_batch(void **state)
{
	(void)state;
	struct net_ident id;
	ident(&id, 3);
	struct mesh_ann *a = sample_ann(&id);
	struct net_buf one, msg;
	net_buf_init(&one, 0);
	net_buf_init(&msg, 0);
	assert_int_equal(mesh_ann_encode(a, &id, &one), 0);
	const uint8_t *anns[3] = {one.data, one.data, one.data};
	size_t lens[3] = {one.len, one.len, one.len};
	assert_int_equal(mesh_gossip_put(&msg, anns, lens, 3), 0);
	struct net_frame_msg fm;
	int n = net_frame_parse(NET_STREAM_CONTROL, msg.data, msg.len, &fm);
	assert_int_equal((size_t)n, msg.len);
	assert_int_equal(fm.type, NET_MSG_GOSSIP);
	int count = 0;
	assert_int_equal(mesh_gossip_walk(fm.payload, fm.len, count_fn, &count), 0);
	assert_int_equal(count, 3);
	/* any truncation is refused before a single callback */
	for (size_t k = 0; k < fm.len; k++) {
		count = 0;
		assert_int_equal(mesh_gossip_walk(fm.payload, k, count_fn, &count), ML_ERR_FORMAT);
		assert_int_equal(count, 0);
	}
	/* an absurd count */
	uint8_t bad[2] = {0xff, 0xff};
	assert_int_equal(mesh_gossip_walk(bad, 2, count_fn, &count), ML_ERR_FORMAT);
	net_buf_free(&one);
	net_buf_free(&msg);
	free(a);
}

static void test_mesh_leaving(void **state)
{
	(void)state;
	struct net_ident id, other;
	ident(&id, 4);
	ident(&other, 5);
	struct mesh_leaving l = {.incarnation = 9, .seq = 77}, r;
	memcpy(l.id, id.pk, NET_ID_LEN);
	struct net_buf b;
	net_buf_init(&b, 0);
	assert_int_equal(mesh_leaving_put(&b, &l, &id), 0);
	const uint8_t *p = b.data + NET_FRAME_HDR_LEN;
	size_t len = b.len - NET_FRAME_HDR_LEN;
	assert_int_equal(mesh_leaving_decode(&r, p, len), 0);
	assert_memory_equal(&r, &l, sizeof(l));
	for (size_t k = 0; k < len; k++)
		assert_int_not_equal(mesh_leaving_decode(&r, p, k), 0);
	/* someone else cannot say we leave */
	net_buf_reset(&b);
	assert_int_equal(mesh_leaving_put(&b, &l, &other), 0);
	assert_int_equal(mesh_leaving_decode(&r, b.data + NET_FRAME_HDR_LEN, len), ML_ERR_AUTH);
	net_buf_free(&b);
}

/* --- HELLO ----------------------------------------------------------- */

struct pipe {
	struct net_buf d2a, a2d;
};

/* Delivers every framed message in |b| to |a|; returns the last result. */
static int deliver(struct mesh_auth *a, struct net_buf *b, struct net_buf *reply)
{
	size_t off = 0;
	int rc = 0;
	while (off < b->len) {
		struct net_frame_msg m;
		int n = net_frame_parse(NET_STREAM_CONTROL, b->data + off, b->len - off, &m);
		assert_true(n > 0);
		rc = mesh_auth_recv(a, m.type, m.payload, m.len, reply);
		off += (size_t)n;
		if (rc < 0)
			break;
	}
	net_buf_reset(b);
	return rc;
}

static const uint8_t SECRET[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t WRONG[32] = {9, 9, 9};

static void test_mesh_auth_ok(void **state)
{
	(void)state;
	struct net_ident d, a;
	ident(&d, 10);
	ident(&a, 11);
	struct mesh_auth ad, aa;
	mesh_auth_init(&ad, true, SECRET, d.pk, a.pk, 100, NULL, 0);
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 200, NULL, 0);
	struct net_buf x, y;
	net_buf_init(&x, 0);
	net_buf_init(&y, 0);
	assert_int_equal(mesh_auth_start(&ad, &x), 0);
	assert_int_equal(deliver(&aa, &x, &y), 0); /* acceptor replies with its proof */
	assert_int_equal(deliver(&ad, &y, &x), 1); /* dialer done, sends its proof */
	assert_int_equal(deliver(&aa, &x, &y), 1);
	assert_int_equal(ad.state, MESH_AUTH_DONE);
	assert_int_equal(aa.state, MESH_AUTH_DONE);
	assert_int_equal(ad.inc_peer, 200);
	assert_int_equal(aa.inc_peer, 100);
	/* anything after done is refused */
	uint8_t junk[3] = {0};
	assert_int_equal(mesh_auth_recv(&aa, NET_MSG_HELLO, junk, 3, &y), ML_ERR_PROTO);
	net_buf_free(&x);
	net_buf_free(&y);
}

static void test_mesh_auth_wrong_secret(void **state)
{
	(void)state;
	struct net_ident d, a;
	ident(&d, 10);
	ident(&a, 11);
	struct net_buf x, y;
	net_buf_init(&x, 0);
	net_buf_init(&y, 0);
	/* joiner with a wrong secret: it detects the mismatch and never sends a
	 * proof of its own, so the acceptor never admits it */
	struct mesh_auth ad, aa;
	mesh_auth_init(&ad, true, WRONG, d.pk, a.pk, 1, NULL, 0);
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	mesh_auth_start(&ad, &x);
	assert_int_equal(deliver(&aa, &x, &y), 0);
	assert_int_equal(deliver(&ad, &y, &x), ML_ERR_AUTH);
	assert_int_equal(x.len, 0);
	assert_int_equal(aa.state, MESH_AUTH_WAIT_PROOF);
	/* a dialer that ignores the mismatch and sends a proof made with its
	 * wrong secret is refused by the acceptor */
	struct mesh_auth evil = ad;
	evil.state = MESH_AUTH_DONE;
	size_t m = net_frame_begin(&x, NET_MSG_HELLO);
	net_buf_put_u16(&x, MESH_PROTO_VERSION);
	net_buf_put_u8(&x, 2);
	uint8_t proof[MESH_PROOF_LEN];
	mesh_auth_proof(&evil, false, proof);
	net_buf_put_bytes(&x, proof, sizeof(proof));
	net_frame_end(&x, NET_STREAM_CONTROL, m);
	assert_int_equal(deliver(&aa, &x, &y), ML_ERR_AUTH);
	assert_int_equal(aa.state, MESH_AUTH_FAILED);
	net_buf_free(&x);
	net_buf_free(&y);
}

/* A valid proof recorded on one connection is useless on another. */
static void test_mesh_auth_replay(void **state)
{
	(void)state;
	struct net_ident d, a, e;
	ident(&d, 10);
	ident(&a, 11);
	ident(&e, 12);
	struct net_buf x, y, recorded;
	net_buf_init(&x, 0);
	net_buf_init(&y, 0);
	net_buf_init(&recorded, 0);
	/* connection 1: a legitimate exchange, its phase-2 HELLO recorded */
	struct mesh_auth ad, aa;
	mesh_auth_init(&ad, true, SECRET, d.pk, a.pk, 1, NULL, 0);
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	mesh_auth_start(&ad, &x);
	net_buf_put_bytes(&recorded, x.data, x.len); /* phase 1 too */
	deliver(&aa, &x, &y);
	assert_int_equal(deliver(&ad, &y, &x), 1);
	net_buf_put_bytes(&recorded, x.data, x.len);
	assert_int_equal(deliver(&aa, &x, &y), 1);
	/* connection 2, same two ids (the attacker has d's TLS key but not the
	 * secret): replaying both recorded messages fails on the fresh nonce */
	struct mesh_auth a2;
	mesh_auth_init(&a2, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	struct net_buf r2;
	net_buf_init(&r2, 0);
	net_buf_put_bytes(&r2, recorded.data, recorded.len);
	assert_int_equal(deliver(&a2, &r2, &y), ML_ERR_AUTH);
	/* connection 3, attacker e with its own key replays d's proof */
	struct mesh_auth a3;
	mesh_auth_init(&a3, false, SECRET, a.pk, e.pk, 2, NULL, 0);
	net_buf_reset(&r2);
	net_buf_put_bytes(&r2, recorded.data, recorded.len);
	assert_int_equal(deliver(&a3, &r2, &y), ML_ERR_AUTH);
	/* same nonces but a different channel binding also fails */
	struct mesh_auth b1 = aa, b2 = aa;
	uint8_t p1[MESH_PROOF_LEN], p2[MESH_PROOF_LEN];
	b2.binding_len = 4;
	memcpy(b2.binding, "xyzw", 4);
	mesh_auth_proof(&b1, false, p1);
	mesh_auth_proof(&b2, false, p2);
	assert_memory_not_equal(p1, p2, MESH_PROOF_LEN);
	net_buf_free(&r2);
	net_buf_free(&x);
	net_buf_free(&y);
	net_buf_free(&recorded);
}

static void test_mesh_auth_bad_messages(void **state)
{
	(void)state;
	struct net_ident d, a;
	ident(&d, 10);
	ident(&a, 11);
	struct net_buf y;
	net_buf_init(&y, 0);
	struct mesh_auth aa;
	/* gossip before HELLO */
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	uint8_t p[64] = {0};
	assert_int_equal(mesh_auth_recv(&aa, NET_MSG_GOSSIP, p, 2, &y), ML_ERR_PROTO);
	assert_int_equal(y.len, 0);
	/* version mismatch */
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	p[1] = 7; /* version 7 */
	p[2] = 1;
	assert_int_equal(mesh_auth_recv(&aa, NET_MSG_HELLO, p, 2 + 1 + 32 + 8, &y), ML_ERR_PROTO);
	assert_non_null(strstr(aa.reason, "version 7"));
	/* every truncation of a phase-1 HELLO */
	for (size_t k = 0; k < 2 + 1 + 32 + 8; k++) {
		mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
		memset(p, 0, sizeof(p));
		p[1] = MESH_PROTO_VERSION;
		p[2] = 1;
		assert_int_equal(mesh_auth_recv(&aa, NET_MSG_HELLO, p, k, &y), ML_ERR_PROTO);
	}
	/* phase 2 before phase 1 */
	mesh_auth_init(&aa, false, SECRET, a.pk, d.pk, 2, NULL, 0);
	p[2] = 2;
	assert_int_equal(mesh_auth_recv(&aa, NET_MSG_HELLO, p, 2 + 1 + 32, &y), ML_ERR_PROTO);
	/* a dialer getting a HELLO instead of the ACK */
	struct mesh_auth ad;
	mesh_auth_init(&ad, true, SECRET, d.pk, a.pk, 1, NULL, 0);
	mesh_auth_start(&ad, &y);
	assert_int_equal(mesh_auth_recv(&ad, NET_MSG_HELLO, p, 43, &y), ML_ERR_PROTO);
	net_buf_free(&y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_ann_roundtrip),
	    cmocka_unit_test(test_mesh_ann_caps),
	    cmocka_unit_test(test_mesh_gossip_batch),
	    cmocka_unit_test(test_mesh_leaving),
	    cmocka_unit_test(test_mesh_auth_ok),
	    cmocka_unit_test(test_mesh_auth_wrong_secret),
	    cmocka_unit_test(test_mesh_auth_replay),
	    cmocka_unit_test(test_mesh_auth_bad_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
