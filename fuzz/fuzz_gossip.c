/* libFuzzer target for the mesh control-stream payload decoders. The first
 * byte picks the message type, the rest is its payload:
 *   GOSSIP        walk + decode + verify every announcement; a decoded
 *                 announcement re-encoded (signed by a test key) must decode
 *                 to the same fields
 *   PEER_LEAVING  decode + verify
 *   PING/PONG     decode
 *   HELLO / HELLO_ACK  fed to fresh acceptor / dialer HELLO state machines
 * Nothing may crash, read out of bounds or leak. */
#include "base/ml_err.h"
#include "mesh/mesh_auth.h"
#include "mesh/mesh_gossip.h"
#include "net/net_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct net_ident key;
static bool key_ready;

static int on_ann(const uint8_t *p, size_t len, void *user)
{
	struct mesh_ann *a = user, *b;
	if (mesh_ann_decode(a, p, len) != 0)
		return 0;
	(void)mesh_ann_verify(p, len);
	if (a->n_addrs > MESH_ANN_MAX_ADDRS || a->n_models > MESH_ANN_MAX_MODELS ||
	    a->n_rtts > MESH_ANN_MAX_RTTS || strlen(a->serving) > MESH_NAME_MAX ||
	    strlen(a->extra) > MESH_EXTRA_MAX)
		abort();
	memcpy(a->id, key.pk, NET_ID_LEN);
	struct net_buf buf;
	net_buf_init(&buf, 0);
	if (mesh_ann_encode(a, &key, &buf) != 0)
		abort();
	if (mesh_ann_verify(buf.data, buf.len) != 0)
		abort();
	b = malloc(sizeof(*b));
	if (b) {
		if (mesh_ann_decode(b, buf.data, buf.len) != 0 || memcmp(a, b, sizeof(*a)) != 0)
			abort();
		free(b);
	}
	net_buf_free(&buf);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!key_ready) {
		uint8_t seed[32] = {42};
		net_ident_from_seed(&key, seed);
		key_ready = true;
	}
	if (size < 1)
		return 0;
	uint8_t type = data[0];
	const uint8_t *p = data + 1;
	size_t len = size - 1;
	switch (type % 6) {
	case 0: {
		struct mesh_ann *a = malloc(sizeof(*a));
		if (!a)
			return 0;
		(void)mesh_gossip_walk(p, len, on_ann, a);
		on_ann(p, len, a); /* the payload as one announcement too */
		free(a);
		break;
	}
	case 1: {
		struct mesh_leaving l;
		(void)mesh_leaving_decode(&l, p, len);
		break;
	}
	case 2: {
		uint64_t n, t;
		(void)mesh_ping_decode(p, len, &n, &t);
		break;
	}
	case 3:
	case 4: {
		/* acceptor: phase-1 HELLO, then the rest as the proof */
		static const uint8_t secret[32] = {1};
		struct mesh_auth au;
		struct net_buf out;
		net_buf_init(&out, 0);
		mesh_auth_init(&au, false, secret, key.pk, key.pk, 1, NULL, 0);
		size_t half = len / 2;
		if (mesh_auth_recv(&au, NET_MSG_HELLO, p, half, &out) >= 0)
			(void)mesh_auth_recv(&au, NET_MSG_HELLO, p + half, len - half, &out);
		net_buf_free(&out);
		break;
	}
	case 5: {
		static const uint8_t secret[32] = {1};
		struct mesh_auth au;
		struct net_buf out;
		net_buf_init(&out, 0);
		mesh_auth_init(&au, true, secret, key.pk, key.pk, 1, NULL, 0);
		mesh_auth_start(&au, &out);
		(void)mesh_auth_recv(&au, NET_MSG_HELLO_ACK, p, len, &out);
		net_buf_free(&out);
		break;
	}
	}
	return 0;
}
