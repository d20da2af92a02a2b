/* STAGE stream messages between pipeline stages (layouts in
 * mesh_stage_msg.h). Encoders append whole framed messages and leave the
 * buffer as it was on failure; decoders take one payload, check every count
 * against the caps and the bytes left, and reject trailing bytes. */
#include "mesh/mesh_stage_msg.h"

#include "base/ml_dtype.h"
#include "kernels/kern.h"
#include "mesh/mesh_plan.h"
#include "net/net_frame.h"

#include <string.h>

_Static_assert(MESH_STAGE_MAX_STAGES == MESH_PLAN_MAX_STAGES, "stage caps differ");
_Static_assert(MESH_STAGE_MAX_STAGES <= 255, "n_stages is a u8 on the wire");

#define PLAN_STAGE_BYTES (NET_ID_LEN + 4 + 4 + NET_ID_LEN)

const char *mesh_stage_err_name(int code)
{
	switch (code) {
	case MESH_STAGE_E_INTERNAL:
		return "internal";
	case MESH_STAGE_E_MALFORMED:
		return "malformed";
	case MESH_STAGE_E_STALE_EPOCH:
		return "stale epoch";
	case MESH_STAGE_E_UNKNOWN_EPOCH:
		return "unknown epoch";
	case MESH_STAGE_E_MODEL_MISMATCH:
		return "model mismatch";
	case MESH_STAGE_E_FORWARD:
		return "forward failed";
	case MESH_STAGE_E_BUSY:
		return "busy";
	default:
		return "?";
	}
}

/* --- helpers ------------------------------------------------------------ */

static uint32_t elem_size(uint8_t dtype)
{
	return dtype == ML_DTYPE_F32 ? 4 : dtype == ML_DTYPE_F16 ? 2 : 0;
}

static int stale(const char *fn, uint64_t epoch, uint64_t current)
{
	return ml_error(MESH_STAGE_ERR_STALE, "%s: epoch %llu is older than the current plan %llu",
	                fn, (unsigned long long)epoch, (unsigned long long)current);
}

int mesh_stage_msg_epoch(const uint8_t *p, size_t len, uint64_t *epoch)
{
	struct net_reader r;
	net_reader_init(&r, p, len);
	uint8_t ver = net_reader_u8(&r);
	uint64_t e = net_reader_u64(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: %zu bytes, no epoch", __func__, len);
	if (ver != MESH_STAGE_MSG_VERSION)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: message version %u, this node speaks %d",
		                __func__, ver, MESH_STAGE_MSG_VERSION);
	*epoch = e;
	return 0;
}

/* Ends a framed message begun at |mark|; on any error restores |out| to
 * |mark| with its earlier error state. */
static int finish(struct net_buf *out, size_t mark, int prev_err)
{
	int rc = net_frame_end(out, NET_STREAM_STAGE, mark);
	if (rc) {
		out->len = mark;
		out->err = prev_err;
	}
	return rc;
}

/* Reads a reason string into |dst| (NUL-terminated); refuses control
 * characters so a peer cannot forge log lines. */
static int read_reason(struct net_reader *r, char dst[MESH_STAGE_REASON_MAX + 1], const char *fn)
{
	size_t n;
	const char *s = net_reader_str(r, MESH_STAGE_REASON_MAX, &n);
	dst[0] = '\0';
	if (!s)
		return ml_error(ML_ERR_FORMAT,
		                "%s: truncated or over-long reason (at most %d bytes)", fn,
		                MESH_STAGE_REASON_MAX);
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] == 0x7f)
			return ml_error(ML_ERR_FORMAT, "%s: control character 0x%02x in reason", fn,
			                (uint8_t)s[i]);
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

