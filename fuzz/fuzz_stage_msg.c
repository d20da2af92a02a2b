/* libFuzzer target for the STAGE stream message decoders (mesh_stage_msg.h).
 * The first byte picks the decoder, the second the receiver's current
 * epoch (0..255), the rest is the payload:
 *   0 RUN_BATCH   decode (expected n_embd 0 or from the payload), unpack,
 *                 convert rows; a decoded batch re-encoded must decode to
 *                 the same header and rows (f16 rows bit for bit)
 *   1 RESULT      the same with empty batches allowed
 *   2 PLAN        decode; re-encode must give the same bytes (a version 1
 *                 PLAN comes back as version 2 with an F16 KV byte)
 *   3 KV          decode; re-encode must give the same bytes
 *   4 ACK         decode; re-encode must give the same bytes
 *   5 ERROR       decode; re-encode must give the same bytes
 *   6 framed      the payload as STAGE messages (after the stream-type
 *                 byte) parsed with net_frame_parse, each to its decoder
 * Nothing may crash, read out of bounds or leak. */
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "mesh/mesh_stage_msg.h"
#include "net/net_frame.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Re-encoding of the payload [p, len) must reproduce it exactly. */
static void same_bytes(const struct net_buf *b, const uint8_t *p, size_t len)
{
	if (b->err || b->len != len + NET_FRAME_HDR_LEN ||
	    memcmp(b->data + NET_FRAME_HDR_LEN, p, len) != 0)
		abort();
}

/* A version 1 PLAN [p, len) re-encoded: version 2, the same fields, an F16
 * KV type inserted after the activation type. */
static void plan_v1_as_v2(const struct net_buf *b, const uint8_t *p, size_t len)
{
	const size_t kv = 1 + 8 + MESH_STAGE_FP_LEN + 16 + 1; /* offset of the KV byte */
	const uint8_t *q = b->data + NET_FRAME_HDR_LEN;
	if (b->err || len < kv || b->len != len + 1 + NET_FRAME_HDR_LEN ||
	    q[0] != MESH_STAGE_PLAN_VERSION || memcmp(q + 1, p + 1, kv - 1) != 0 ||
	    q[kv] != ML_DTYPE_F16 || memcmp(q + kv + 1, p + kv, len - kv) != 0)
		abort();
}

static void batch(uint8_t type, const uint8_t *p, size_t len, uint64_t epoch)
{
	struct mesh_stage_batch d;
	uint32_t min = type == NET_MSG_STAGE_FORWARD ? 1 : 0;
	if (mesh_stage_batch_decode(&d, p, len, epoch, 0, min) != 0)
		return;
	if (d.n_tokens > MESH_STAGE_MAX_TOKENS || d.n_embd == 0 || d.n_embd > MESH_STAGE_MAX_EMBD)
		abort();
	size_t n = (size_t)d.n_tokens * d.n_embd;
	int32_t *seq = malloc(sizeof(int32_t) * (d.n_tokens + 1));
	int32_t *pos = malloc(sizeof(int32_t) * (d.n_tokens + 1));
	int8_t *lg = malloc(d.n_tokens + 1);
	float *rows = malloc(sizeof(float) * (n + 1));
	if (!seq || !pos || !lg || !rows)
		goto out;
	mesh_stage_batch_unpack(&d, seq, pos, lg);
	if (mesh_stage_batch_rows(&d, rows, n) != 0)
		abort();
	struct mesh_stage_batch_in in = {.epoch = d.epoch,
	                                 .batch_id = d.batch_id,
	                                 .dtype = d.dtype,
	                                 .rows = d.rows,
	                                 .n_embd = d.n_embd,
	                                 .n_tokens = d.n_tokens,
	                                 .seq = seq,
	                                 .pos = pos,
	                                 .logits = lg,
	                                 .embd = rows};
	struct net_buf b;
	net_buf_init(&b, 0);
	if (mesh_stage_batch_put(&b, type, &in) != 0)
		abort();
	/* f32 rows and every header field come back bit for bit; f16 rows
	 * too, except NaN payloads that the conversion quiets */
	if (d.dtype == ML_DTYPE_F32)
		same_bytes(&b, p, len);
	struct mesh_stage_batch e;
	if (mesh_stage_batch_decode(&e, b.data + NET_FRAME_HDR_LEN, b.len - NET_FRAME_HDR_LEN,
	                            epoch, d.n_embd, min) != 0)
		abort();
	if (e.n_tokens != d.n_tokens || e.epoch != d.epoch || e.batch_id != d.batch_id ||
	    memcmp(e.tokens, d.tokens, (size_t)d.n_tokens * MESH_STAGE_BATCH_TOKEN) != 0)
		abort();
	net_buf_free(&b);
out:
	free(seq);
	free(pos);
	free(lg);
	free(rows);
}

static void one(uint8_t type, const uint8_t *p, size_t len, uint64_t epoch)
{
	struct net_buf b;
	net_buf_init(&b, 0);
	switch (type) {
	case NET_MSG_STAGE_FORWARD:
	case NET_MSG_STAGE_RESULT:
		batch(type, p, len, epoch);
		break;
	case NET_MSG_STAGE_OPEN: {
		struct mesh_stage_plan *pl = malloc(sizeof(*pl));
		if (pl && mesh_stage_plan_decode(pl, p, len, epoch) == 0) {
			if (mesh_stage_plan_put(&b, pl) != 0)
				abort();
			if (p[0] == 1)
				plan_v1_as_v2(&b, p, len);
			else
				same_bytes(&b, p, len);
		}
		free(pl);
		break;
	}
	case NET_MSG_STAGE_KV: {
		struct mesh_stage_kv kv;
		if (mesh_stage_kv_decode(&kv, p, len, epoch) == 0) {
			if (mesh_stage_kv_put(&b, &kv) != 0)
				abort();
			same_bytes(&b, p, len);
		}
		break;
	}
	case NET_MSG_STAGE_ACK: {
		struct mesh_stage_ack a;
		if (mesh_stage_ack_decode(&a, p, len, epoch) == 0) {
			if (mesh_stage_ack_put(&b, a.epoch, a.kind, a.reason) != 0)
				abort();
			same_bytes(&b, p, len);
		}
		break;
	}
	case NET_MSG_ERROR: {
		struct mesh_stage_error e;
		if (mesh_stage_error_decode(&e, p, len) == 0) {
			if (mesh_stage_error_put(&b, e.code, e.reason) != 0)
				abort();
			same_bytes(&b, p, len);
		}
		break;
	}
	default:
		break;
	}
	net_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t types[6] = {NET_MSG_STAGE_FORWARD, NET_MSG_STAGE_RESULT,
	                                 NET_MSG_STAGE_OPEN,    NET_MSG_STAGE_KV,
	                                 NET_MSG_STAGE_ACK,     NET_MSG_ERROR};
	if (size < 2)
		return 0;
	uint8_t sel = data[0] % 7;
	uint64_t epoch = data[1];
	const uint8_t *p = data + 2;
	size_t len = size - 2;
	if (sel < 6) {
		one(types[sel], p, len, epoch);
		return 0;
	}
	/* messages parsed in place (the incremental decoder, which allocates
	 * what a header declares, has its own target: fuzz_frame) after the
	 * stream-type byte */
	if (len < 1 || p[0] != NET_STREAM_STAGE)
		return 0;
	p++;
	len--;
	while (len > 0) {
		struct net_frame_msg m;
		int n = net_frame_parse(NET_STREAM_STAGE, p, len, &m);
		if (n <= 0)
			break;
		one(m.type, m.payload, m.len, epoch);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