static int check_reason(const char *reason, size_t *n, const char *fn)
{
	*n = reason ? strnlen(reason, MESH_STAGE_REASON_MAX + 1) : 0;
	if (*n > MESH_STAGE_REASON_MAX)
		return ml_error(ML_ERR_INVALID, "%s: reason longer than %d bytes", fn,
		                MESH_STAGE_REASON_MAX);
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* --- RUN_BATCH / RESULT ---------------------------------------------------- */

uint64_t mesh_stage_batch_size(uint32_t n_tokens, uint32_t n_embd, uint8_t dtype)
{
	uint32_t es = elem_size(dtype);
	if (!es)
		return 0;
	return NET_FRAME_HDR_LEN + MESH_STAGE_BATCH_HEAD +
	       (uint64_t)n_tokens * (MESH_STAGE_BATCH_TOKEN + (uint64_t)n_embd * es);
}

uint32_t mesh_stage_batch_max_tokens(uint32_t n_embd, uint8_t dtype)
{
	uint32_t es = elem_size(dtype);
	if (!es || n_embd == 0 || n_embd > MESH_STAGE_MAX_EMBD)
		return 0;
	uint64_t per = MESH_STAGE_BATCH_TOKEN + (uint64_t)n_embd * es;
	uint64_t n = (NET_FRAME_MAX_STAGE - MESH_STAGE_BATCH_HEAD) / per;
	return n > MESH_STAGE_MAX_TOKENS ? MESH_STAGE_MAX_TOKENS : (uint32_t)n;
}

int mesh_stage_batch_put(struct net_buf *out, uint8_t type, const struct mesh_stage_batch_in *in)
{
	const uint32_t es = elem_size(in->dtype);
	if (type != NET_MSG_STAGE_FORWARD && type != NET_MSG_STAGE_RESULT)
		return ml_error(ML_ERR_INVALID, "%s: message type %u is not RUN_BATCH or RESULT",
		                __func__, type);
	if (!es)
		return ml_error(ML_ERR_INVALID, "%s: activation type %s, want F32 or F16", __func__,
		                ml_dtype_name(in->dtype));
	if (in->rows > MESH_STAGE_ROWS_NORMED)
		return ml_error(ML_ERR_INVALID, "%s: rows kind %u", __func__, in->rows);
	if (in->n_embd == 0 || in->n_embd > MESH_STAGE_MAX_EMBD)
		return ml_error(ML_ERR_INVALID, "%s: n_embd %u, want 1..%d", __func__, in->n_embd,
		                MESH_STAGE_MAX_EMBD);
	if (in->n_tokens > mesh_stage_batch_max_tokens(in->n_embd, in->dtype))
		return ml_error(ML_ERR_RANGE,
		                "%s: %u tokens of %u x %s do not fit one message (at most %u)",
		                __func__, in->n_tokens, in->n_embd, ml_dtype_name(in->dtype),
		                mesh_stage_batch_max_tokens(in->n_embd, in->dtype));
	if (type == NET_MSG_STAGE_FORWARD && in->n_tokens == 0)
		return ml_error(ML_ERR_INVALID, "%s: empty batch", __func__);
	if (in->n_tokens && (!in->seq || !in->pos || !in->embd))
		return ml_error(ML_ERR_INVALID, "%s: NULL array", __func__);
	for (uint32_t i = 0; i < in->n_tokens; i++)
		if (in->seq[i] < 0 || in->pos[i] < 0)
			return ml_error(ML_ERR_INVALID, "%s: entry %u: sequence %d position %d",
			                __func__, i, in->seq[i], in->pos[i]);

	const size_t mark = out->len;
	const int prev_err = out->err;
	const size_t rows_bytes = (size_t)in->n_tokens * in->n_embd * es;
	if (net_buf_reserve(
	        out, (size_t)mesh_stage_batch_size(in->n_tokens, in->n_embd, in->dtype)) != 0)
		return finish(out, mark, prev_err);
	net_frame_begin(out, type);
	net_buf_put_u8(out, MESH_STAGE_MSG_VERSION);
	net_buf_put_u64(out, in->epoch);
	net_buf_put_u64(out, in->batch_id);
	net_buf_put_u8(out, in->dtype);
	net_buf_put_u8(out, in->rows);
	net_buf_put_u32(out, in->n_embd);
	net_buf_put_u32(out, in->n_tokens);
	for (uint32_t i = 0; i < in->n_tokens; i++) {
		net_buf_put_u32(out, (uint32_t)in->seq[i]);
		net_buf_put_u32(out, (uint32_t)in->pos[i]);
		net_buf_put_u8(out, in->logits && in->logits[i] ? MESH_STAGE_TOKEN_WANT_LOGITS : 0);
	}
	/* rows straight into the reserved space: no per-element calls */
	if (!out->err && rows_bytes) {
		uint8_t *d = out->data + out->len;
		const size_t n = (size_t)in->n_tokens * in->n_embd;
		if (in->dtype == ML_DTYPE_F32) {
			for (size_t k = 0; k < n; k++) {
				uint32_t u;
				memcpy(&u, &in->embd[k], 4);
				put_le32(d + 4 * k, u);
			}
		} else {
			for (size_t k = 0; k < n; k++) {
				kern_f16 h = kern_f32_to_f16(in->embd[k]);
				d[2 * k] = (uint8_t)h;
				d[2 * k + 1] = (uint8_t)(h >> 8);
			}
		}
		out->len += rows_bytes;
	}
	return finish(out, mark, prev_err);
}

int mesh_stage_batch_decode(struct mesh_stage_batch *b, const uint8_t *p, size_t len,
                            uint64_t current_epoch, uint32_t expect_n_embd, uint32_t min_tokens)
{
	struct net_reader r;
	memset(b, 0, sizeof(*b));
	net_reader_init(&r, p, len);
	uint8_t ver = net_reader_u8(&r);
	b->epoch = net_reader_u64(&r);
	b->batch_id = net_reader_u64(&r);
	b->dtype = net_reader_u8(&r);
	b->rows = net_reader_u8(&r);
	b->n_embd = net_reader_u32(&r);
	b->n_tokens = net_reader_u32(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: truncated header (%zu bytes, need %d)",
		                __func__, len, MESH_STAGE_BATCH_HEAD);
	if (ver != MESH_STAGE_MSG_VERSION)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: message version %u, this node speaks %d",
		                __func__, ver, MESH_STAGE_MSG_VERSION);
	const uint32_t es = elem_size(b->dtype);
	if (!es)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: activation type %u, want F32 or F16",
		                __func__, b->dtype);
	if (b->rows > MESH_STAGE_ROWS_NORMED)
		return ml_error(ML_ERR_FORMAT, "%s: rows kind %u", __func__, b->rows);
	if (b->n_embd == 0)
		return ml_error(ML_ERR_FORMAT, "%s: n_embd 0", __func__);
	if (b->n_embd > MESH_STAGE_MAX_EMBD)
		return ml_error(ML_ERR_RANGE, "%s: n_embd %u over %d", __func__, b->n_embd,
		                MESH_STAGE_MAX_EMBD);
	if (expect_n_embd && b->n_embd != expect_n_embd)
		return ml_error(ML_ERR_FORMAT, "%s: n_embd %u, this model has %u", __func__,
		                b->n_embd, expect_n_embd);
	if (b->n_tokens > MESH_STAGE_MAX_TOKENS)
		return ml_error(ML_ERR_RANGE, "%s: %u tokens over %d", __func__, b->n_tokens,
		                MESH_STAGE_MAX_TOKENS);
	if (b->n_tokens < min_tokens)
		return ml_error(ML_ERR_FORMAT, "%s: %u tokens, at least %u", __func__, b->n_tokens,
		                min_tokens);
	const uint64_t need =
	    (uint64_t)b->n_tokens * MESH_STAGE_BATCH_TOKEN + (uint64_t)b->n_tokens * b->n_embd * es;
	if (need != net_reader_left(&r))
		return ml_error(ML_ERR_FORMAT,
		                "%s: %u tokens of %u x %u bytes need %llu bytes, %zu follow",
		                __func__, b->n_tokens, b->n_embd, es, (unsigned long long)need,
		                net_reader_left(&r));
	b->tokens = net_reader_bytes(&r, (size_t)b->n_tokens * MESH_STAGE_BATCH_TOKEN);
	b->data =
	    net_reader_bytes(&r, (size_t)(need - (uint64_t)b->n_tokens * MESH_STAGE_BATCH_TOKEN));
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: bad length", __func__); /* not reached */
	for (uint32_t i = 0; i < b->n_tokens; i++) {
		const uint8_t *t = b->tokens + (size_t)i * MESH_STAGE_BATCH_TOKEN;
		uint32_t seq = get_be32(t), pos = get_be32(t + 4);
		if (seq > INT32_MAX || pos > INT32_MAX || (t[8] & ~MESH_STAGE_TOKEN_WANT_LOGITS))
			return ml_error(ML_ERR_FORMAT,
			                "%s: entry %u: sequence %u position %u flags 0x%x",
			                __func__, i, seq, pos, t[8]);
	}
	if (b->epoch < current_epoch)
		return stale(__func__, b->epoch, current_epoch);
	return 0;
}

void mesh_stage_batch_token(const struct mesh_stage_batch *b, uint32_t i, int32_t *seq,
                            int32_t *pos, bool *want_logits)
{
	const uint8_t *t = b->tokens + (size_t)i * MESH_STAGE_BATCH_TOKEN;
	*seq = (int32_t)get_be32(t);
	*pos = (int32_t)get_be32(t + 4);
	*want_logits = t[8] & MESH_STAGE_TOKEN_WANT_LOGITS;
}

void mesh_stage_batch_unpack(const struct mesh_stage_batch *b, int32_t *seq, int32_t *pos,
                             int8_t *logits)
{
	for (uint32_t i = 0; i < b->n_tokens; i++) {
		bool w;
		mesh_stage_batch_token(b, i, &seq[i], &pos[i], &w);
		if (logits)
			logits[i] = w ? 1 : 0;
	}
}

int mesh_stage_batch_rows(const struct mesh_stage_batch *b, float *out, size_t cap)
{
	const size_t n = (size_t)b->n_tokens * b->n_embd;
	if (cap < n)
		return ml_error(ML_ERR_RANGE, "%s: %zu floats, room for %zu", __func__, n, cap);
	if (b->dtype == ML_DTYPE_F32) {
		for (size_t k = 0; k < n; k++) {
			uint32_t u = get_le32(b->data + 4 * k);
			memcpy(&out[k], &u, 4);
		}
	} else {
		for (size_t k = 0; k < n; k++)
			out[k] =
			    kern_f16_to_f32((kern_f16)(b->data[2 * k] | b->data[2 * k + 1] << 8));
	}
	return 0;
}

/* --- PLAN ------------------------------------------------------------------ */

/* The layout rules shared by the encoder (ML_ERR_INVALID) and the decoder
 * (ML_ERR_FORMAT / ML_ERR_RANGE). */
static int plan_check(const struct mesh_stage_plan *p, int bad, const char *fn)
{
	if (p->n_layer < 1 || p->n_layer > MESH_STAGE_MAX_LAYERS)
		return ml_error(bad == ML_ERR_FORMAT ? ML_ERR_RANGE : bad,
		                "%s: %u layers, want 1..%d", fn, p->n_layer, MESH_STAGE_MAX_LAYERS);
	if (p->n_stages < 1 || p->n_stages > MESH_STAGE_MAX_STAGES)
		return ml_error(bad == ML_ERR_FORMAT ? ML_ERR_RANGE : bad,
		                "%s: %u stages, want 1..%d", fn, p->n_stages,
		                MESH_STAGE_MAX_STAGES);
	if (p->n_stages > p->n_layer)
		return ml_error(bad, "%s: %u stages for %u layers", fn, p->n_stages, p->n_layer);
	if (p->n_ctx < 1 || p->n_ctx > INT32_MAX || p->n_seq < 1 || p->n_seq > INT32_MAX ||
	    p->n_batch < 1 || p->n_batch > INT32_MAX)
		return ml_error(bad, "%s: n_ctx %u n_seq %u n_batch %u", fn, p->n_ctx, p->n_seq,
		                p->n_batch);
	if (!elem_size(p->act_dtype))
		return ml_error(bad == ML_ERR_FORMAT ? ML_ERR_UNSUPPORTED : bad,
		                "%s: activation type %u, want F32 or F16", fn, p->act_dtype);
	if (!elem_size(p->kv_dtype))
		return ml_error(bad == ML_ERR_FORMAT ? ML_ERR_UNSUPPORTED : bad,
		                "%s: KV cache type %u, want F32 or F16", fn, p->kv_dtype);
	uint32_t b = 0;
	for (uint32_t s = 0; s < p->n_stages; s++) {
		const struct mesh_stage_plan_stage *st = &p->stages[s];
		if (st->layer_begin != b || st->layer_end <= st->layer_begin ||
		    st->layer_end > p->n_layer)
			return ml_error(bad, "%s: stage %u: layers [%u, %u) after layer %u of %u",
			                fn, s, st->layer_begin, st->layer_end, b, p->n_layer);
		b = st->layer_end;
		const uint8_t *next = p->stages[(s + 1) % p->n_stages].id;
		if (memcmp(st->next, next, NET_ID_LEN) != 0)
			return ml_error(bad, "%s: stage %u: next hop is not stage %u", fn, s,
			                (s + 1) % p->n_stages);
		for (uint32_t t = 0; t < s; t++)
			if (memcmp(p->stages[t].id, st->id, NET_ID_LEN) == 0)
				return ml_error(bad, "%s: node of stage %u is also stage %u", fn, s,
				                t);
	}
	if (b != p->n_layer)
		return ml_error(bad, "%s: stages end at layer %u of %u", fn, b, p->n_layer);
	return 0;
}

int mesh_stage_plan_from(struct mesh_stage_plan *out, const struct mesh_plan *plan)
{
	memset(out, 0, sizeof(*out));
	if (plan->status != MESH_PLAN_OK || plan->n_stages < 1 ||
	    plan->n_stages > MESH_STAGE_MAX_STAGES)
		return ml_error(ML_ERR_INVALID, "%s: the plan has no stages (status %d)", __func__,
		                plan->status);
	out->epoch = plan->epoch;
	out->n_layer = plan->n_layer;
	out->n_stages = plan->n_stages;
	for (uint32_t s = 0; s < plan->n_stages; s++) {
		memcpy(out->stages[s].id, plan->stages[s].id, NET_ID_LEN);
		out->stages[s].layer_begin = plan->stages[s].layer_begin;
		out->stages[s].layer_end = plan->stages[s].layer_end;
		memcpy(out->stages[s].next, plan->stages[(s + 1) % plan->n_stages].id, NET_ID_LEN);
	}
	return 0;
}

int mesh_stage_plan_put(struct net_buf *out, const struct mesh_stage_plan *p)
{
	int rc = plan_check(p, ML_ERR_INVALID, __func__);
	if (rc)
		return rc;
	const size_t mark = out->len;
	const int prev_err = out->err;
	net_frame_begin(out, NET_MSG_STAGE_OPEN);
	net_buf_put_u8(out, MESH_STAGE_PLAN_VERSION);
	net_buf_put_u64(out, p->epoch);
	net_buf_put_bytes(out, p->fingerprint, MESH_STAGE_FP_LEN);
	net_buf_put_u32(out, p->n_layer);
	net_buf_put_u32(out, p->n_ctx);
	net_buf_put_u32(out, p->n_seq);
	net_buf_put_u32(out, p->n_batch);
	net_buf_put_u8(out, p->act_dtype);
	net_buf_put_u8(out, p->kv_dtype);
	net_buf_put_u8(out, (uint8_t)p->n_stages);
	for (uint32_t s = 0; s < p->n_stages; s++) {
		net_buf_put_bytes(out, p->stages[s].id, NET_ID_LEN);
		net_buf_put_u32(out, p->stages[s].layer_begin);
		net_buf_put_u32(out, p->stages[s].layer_end);
		net_buf_put_bytes(out, p->stages[s].next, NET_ID_LEN);
	}
	return finish(out, mark, prev_err);
}

int mesh_stage_plan_decode(struct mesh_stage_plan *p, const uint8_t *payload, size_t len,
                           uint64_t current_epoch)
{
	struct net_reader r;
	memset(p, 0, sizeof(*p));
	net_reader_init(&r, payload, len);
	uint8_t ver = net_reader_u8(&r);
	p->epoch = net_reader_u64(&r);
	net_reader_copy(&r, p->fingerprint, MESH_STAGE_FP_LEN);
	p->n_layer = net_reader_u32(&r);
	p->n_ctx = net_reader_u32(&r);
	p->n_seq = net_reader_u32(&r);
	p->n_batch = net_reader_u32(&r);
	p->act_dtype = net_reader_u8(&r);
	/* version 1 had no KV type: its stages kept F16 caches */
	p->kv_dtype = ver == 1 ? ML_DTYPE_F16 : net_reader_u8(&r);
	p->n_stages = net_reader_u8(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: truncated header (%zu bytes)", __func__, len);
	if (ver != 1 && ver != MESH_STAGE_PLAN_VERSION)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: PLAN version %u, this node speaks 1..%d",
		                __func__, ver, MESH_STAGE_PLAN_VERSION);
	if (p->n_stages < 1 || p->n_stages > MESH_STAGE_MAX_STAGES)
		return ml_error(ML_ERR_RANGE, "%s: %u stages, want 1..%d", __func__, p->n_stages,
		                MESH_STAGE_MAX_STAGES);
	if (net_reader_left(&r) != (size_t)p->n_stages * PLAN_STAGE_BYTES)
		return ml_error(ML_ERR_FORMAT, "%s: %u stages need %zu bytes, %zu follow", __func__,
		                p->n_stages, (size_t)p->n_stages * PLAN_STAGE_BYTES,
		                net_reader_left(&r));
	for (uint32_t s = 0; s < p->n_stages; s++) {
		struct mesh_stage_plan_stage *st = &p->stages[s];
		net_reader_copy(&r, st->id, NET_ID_LEN);
		st->layer_begin = net_reader_u32(&r);
		st->layer_end = net_reader_u32(&r);
		net_reader_copy(&r, st->next, NET_ID_LEN);
	}
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: bad length", __func__);
	int rc = plan_check(p, ML_ERR_FORMAT, __func__);
	if (rc)
		return rc;
	if (p->epoch < current_epoch)
		return stale(__func__, p->epoch, current_epoch);
	return 0;
}

int mesh_stage_plan_find(const struct mesh_stage_plan *p, const uint8_t id[NET_ID_LEN])
{
	for (uint32_t s = 0; s < p->n_stages && s < MESH_STAGE_MAX_STAGES; s++)
		if (memcmp(p->stages[s].id, id, NET_ID_LEN) == 0)
			return (int)s;
	return -1;
}

/* --- KV commands ----------------------------------------------------------- */

static int kv_check(const struct mesh_stage_kv *kv, int bad, const char *fn)
{
	if (kv->op == MESH_STAGE_KV_TRUNCATE) {
		if (kv->seq > INT32_MAX || kv->pos > INT32_MAX)
			return ml_error(bad, "%s: truncate sequence %u at %u", fn, kv->seq,
			                kv->pos);
	} else if (kv->op == MESH_STAGE_KV_CLEAR) {
		if ((kv->seq > INT32_MAX && kv->seq != MESH_STAGE_SEQ_ALL) || kv->pos != 0)
			return ml_error(bad, "%s: clear sequence %u position %u", fn, kv->seq,
			                kv->pos);
	} else {
		return ml_error(bad, "%s: KV operation %u", fn, kv->op);
	}
	return 0;
}

int mesh_stage_kv_put(struct net_buf *out, const struct mesh_stage_kv *kv)
{
	int rc = kv_check(kv, ML_ERR_INVALID, __func__);
	if (rc)
		return rc;
	const size_t mark = out->len;
	const int prev_err = out->err;
	net_frame_begin(out, NET_MSG_STAGE_KV);
	net_buf_put_u8(out, MESH_STAGE_MSG_VERSION);
	net_buf_put_u64(out, kv->epoch);
	net_buf_put_u8(out, kv->op);
	net_buf_put_u32(out, kv->seq);
	net_buf_put_u32(out, kv->pos);
	return finish(out, mark, prev_err);
}

int mesh_stage_kv_decode(struct mesh_stage_kv *kv, const uint8_t *p, size_t len,
                         uint64_t current_epoch)
{
	struct net_reader r;
	memset(kv, 0, sizeof(*kv));
	net_reader_init(&r, p, len);
	uint8_t ver = net_reader_u8(&r);
	kv->epoch = net_reader_u64(&r);
	kv->op = net_reader_u8(&r);
	kv->seq = net_reader_u32(&r);
	kv->pos = net_reader_u32(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: truncated (%zu bytes)", __func__, len);
	if (ver != MESH_STAGE_MSG_VERSION)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: message version %u, this node speaks %d",
		                __func__, ver, MESH_STAGE_MSG_VERSION);
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: %zu trailing bytes", __func__, len - r.off);
	int rc = kv_check(kv, ML_ERR_FORMAT, __func__);
	if (rc)
		return rc;
	if (kv->epoch < current_epoch)
		return stale(__func__, kv->epoch, current_epoch);
	return 0;
}

/* --- PLAN_ACK / PLAN_REFUSE -------------------------------------------------- */

int mesh_stage_ack_put(struct net_buf *out, uint64_t epoch, uint8_t kind, const char *reason)
{
	size_t n;
	if (kind > MESH_STAGE_PLAN_REFUSE)
		return ml_error(ML_ERR_INVALID, "%s: kind %u", __func__, kind);
	int rc = check_reason(reason, &n, __func__);
	if (rc)
		return rc;
	const size_t mark = out->len;
	const int prev_err = out->err;
	net_frame_begin(out, NET_MSG_STAGE_ACK);
	net_buf_put_u8(out, MESH_STAGE_MSG_VERSION);
	net_buf_put_u64(out, epoch);
	net_buf_put_u8(out, kind);
	net_buf_put_str(out, reason ? reason : "", n);
	return finish(out, mark, prev_err);
}

int mesh_stage_ack_decode(struct mesh_stage_ack *a, const uint8_t *p, size_t len,
                          uint64_t current_epoch)
{
	struct net_reader r;
	memset(a, 0, sizeof(*a));
	net_reader_init(&r, p, len);
	uint8_t ver = net_reader_u8(&r);
	a->epoch = net_reader_u64(&r);
	a->kind = net_reader_u8(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: truncated (%zu bytes)", __func__, len);
	if (ver != MESH_STAGE_MSG_VERSION)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: message version %u, this node speaks %d",
		                __func__, ver, MESH_STAGE_MSG_VERSION);
	if (a->kind > MESH_STAGE_PLAN_REFUSE)
		return ml_error(ML_ERR_FORMAT, "%s: kind %u", __func__, a->kind);
	int rc = read_reason(&r, a->reason, __func__);
	if (rc)
		return rc;
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: %zu trailing bytes", __func__, len - r.off);
	if (a->epoch < current_epoch)
		return stale(__func__, a->epoch, current_epoch);
	return 0;
}

/* --- ERROR -------------------------------------------------------------------- */

int mesh_stage_error_put(struct net_buf *out, uint16_t code, const char *reason)
{
	size_t n;
	int rc = check_reason(reason, &n, __func__);
	if (rc)
		return rc;
	const size_t mark = out->len;
	const int prev_err = out->err;
	net_frame_begin(out, NET_MSG_ERROR);
	net_buf_put_u16(out, code);
	net_buf_put_str(out, reason ? reason : "", n);
	return finish(out, mark, prev_err);
}

int mesh_stage_error_decode(struct mesh_stage_error *e, const uint8_t *p, size_t len)
{
	struct net_reader r;
	memset(e, 0, sizeof(*e));
	net_reader_init(&r, p, len);
	e->code = net_reader_u16(&r);
	if (net_reader_error(&r))
		return ml_error(ML_ERR_FORMAT, "%s: truncated (%zu bytes)", __func__, len);
	int rc = read_reason(&r, e->reason, __func__);
	if (rc)
		return rc;
	if (net_reader_finish(&r))
		return ml_error(ML_ERR_FORMAT, "%s: %zu trailing bytes", __func__, len - r.off);
	return 0;
}
