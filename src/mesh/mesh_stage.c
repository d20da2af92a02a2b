/* Network pipeline stages (see mesh_stage.h): the model fingerprint, the
 * worker side (PLAN -> load own layers -> ACK; RUN_BATCH -> forward ->
 * next hop; KV commands) and the host side (an eng_link over the mesh).
 *
 * Every STAGE message is built with the encoders of mesh_stage_msg.h into
 * a framed net_buf and sent as (type, payload) with mesh_stream_send().
 * Buffers for batches are sized when a plan is loaded (worker) or when the
 * engine starts the link (host); the token loop does not allocate, except
 * inside the QUIC stack's send queue. */
#include "mesh/mesh_stage.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "base/ml_time.h"
#include "engine/eng_link.h"
#include "gguf/gguf.h"
#include "kernels/kern.h"
#include "mesh/mesh.h"
#include "model/model.h"
#include "net/net_buf.h"
#include "net/net_frame.h"

/* ---- fingerprint --------------------------------------------------------- */

static void h_u64(crypto_hash_sha256_state *h, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_hash_sha256_update(h, b, 8);
}

static void h_bytes(crypto_hash_sha256_state *h, const void *p, uint64_t n)
{
	h_u64(h, n);
	if (n)
		crypto_hash_sha256_update(h, p, n);
}

static uint64_t elem_size(enum gguf_type t)
{
	switch (t) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_BOOL:
		return 1;
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16:
		return 2;
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_FLOAT32:
		return 4;
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
	case GGUF_TYPE_FLOAT64:
		return 8;
	default:
		return 0;
	}
}

static void h_value(crypto_hash_sha256_state *h, const struct gguf_value *v, int depth)
{
	h_u64(h, (uint64_t)v->type);
	switch (v->type) {
	case GGUF_TYPE_STRING:
		h_bytes(h, v->str.ptr, v->str.len);
		break;
	case GGUF_TYPE_ARRAY:
		h_u64(h, (uint64_t)v->arr.elem);
		h_u64(h, v->arr.n);
		if (v->arr.raw) {
			h_bytes(h, v->arr.raw, v->arr.n * elem_size(v->arr.elem));
		} else if (v->arr.items && depth < 8) {
			for (uint64_t i = 0; i < v->arr.n; i++)
				h_value(h, &v->arr.items[i], depth + 1);
		}
		break;
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_INT16:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_INT64:
		h_u64(h, (uint64_t)v->i64);
		break;
	case GGUF_TYPE_FLOAT32:
	case GGUF_TYPE_FLOAT64: {
		uint64_t bits;
		memcpy(&bits, &v->f64, sizeof(bits));
		h_u64(h, bits);
		break;
	}
	default:
		h_u64(h, v->u64);
		break;
	}
}

int mesh_stage_fingerprint(const struct gguf_file *gf, uint8_t out[MESH_STAGE_FP_LEN])
{
	crypto_hash_sha256_state h;
	crypto_hash_sha256_init(&h);
	static const char tag[] = "mesh-llm model fingerprint v1";
	h_bytes(&h, tag, sizeof(tag) - 1);
	uint64_t n_kv = gguf_n_kv(gf);
	h_u64(&h, n_kv);
	for (uint64_t i = 0; i < n_kv; i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		h_bytes(&h, kv->key.ptr, kv->key.len);
		h_value(&h, &kv->value, 0);
	}
	uint64_t n_t = gguf_n_tensors(gf);
	h_u64(&h, n_t);
	for (uint64_t i = 0; i < n_t; i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		h_bytes(&h, t->name, strlen(t->name));
		h_u64(&h, t->type);
		h_u64(&h, t->n_dims);
		for (int d = 0; d < GGUF_MAX_DIMS; d++)
			h_u64(&h, t->ne[d]);
		h_u64(&h, t->n_bytes);
	}
	crypto_hash_sha256_final(&h, out);
	return 0;
}

int mesh_stage_fingerprint_file(const char *path, uint8_t out[MESH_STAGE_FP_LEN])
{
	struct gguf_file *gf = NULL;
	int rc = gguf_open(&gf, path);
	if (rc < 0)
		return rc;
	rc = mesh_stage_fingerprint(gf, out);
	gguf_close(gf);
	return rc;
}

void mesh_stage_fingerprint_hex(const uint8_t fp[MESH_STAGE_FP_LEN],
                                char out[2 * MESH_STAGE_FP_LEN + 1])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < MESH_STAGE_FP_LEN; i++) {
		out[2 * i] = hx[fp[i] >> 4];
		out[2 * i + 1] = hx[fp[i] & 15];
	}
	out[2 * MESH_STAGE_FP_LEN] = '\0';
}

/* First 4 bytes of a node id in hex, for logs. */
static const char *short_id(const uint8_t id[NET_ID_LEN], char buf[9])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < 4; i++) {
		buf[2 * i] = hx[id[i] >> 4];
		buf[2 * i + 1] = hx[id[i] & 15];
	}
	buf[8] = '\0';
	return buf;
}

/* Sends the framed message at the end of |b| (from |mark|) on |s|. */
static int send_framed(struct mesh_stream *s, const struct net_buf *b, size_t mark)
{
	if (b->len < mark + NET_FRAME_HDR_LEN)
		return ml_error(ML_ERR_INVALID, "send_framed: no message");
	return mesh_stream_send(s, b->data[mark], b->data + mark + NET_FRAME_HDR_LEN,
	                        b->len - mark - NET_FRAME_HDR_LEN, false);
}

static void noop_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	(void)s, (void)type, (void)p, (void)len, (void)u;
}
static void noop_close(struct mesh_stream *s, int err, void *u)
{
	(void)s, (void)err, (void)u;
}
/* Streams nobody listens to any more (a freed link, an old plan's next
 * hop): whatever still arrives is dropped. */
static const struct mesh_stream_callbacks detached_cb = {noop_msg, NULL, noop_close, NULL};

/* ---- worker -------------------------------------------------------------- */

/* The loop thread takes messages off the streams and queues them (an
 * inbox of reusable buffers); a compute thread loads layers and runs the
 * batches, so the loop (pings, gossip, other streams) stays responsive
 * while a stage computes. Its output goes back through one outbox buffer
 * that the loop thread sends; the compute thread waits for it to be free. */

#define WORKER_INBOX 512

enum worker_dest {
	WORKER_TO_HOST, /* the stream the current plan came on */
	WORKER_TO_NEXT, /* the next stage */
};

struct worker_job {
	uint8_t type;
	struct net_buf buf;           /* the payload (storage kept between uses) */
	struct mesh_stage_plan *plan; /* STAGE_OPEN: decoded on the loop thread */
	uint64_t gen;                 /* plans the loop thread had accepted when it came */
};

struct mesh_stage_worker {
	struct mesh *mesh;
	char *path;
	int n_threads;
	uint8_t fp[MESH_STAGE_FP_LEN];
	struct ml_pool *pool;
	uint8_t self_id[NET_ID_LEN];

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct event *wake; /* the loop side: send what is in the outbox */
	/* under mu */
	bool stop;
	struct worker_job inbox[WORKER_INBOX];
	int in_head, in_n;
	bool out_full; /* |out| holds a message to send */
	enum worker_dest out_dest;
	uint64_t out_gen;             /* the plan the output belongs to (see gen) */
	uint8_t out_next[NET_ID_LEN]; /* WORKER_TO_NEXT: to whom */
	struct net_buf out;
	uint64_t loop_epoch; /* newest plan epoch seen by the loop thread */
	/* Plans accepted by the loop thread so far. Output made under an older
	 * one is dropped: nobody waits for it any more. */
	uint64_t loop_gen;
	struct mesh_stage_worker_stats st;

	/* loop thread only */
	struct mesh_stream *host; /* the stream the newest plan came on */
	struct mesh_stream *next; /* to the next stage (not the host) */
	uint8_t next_id[NET_ID_LEN];
	struct net_buf tx; /* the loop's own answers (stale epochs, busy) */
	/* the node whose plan we run: epochs are compared per host, since a
	 * newly elected host counts its own */
	uint8_t host_id[NET_ID_LEN];
	bool host_known;
	/* this node's stage in the newest plan (< 1: none) and who sends it
	 * batches: the host's stream (stage 1) or the previous stage's node */
	int up_index;
	uint8_t up_id[NET_ID_LEN];
	bool stale_logged; /* one log line per plan for dropped messages */

	/* compute thread only */
	uint64_t gen;                /* gen of the job being run */
	struct mesh_stage_plan plan; /* the loaded plan (epoch 0: none) */
	int index;                   /* this node's stage in |plan| */
	struct model *model;
	struct model_ctx *ctx;
	int n_embd, n_vocab, cap_tokens, cap_out;
	int32_t *seq, *pos;
	int8_t *want;
	float *in;
	int32_t *o_seq, *o_pos; /* last stage: the entries that want logits */
};

static const struct mesh_stream_callbacks worker_cb;

/* Loop thread: an ERROR straight back on |s|. */
static void worker_send_error_now(struct mesh_stage_worker *w, struct mesh_stream *s, uint16_t code,
                                  const char *reason)
{
	if (!s)
		return;
	net_buf_reset(&w->tx);
	if (mesh_stage_error_put(&w->tx, code, reason) == 0)
		send_framed(s, &w->tx, 0);
	pthread_mutex_lock(&w->mu);
	w->st.n_errors++;
	pthread_mutex_unlock(&w->mu);
}

/* ---- compute thread: output ---- */

/* Waits until the outbox is free and returns it reset, with mu held. */
static struct net_buf *out_begin(struct mesh_stage_worker *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->out_full && !w->stop)
		pthread_cond_wait(&w->cv, &w->mu);
	net_buf_reset(&w->out);
	return &w->out;
}

/* Hands the outbox to the loop thread (drops it when encoding failed or
 * the worker stops) and releases mu. */
static void out_commit(struct mesh_stage_worker *w, int rc, enum worker_dest dest)
{
	if (rc == 0 && !w->stop && w->out.len > 0) {
		w->out_full = true;
		w->out_dest = dest;
		w->out_gen = w->gen;
		if (dest == WORKER_TO_NEXT)
			memcpy(w->out_next, w->plan.stages[w->index].next, NET_ID_LEN);
		event_active(w->wake, EV_READ, 0);
	}
	pthread_mutex_unlock(&w->mu);
}

/* Reports a failure to the host (which fails the batch in flight). */
static void worker_fail(struct mesh_stage_worker *w, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void worker_fail(struct mesh_stage_worker *w, uint16_t code, const char *fmt, ...)
{
	char msg[MESH_STAGE_REASON_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ML_WARN("stage %d/%u: %s", w->index + 1, w->plan.n_stages, msg);
	struct net_buf *b = out_begin(w);
	w->st.n_errors++;
	out_commit(w, mesh_stage_error_put(b, code, msg), WORKER_TO_HOST);
}

static void worker_refuse(struct mesh_stage_worker *w, uint64_t epoch, const char *reason)
{
	ML_WARN("stage: refusing plan epoch %llu: %s", (unsigned long long)epoch, reason);
	struct net_buf *b = out_begin(w);
	snprintf(w->st.last_refusal, sizeof(w->st.last_refusal), "%s", reason);
	w->st.n_refused++;
	out_commit(w, mesh_stage_ack_put(b, epoch, MESH_STAGE_PLAN_REFUSE, reason), WORKER_TO_HOST);
}

/* ---- compute thread: work ---- */

static void worker_unload(struct mesh_stage_worker *w)
{
	model_ctx_free(w->ctx);
	model_free(w->model);
	w->ctx = NULL;
	w->model = NULL;
	free(w->seq);
	free(w->pos);
	free(w->want);
	free(w->in);
	free(w->o_seq);
	free(w->o_pos);
	w->seq = w->pos = w->o_seq = w->o_pos = NULL;
	w->want = NULL;
	w->in = NULL;
}

/* Loads the plan's range for this node (keeping the model when only the
 * epoch changed). Returns 0 or an error with ml_error() set. */
static int worker_load(struct mesh_stage_worker *w, const struct mesh_stage_plan *p, int idx)
{
	const struct mesh_stage_plan_stage *me = &p->stages[idx];
	bool same_range = w->model && w->plan.stages[w->index].layer_begin == me->layer_begin &&
	                  w->plan.stages[w->index].layer_end == me->layer_end;
	bool same = same_range && w->plan.n_ctx == p->n_ctx && w->plan.n_seq == p->n_seq &&
	            w->plan.n_batch == p->n_batch && w->plan.kv_dtype == p->kv_dtype;
	if (same) {
		/* a new epoch over the same range: sequences start over */
		for (uint32_t s = 0; s < p->n_seq; s++)
			model_kv_truncate(w->ctx, (int)s, 0);
		return 0;
	}
	/* the same range with other cache sizes (a plan sent again with the
	 * engine's setup): the weights stay, the context is made anew */
	struct model *keep = same_range ? w->model : NULL;
	if (keep)
		w->model = NULL;
	worker_unload(w);
	if (p->n_seq > 4096 || p->n_ctx > (1u << 24) || p->n_batch > MESH_STAGE_MAX_TOKENS) {
		model_free(keep);
		return ml_error(ML_ERR_RANGE,
		                "the plan asks for %u sequences of %u positions and batches of %u "
		                "(limits 4096, %u, %u)",
		                p->n_seq, p->n_ctx, p->n_batch, 1u << 24, MESH_STAGE_MAX_TOKENS);
	}
	int rc = 0;
	if (keep) {
		w->model = keep;
	} else {
		/* the host computes the logits: a last stage maps the final norm only */
		struct model_params mp = {.path = w->path,
		                          .layer_begin = (int)me->layer_begin,
		                          .layer_end = (int)me->layer_end,
		                          .no_output_head = true};
		rc = model_load(&w->model, &mp);
		if (rc < 0)
			return rc;
	}
	const struct model_hparams *hp = model_hparams(w->model);
	if ((uint32_t)hp->n_layer != p->n_layer) {
		rc = ml_error(ML_ERR_INVALID, "the plan has %u layers, %s has %d", p->n_layer,
		              w->path, hp->n_layer);
		goto fail;
	}
	/* the host engine's KV type, or split output would differ from solo */
	struct model_ctx_params cp = {.n_seq = (int)p->n_seq,
	                              .n_ctx = (int)p->n_ctx,
	                              .n_batch = (int)p->n_batch,
	                              .kv_type = p->kv_dtype == ML_DTYPE_F32 ? MODEL_KV_F32
	                                                                     : MODEL_KV_F16};
	rc = model_ctx_init_params(&w->ctx, w->model, w->pool, &cp);
	if (rc < 0)
		goto fail;
	w->n_embd = hp->n_embd;
	w->n_vocab = hp->n_vocab;
	w->cap_tokens = (int)p->n_batch;
	w->cap_out = (int)(p->n_seq < p->n_batch ? p->n_seq : p->n_batch);
	size_t nt = (size_t)w->cap_tokens, ne = (size_t)w->n_embd;
	w->seq = malloc(nt * sizeof(int32_t));
	w->pos = malloc(nt * sizeof(int32_t));
	w->want = malloc(nt);
	w->in = malloc(nt * ne * sizeof(float));
	bool last = model_is_last(w->model);
	if (last) {
		w->o_seq = malloc(nt * sizeof(int32_t));
		w->o_pos = malloc(nt * sizeof(int32_t));
	}
	if (!w->seq || !w->pos || !w->want || !w->in || (last && (!w->o_seq || !w->o_pos))) {
		rc =
		    ml_error(ML_ERR_NOMEM, "out of memory for batches of %d tokens", w->cap_tokens);
		goto fail;
	}
	return 0;
fail:
	worker_unload(w);
	return rc;
}

static void worker_on_plan(struct mesh_stage_worker *w, const struct mesh_stage_plan *plan)
{
	char reason[MESH_STAGE_REASON_MAX + 1];
	int idx = mesh_stage_plan_find(plan, w->self_id);
	if (idx <= 0) {
		snprintf(reason, sizeof(reason),
		         idx == 0 ? "this node is the plan's host, not a worker stage"
		                  : "this node is not a stage of plan epoch %llu",
		         (unsigned long long)plan->epoch);
		worker_refuse(w, plan->epoch, reason);
		return;
	}
	if (memcmp(plan->fingerprint, w->fp, MESH_STAGE_FP_LEN) != 0) {
		char mine[2 * MESH_STAGE_FP_LEN + 1], theirs[2 * MESH_STAGE_FP_LEN + 1];
		mesh_stage_fingerprint_hex(w->fp, mine);
		mesh_stage_fingerprint_hex(plan->fingerprint, theirs);
		snprintf(reason, sizeof(reason),
		         "model mismatch: this node's file %s has fingerprint %.16s..., the host's "
		         "model has %.16s... (not the same model or not the same quantization)",
		         w->path, mine, theirs);
		worker_refuse(w, plan->epoch, reason);
		return;
	}
	double t0 = ml_time_s();
	int rc = worker_load(w, plan, idx);
	if (rc < 0) {
		snprintf(reason, sizeof(reason), "cannot load layers %u-%u of %s: %s",
		         plan->stages[idx].layer_begin, plan->stages[idx].layer_end - 1, w->path,
		         ml_last_error());
		memset(&w->plan, 0, sizeof(w->plan));
		pthread_mutex_lock(&w->mu);
		w->st.epoch = 0;
		w->st.layer_begin = w->st.layer_end = 0;
		w->st.weight_bytes_mapped = 0;
		pthread_mutex_unlock(&w->mu);
		worker_refuse(w, plan->epoch, reason);
		return;
	}
	w->plan = *plan;
	w->index = idx;
	uint64_t mapped = model_weight_bytes(w->model);
	ML_INFO("stage %d/%u: layers %u-%u of %u loaded from local file %s (%.1f MB mapped, 0 "
	        "weight bytes received) in %.2f s, plan epoch %llu, %s KV cache",
	        idx + 1, plan->n_stages, plan->stages[idx].layer_begin,
	        plan->stages[idx].layer_end - 1, plan->n_layer, w->path, (double)mapped / 1e6,
	        ml_time_s() - t0, (unsigned long long)plan->epoch,
	        plan->kv_dtype == ML_DTYPE_F32 ? "f32" : "f16");
	struct net_buf *b = out_begin(w);
	w->st.epoch = plan->epoch;
	w->st.stage = idx;
	w->st.n_stages = (int)plan->n_stages;
	w->st.layer_begin = (int)plan->stages[idx].layer_begin;
	w->st.layer_end = (int)plan->stages[idx].layer_end;
	w->st.weight_bytes_mapped = mapped;
	w->st.n_plans++;
	out_commit(w, mesh_stage_ack_put(b, plan->epoch, MESH_STAGE_PLAN_ACK, NULL),
	           WORKER_TO_HOST);
}

static bool worker_is_last(const struct mesh_stage_worker *w)
{
	return (uint32_t)w->index + 1 == w->plan.n_stages;
}

static void worker_on_batch(struct mesh_stage_worker *w, const uint8_t *p, size_t len)
{
	struct mesh_stage_batch b;
	int rc = mesh_stage_batch_decode(&b, p, len, w->plan.epoch, (uint32_t)w->n_embd, 1);
	if (rc == MESH_STAGE_ERR_STALE) {
		worker_fail(w, MESH_STAGE_E_STALE_EPOCH, "%s", ml_last_error());
		return;
	}
	if (rc < 0) {
		worker_fail(w, MESH_STAGE_E_MALFORMED, "RUN_BATCH: %s", ml_last_error());
		return;
	}
	if (!w->model || b.epoch != w->plan.epoch) {
		worker_fail(w, MESH_STAGE_E_UNKNOWN_EPOCH,
		            "a batch of plan epoch %llu, but this stage has loaded epoch %llu",
		            (unsigned long long)b.epoch, (unsigned long long)w->plan.epoch);
		return;
	}
	if (b.n_tokens > (uint32_t)w->cap_tokens) {
		worker_fail(w, MESH_STAGE_E_FORWARD, "a batch of %u tokens, the plan allows %d",
		            b.n_tokens, w->cap_tokens);
		return;
	}
	mesh_stage_batch_unpack(&b, w->seq, w->pos, w->want);
	mesh_stage_batch_rows(&b, w->in, (size_t)w->cap_tokens * (size_t)w->n_embd);
	bool last = worker_is_last(w);
	int n_out = 0;
	for (uint32_t i = 0; i < b.n_tokens; i++)
		if (w->want[i]) {
			if (last && n_out < w->cap_out) {
				w->o_seq[n_out] = w->seq[i];
				w->o_pos[n_out] = w->pos[i];
			}
			n_out++;
		}
	if (last && n_out > w->cap_out) {
		worker_fail(w, MESH_STAGE_E_FORWARD,
		            "a batch asks for %d rows of logits, the plan allows %d", n_out,
		            w->cap_out);
		return;
	}
	struct model_batch mb = {
	    .n_tokens = (int)b.n_tokens,
	    .tokens = NULL,
	    .embd = w->in,
	    .pos = w->pos,
	    .seq = w->seq,
	    .logits = w->want,
	};
	/* No output buffer: the last stage sends the normed rows (the host
	 * owns the head, so model_forward skips it) and a middle stage the
	 * hidden states, both straight from the context. */
	double t0 = ml_time_s();
	rc = model_forward(w->ctx, &mb, NULL);
	double dt = ml_time_s() - t0;
	if (rc < 0) {
		worker_fail(w, MESH_STAGE_E_FORWARD, "forward pass of layers %u-%u failed: %s",
		            w->plan.stages[w->index].layer_begin,
		            w->plan.stages[w->index].layer_end - 1, ml_last_error());
		return;
	}
	struct mesh_stage_batch_in out = {
	    .epoch = b.epoch,
	    .batch_id = b.batch_id,
	    .dtype = last ? ML_DTYPE_F32 : w->plan.act_dtype,
	    .rows = last ? MESH_STAGE_ROWS_NORMED : MESH_STAGE_ROWS_HIDDEN,
	    .n_embd = (uint32_t)w->n_embd,
	    .n_tokens = last ? (uint32_t)n_out : b.n_tokens,
	    .seq = last ? w->o_seq : w->seq,
	    .pos = last ? w->o_pos : w->pos,
	    .logits = last ? NULL : w->want,
	    .embd = last ? model_ctx_result_norm(w->ctx) : model_ctx_hidden(w->ctx),
	};
	struct net_buf *o = out_begin(w);
	w->st.n_batches++;
	w->st.n_tokens += b.n_tokens;
	w->st.compute_s += dt;
	rc = mesh_stage_batch_put(o, last ? NET_MSG_STAGE_RESULT : NET_MSG_STAGE_FORWARD, &out);
	if (rc < 0)
		ML_WARN("stage %d/%u: cannot encode the batch: %s", w->index + 1, w->plan.n_stages,
		        ml_last_error());
	out_commit(w, rc, last ? WORKER_TO_HOST : WORKER_TO_NEXT);
}

static void worker_on_kv(struct mesh_stage_worker *w, const uint8_t *p, size_t len)
{
	struct mesh_stage_kv kv;
	int rc = mesh_stage_kv_decode(&kv, p, len, w->plan.epoch);
	if (rc == MESH_STAGE_ERR_STALE)
		return; /* an old plan's sequences are gone anyway */
	if (rc < 0) {
		worker_fail(w, MESH_STAGE_E_MALFORMED, "KV: %s", ml_last_error());
		return;
	}
	if (!w->ctx || kv.epoch != w->plan.epoch)
		return;
	if (kv.seq == MESH_STAGE_SEQ_ALL) {
		for (uint32_t s = 0; s < w->plan.n_seq; s++)
			model_kv_truncate(w->ctx, (int)s, 0);
	} else if (kv.seq < w->plan.n_seq) {
		model_kv_truncate(w->ctx, (int)kv.seq,
		                  kv.op == MESH_STAGE_KV_CLEAR ? 0 : (int)kv.pos);
	} else {
		worker_fail(w, MESH_STAGE_E_FORWARD, "KV command for sequence %u of %u", kv.seq,
		            w->plan.n_seq);
		return;
	}
	struct net_buf *o = out_begin(w);
	w->st.n_kv++;
	if (worker_is_last(w)) {
		pthread_mutex_unlock(&w->mu);
		return;
	}
	out_commit(w, mesh_stage_kv_put(o, &kv), WORKER_TO_NEXT);
}

static void *worker_main(void *u)
{
	struct mesh_stage_worker *w = u;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->stop && w->in_n == 0)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stop) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		struct worker_job *j = &w->inbox[w->in_head];
		w->gen = j->gen;
		pthread_mutex_unlock(&w->mu);

		switch (j->type) {
		case NET_MSG_STAGE_OPEN:
			worker_on_plan(w, j->plan);
			break;
		case NET_MSG_STAGE_FORWARD:
			worker_on_batch(w, j->buf.data, j->buf.len);
			break;
		case NET_MSG_STAGE_KV:
			worker_on_kv(w, j->buf.data, j->buf.len);
			break;
		case NET_MSG_ERROR: {
			struct mesh_stage_error e;
			if (mesh_stage_error_decode(&e, j->buf.data, j->buf.len) == 0)
				worker_fail(w, e.code, "next stage: %s", e.reason);
			break;
		}
		default:
			break;
		}

		pthread_mutex_lock(&w->mu);
		w->in_head = (w->in_head + 1) % WORKER_INBOX;
		w->in_n--;
		pthread_mutex_unlock(&w->mu);
	}
	return NULL;
}

/* ---- loop thread ---- */

/* Sends the outbox. */
static void worker_wake(evutil_socket_t fd, short what, void *u)
{
	(void)fd;
	(void)what;
	struct mesh_stage_worker *w = u;
	pthread_mutex_lock(&w->mu);
	if (!w->out_full) {
		pthread_mutex_unlock(&w->mu);
		return;
	}
	struct mesh_stream *dst = NULL;
	char b[9];
	if (w->out_gen < w->loop_gen) {
		/* output of a plan the host has replaced: nobody waits for it */
		w->out_full = false;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		return;
	}
	if (w->out_dest == WORKER_TO_HOST) {
		dst = w->host;
	} else {
		if (w->next && memcmp(w->next_id, w->out_next, NET_ID_LEN) != 0) {
			struct mesh_stream *old = w->next;
			w->next = NULL;
			mesh_stream_finish(old);
		}
		if (!w->next) {
			memcpy(w->next_id, w->out_next, NET_ID_LEN);
			if (mesh_stream_open(w->mesh, w->next_id, NET_STREAM_STAGE, &worker_cb, w,
			                     &w->next) < 0) {
				w->next = NULL;
				ML_WARN("stage: cannot reach the next stage (node %s): %s",
				        short_id(w->next_id, b), ml_last_error());
			}
		}
		dst = w->next;
	}
	int rc = dst ? send_framed(dst, &w->out, 0) : ML_ERR_CLOSED;
	w->out_full = false;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	if (rc < 0 && w->out_dest == WORKER_TO_NEXT)
		worker_send_error_now(w, w->host, MESH_STAGE_E_INTERNAL,
		                      "this stage cannot send to the next stage");
}

/* Whether a RUN_BATCH, KV command or ERROR that came on |s| belongs to the
 * newest plan (|epoch|): batches and KV commands from its upstream with
 * its epoch, ERRORs from the next stage. What else arrives is what an old
 * host (one that has not heard of the election yet) or an old plan's stage
 * still sends after a new plan came. */
static bool worker_msg_current(const struct mesh_stage_worker *w, struct mesh_stream *s,
                               uint8_t type, const uint8_t *p, size_t len, uint64_t epoch)
{
	if (type == NET_MSG_ERROR)
		return s == w->next;
	if (w->up_index < 1 || s == w->next)
		return false;
	if (w->up_index == 1 ? s != w->host
	                     : memcmp(mesh_stream_peer(s), w->up_id, NET_ID_LEN) != 0)
		return false;
	uint64_t e;
	if (mesh_stage_msg_epoch(p, len, &e) < 0)
		return true; /* from upstream: the compute thread reports it malformed */
	return e == epoch;
}

/* Drops a message of another plan (see worker_msg_current), counted. A
 * RUN_BATCH's sender waits for its result: it hears why on the stream the
 * batch came on (an old host's link then fails at once instead of timing
 * out); the current host's stream never carries such an answer. */
static void worker_drop_stale(struct mesh_stage_worker *w, struct mesh_stream *s, uint8_t type,
                              const uint8_t *p, size_t len, uint64_t epoch)
{
	uint64_t e = 0;
	bool has_epoch = type != NET_MSG_ERROR && mesh_stage_msg_epoch(p, len, &e) == 0;
	char b[9], h[9];
	pthread_mutex_lock(&w->mu);
	w->st.n_stale++;
	pthread_mutex_unlock(&w->mu);
	char why[MESH_STAGE_REASON_MAX + 1];
	snprintf(why, sizeof(why),
	         "a %s of epoch %llu%s from node %s is not from this stage's current plan "
	         "(epoch %llu of host %s); dropped",
	         net_msg_type_name(type), (unsigned long long)e, has_epoch ? "" : " (unknown)",
	         short_id(mesh_stream_peer(s), b), (unsigned long long)epoch,
	         w->host_known ? short_id(w->host_id, h) : "none");
	if (!w->stale_logged) {
		w->stale_logged = true;
		ML_INFO("stage: %s (further ones are counted, not logged)", why);
	} else {
		ML_DEBUG("stage: %s", why);
	}
	if (type == NET_MSG_STAGE_FORWARD && s != w->host && s != w->next)
		worker_send_error_now(w, s, MESH_STAGE_E_STALE_EPOCH, why);
}

static void worker_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	struct mesh_stage_worker *w = u;
	struct mesh_stage_plan *plan = NULL;
	if (type == NET_MSG_STAGE_OPEN) {
		static struct mesh_stage_plan tmp; /* loop thread only */
		const uint8_t *peer = mesh_stream_peer(s);
		bool same_host = w->host_known && memcmp(peer, w->host_id, NET_ID_LEN) == 0;
		pthread_mutex_lock(&w->mu);
		uint64_t cur = same_host ? w->loop_epoch : 0;
		pthread_mutex_unlock(&w->mu);
		int rc = mesh_stage_plan_decode(&tmp, p, len, cur);
		if (rc == MESH_STAGE_ERR_STALE) {
			worker_send_error_now(w, s, MESH_STAGE_E_STALE_EPOCH, ml_last_error());
			return;
		}
		if (rc < 0) {
			ML_WARN("stage: malformed PLAN: %s", ml_last_error());
			worker_send_error_now(w, s, MESH_STAGE_E_MALFORMED, ml_last_error());
			return;
		}
		plan = &tmp;
		w->host = s;
		memcpy(w->host_id, peer, NET_ID_LEN);
		w->host_known = true;
		w->up_index = mesh_stage_plan_find(&tmp, w->self_id);
		if (w->up_index >= 1)
			memcpy(w->up_id, tmp.stages[w->up_index - 1].id, NET_ID_LEN);
		w->stale_logged = false;
		if (w->next) {
			/* the old plan's next hop: whatever it says now is stale */
			struct mesh_stream *old = w->next;
			w->next = NULL;
			mesh_stream_set_callbacks(old, &detached_cb, NULL);
			mesh_stream_finish(old);
		}
	} else if (type == NET_MSG_STAGE_FORWARD || type == NET_MSG_STAGE_KV ||
	           type == NET_MSG_ERROR) {
		pthread_mutex_lock(&w->mu);
		uint64_t cur = w->loop_epoch;
		pthread_mutex_unlock(&w->mu);
		if (!worker_msg_current(w, s, type, p, len, cur)) {
			worker_drop_stale(w, s, type, p, len, cur);
			return;
		}
	} else {
		ML_WARN("stage: unexpected %s message on a STAGE stream", net_msg_type_name(type));
		return;
	}
	pthread_mutex_lock(&w->mu);
	if (w->in_n == WORKER_INBOX) {
		pthread_mutex_unlock(&w->mu);
		worker_send_error_now(w, w->host, MESH_STAGE_E_BUSY,
		                      "this stage has too many messages queued");
		return;
	}
	struct worker_job *j = &w->inbox[(w->in_head + w->in_n) % WORKER_INBOX];
	pthread_mutex_unlock(&w->mu);
	/* the slot is ours until in_n counts it */
	j->type = type;
	net_buf_reset(&j->buf);
	if (plan) {
		if (!j->plan)
			j->plan = malloc(sizeof(*j->plan));
		if (j->plan)
			*j->plan = *plan;
	} else {
		net_buf_put_bytes(&j->buf, p, len);
	}
	if ((plan && !j->plan) || net_buf_error(&j->buf)) {
		worker_send_error_now(w, w->host, MESH_STAGE_E_INTERNAL,
		                      "this stage is out of memory for a message");
		return;
	}
	pthread_mutex_lock(&w->mu);
	if (plan) {
		w->loop_epoch = plan->epoch;
		w->loop_gen++;
	}
	j->gen = w->loop_gen;
	w->in_n++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void worker_close(struct mesh_stream *s, int err, void *u)
{
	struct mesh_stage_worker *w = u;
	if (s == w->host) {
		w->host = NULL;
		ML_INFO("stage: the host closed the stage stream (%s)",
		        err ? ml_strerror(err) : "cleanly");
	}
	if (s == w->next) {
		w->next = NULL;
		if (err) {
			ML_WARN("stage: lost the stream to the next stage (%s)", ml_strerror(err));
			worker_send_error_now(w, w->host, MESH_STAGE_E_INTERNAL,
			                      "lost the stream to the next stage");
		}
	}
}

static void worker_fin(struct mesh_stream *s, void *u)
{
	(void)u;
	mesh_stream_finish(s);
}

static const struct mesh_stream_callbacks worker_cb = {worker_msg, worker_fin, worker_close, NULL};

int mesh_stage_worker_new(struct mesh_stage_worker **out, struct mesh *mesh,
                          const struct mesh_stage_worker_params *p)
{
	*out = NULL;
	if (!mesh || !p || !p->model_path || !p->base)
		return ml_error(ML_ERR_INVALID,
		                "mesh_stage_worker_new: no mesh, loop or model path");
	struct mesh_stage_worker *w = calloc(1, sizeof(*w));
	if (!w)
		return ml_error(ML_ERR_NOMEM, "mesh_stage_worker_new: out of memory");
	int rc;
	w->mesh = mesh;
	memcpy(w->self_id, mesh_node_id(mesh), NET_ID_LEN);
	w->n_threads = p->n_threads > 0 ? p->n_threads : 1;
	net_buf_init(&w->tx, NET_FRAME_MAX_STAGE + NET_FRAME_HDR_LEN);
	net_buf_init(&w->out, NET_FRAME_MAX_STAGE + NET_FRAME_HDR_LEN);
	for (int i = 0; i < WORKER_INBOX; i++)
		net_buf_init(&w->inbox[i].buf, NET_FRAME_MAX_STAGE);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->path = strdup(p->model_path);
	if (!w->path) {
		rc = ml_error(ML_ERR_NOMEM, "mesh_stage_worker_new: out of memory");
		goto fail;
	}
	if ((rc = mesh_stage_fingerprint_file(w->path, w->fp)) < 0)
		goto fail;
	if ((rc = ml_pool_init(&w->pool, w->n_threads)) < 0)
		goto fail;
	kern_init();
	w->wake = event_new(p->base, -1, 0, worker_wake, w);
	if (!w->wake) {
		rc = ml_error(ML_ERR_NOMEM, "mesh_stage_worker_new: out of memory");
		goto fail;
	}
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		rc = ml_error(ML_ERR_IO, "mesh_stage_worker_new: cannot start the compute thread");
		goto fail;
	}
	w->thread_started = true;
	char hex[2 * MESH_STAGE_FP_LEN + 1];
	mesh_stage_fingerprint_hex(w->fp, hex);
	ML_INFO("stage worker ready: model %s, fingerprint %.16s...", w->path, hex);
	*out = w;
	return 0;
fail:
	mesh_stage_worker_free(w);
	return rc;
}

void mesh_stage_worker_free(struct mesh_stage_worker *w)
{
	if (!w)
		return;
	if (w->thread_started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	if (w->wake)
		event_free(w->wake);
	worker_unload(w);
	ml_pool_free(w->pool);
	net_buf_free(&w->tx);
	net_buf_free(&w->out);
	for (int i = 0; i < WORKER_INBOX; i++) {
		net_buf_free(&w->inbox[i].buf);
		free(w->inbox[i].plan);
	}
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w->path);
	free(w);
}

void mesh_stage_worker_accept(struct mesh_stage_worker *w, struct mesh_stream *s)
{
	mesh_stream_set_callbacks(s, &worker_cb, w);
}

void mesh_stage_worker_get_stats(const struct mesh_stage_worker *w,
                                 struct mesh_stage_worker_stats *out)
{
	struct mesh_stage_worker *m = (struct mesh_stage_worker *)w; /* the mutex only */
	pthread_mutex_lock(&m->mu);
	*out = w->st;
	pthread_mutex_unlock(&m->mu);
}

/* ---- host link ------------------------------------------------------------ */

#define LINK_KVQ 256

struct mesh_stage_link {
	struct eng_link link; /* first: the engine's handle */
	struct mesh *mesh;
	struct event_base *base;
	char *path;
	uint8_t act_dtype;
	uint32_t timeout_ms;
	struct mesh_stage_plan plan;
	struct eng_link_setup setup;
	struct event *wake;
	pthread_t loop_tid; /* the loop thread, once it ran a callback of ours */
	bool loop_tid_set;  /* under mu */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu: work for the loop */
	bool want_plan;
	bool plan_early; /* mesh_stage_link_send_plan() sent it before start() */
	struct mesh_stage_kv kvq[LINK_KVQ];
	int kv_head, kv_n;
	bool batch_ready;
	/* under mu: answers from the loop */
	int n_acked;
	bool result_ready;
	int err; /* sticky: the pipeline is broken until a new link */
	char errmsg[640];
	struct mesh_stage_link_stats stats;

	/* engine thread while no batch is pending, then the loop thread */
	struct net_buf tx_batch;
	uint64_t batch_id;
	int n_out;                  /* rows the RESULT must carry */
	int32_t *exp_seq, *exp_pos; /* [n_batch]: entries that want logits */
	float *normed;              /* [n_seq][n_embd] the RESULT's rows */
	/* loop thread only */
	struct mesh_stream *st[MESH_STAGE_MAX_STAGES];
	struct net_buf tx;

	/* output head (engine thread) */
	struct gguf_file *gf;
	const void *w_out;
	enum ml_dtype w_type;
	void *xq;
	struct ml_pool *pool;
};

static const struct mesh_stream_callbacks link_cb;

/* Records the first failure and wakes the engine thread. Loop thread. */
static void link_fail(struct mesh_stage_link *k, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void link_fail(struct mesh_stage_link *k, int err, const char *fmt, ...)
{
	char msg[sizeof(k->errmsg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&k->mu);
	if (!k->err) {
		k->err = err;
		snprintf(k->errmsg, sizeof(k->errmsg), "%s", msg);
		ML_ERROR("split: %s", msg);
	}
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
}

static int link_stage_of(const struct mesh_stage_link *k, const struct mesh_stream *s)
{
	for (uint32_t i = 1; i < k->plan.n_stages; i++)
		if (k->st[i] == s)
			return (int)i;
	return -1;
}

static void link_on_result(struct mesh_stage_link *k, int from, const uint8_t *p, size_t len)
{
	struct mesh_stage_batch b;
	int rc = mesh_stage_batch_decode(&b, p, len, k->plan.epoch, (uint32_t)k->setup.n_embd, 0);
	if (rc < 0) {
		link_fail(k, ML_ERR_PROTO, "stage %d/%u sent a bad RESULT: %s", from + 1,
		          k->plan.n_stages, ml_last_error());
		return;
	}
	pthread_mutex_lock(&k->mu);
	bool waiting = !k->batch_ready && !k->result_ready && k->n_out >= 0;
	pthread_mutex_unlock(&k->mu);
	if ((uint32_t)from + 1 != k->plan.n_stages || !waiting || b.batch_id != k->batch_id ||
	    b.rows != MESH_STAGE_ROWS_NORMED || b.n_tokens != (uint32_t)k->n_out) {
		link_fail(k, ML_ERR_PROTO,
		          "stage %d/%u sent a RESULT for batch %llu with %u rows, expected batch "
		          "%llu with %d rows from stage %u",
		          from + 1, k->plan.n_stages, (unsigned long long)b.batch_id, b.n_tokens,
		          (unsigned long long)k->batch_id, k->n_out, k->plan.n_stages);
		return;
	}
	for (uint32_t i = 0; i < b.n_tokens; i++) {
		int32_t seq, pos;
		bool want;
		mesh_stage_batch_token(&b, i, &seq, &pos, &want);
		if (seq != k->exp_seq[i] || pos != k->exp_pos[i]) {
			link_fail(k, ML_ERR_PROTO,
			          "RESULT row %u is for sequence %d position %d, expected %d/%d", i,
			          seq, pos, k->exp_seq[i], k->exp_pos[i]);
			return;
		}
	}
	mesh_stage_batch_rows(&b, k->normed, (size_t)k->setup.n_seq * (size_t)k->setup.n_embd);
	pthread_mutex_lock(&k->mu);
	k->result_ready = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
}

static void link_msg(struct mesh_stream *s, uint8_t type, const uint8_t *p, size_t len, void *u)
{
	struct mesh_stage_link *k = u;
	int from = link_stage_of(k, s);
	if (from < 0)
		return;
	char b[9];
	switch (type) {
	case NET_MSG_STAGE_ACK: {
		struct mesh_stage_ack a;
		int rc = mesh_stage_ack_decode(&a, p, len, k->plan.epoch);
		if (rc < 0 || a.epoch != k->plan.epoch) {
			link_fail(k, ML_ERR_PROTO, "stage %d/%u sent a bad ACK: %s", from + 1,
			          k->plan.n_stages, rc < 0 ? ml_last_error() : "other epoch");
			return;
		}
		if (a.kind == MESH_STAGE_PLAN_REFUSE) {
			link_fail(k, ML_ERR_INVALID,
			          "stage %d/%u (node %s) refused plan epoch %llu: %s", from + 1,
			          k->plan.n_stages, short_id(k->plan.stages[from].id, b),
			          (unsigned long long)a.epoch, a.reason);
			return;
		}
		pthread_mutex_lock(&k->mu);
		k->n_acked++;
		pthread_cond_broadcast(&k->cv);
		pthread_mutex_unlock(&k->mu);
		break;
	}
	case NET_MSG_STAGE_RESULT:
		link_on_result(k, from, p, len);
		break;
	case NET_MSG_ERROR: {
		struct mesh_stage_error e;
		if (mesh_stage_error_decode(&e, p, len) == 0)
			link_fail(k, ML_ERR_PROTO, "stage %d/%u (node %s): %s: %s", from + 1,
			          k->plan.n_stages, short_id(k->plan.stages[from].id, b),
			          mesh_stage_err_name(e.code), e.reason);
		else
			link_fail(k, ML_ERR_PROTO, "stage %d/%u sent a malformed ERROR", from + 1,
			          k->plan.n_stages);
		break;
	}
	default:
		link_fail(k, ML_ERR_PROTO, "stage %d/%u sent an unexpected %s message", from + 1,
		          k->plan.n_stages, net_msg_type_name(type));
		break;
	}
}

static void link_close(struct mesh_stream *s, int err, void *u)
{
	struct mesh_stage_link *k = u;
	int from = link_stage_of(k, s);
	if (from < 0)
		return;
	k->st[from] = NULL;
	char b[9];
	link_fail(k, ML_ERR_CLOSED, "the stream to stage %d/%u (node %s) closed (%s)", from + 1,
	          k->plan.n_stages, short_id(k->plan.stages[from].id, b),
	          err ? ml_strerror(err) : "finished");
}

static const struct mesh_stream_callbacks link_cb = {link_msg, NULL, link_close, NULL};

/* Loop thread: the engine thread queued work. */
static void link_wake(evutil_socket_t fd, short what, void *u)
{
	(void)fd;
	(void)what;
	struct mesh_stage_link *k = u;
	char b[9];

	pthread_mutex_lock(&k->mu);
	k->loop_tid = pthread_self();
	k->loop_tid_set = true;
	bool want_plan = k->want_plan;
	k->want_plan = false;
	pthread_mutex_unlock(&k->mu);
	if (want_plan) {
		for (uint32_t i = 1; i < k->plan.n_stages; i++) {
			/* a plan sent again (start() after an early one) reuses the stream */
			int rc = k->st[i]
			             ? 0
			             : mesh_stream_open(k->mesh, k->plan.stages[i].id,
			                                NET_STREAM_STAGE, &link_cb, k, &k->st[i]);
			if (rc < 0) {
				k->st[i] = NULL;
				link_fail(k, rc,
				          "cannot open a stage stream to stage %u/%u (node %s): %s",
				          i + 1, k->plan.n_stages,
				          short_id(k->plan.stages[i].id, b), ml_last_error());
				return;
			}
			net_buf_reset(&k->tx);
			rc = mesh_stage_plan_put(&k->tx, &k->plan);
			if (rc == 0)
				rc = send_framed(k->st[i], &k->tx, 0);
			if (rc < 0) {
				link_fail(k, rc, "cannot send the plan to stage %u/%u: %s", i + 1,
				          k->plan.n_stages, ml_last_error());
				return;
			}
		}
	}

	/* KV commands first, then the batch: the engine thread queued them in
	 * that order (it waits for each batch's result before going on). */
	for (;;) {
		pthread_mutex_lock(&k->mu);
		if (k->kv_n == 0) {
			pthread_mutex_unlock(&k->mu);
			break;
		}
		struct mesh_stage_kv kv = k->kvq[k->kv_head];
		k->kv_head = (k->kv_head + 1) % LINK_KVQ;
		k->kv_n--;
		pthread_cond_broadcast(&k->cv);
		pthread_mutex_unlock(&k->mu);
		if (!k->st[1])
			continue;
		net_buf_reset(&k->tx);
		if (mesh_stage_kv_put(&k->tx, &kv) == 0)
			send_framed(k->st[1], &k->tx, 0);
	}
	pthread_mutex_lock(&k->mu);
	bool batch = k->batch_ready;
	pthread_mutex_unlock(&k->mu);
	if (batch) {
		int rc = k->st[1] ? send_framed(k->st[1], &k->tx_batch, 0) : ML_ERR_CLOSED;
		pthread_mutex_lock(&k->mu);
		k->batch_ready = false;
		pthread_mutex_unlock(&k->mu);
		if (rc < 0)
			link_fail(k, rc, "cannot send a batch to stage 2/%u: %s", k->plan.n_stages,
			          ml_last_error());
	}
}

static void link_poke(struct mesh_stage_link *k)
{
	event_active(k->wake, EV_READ, 0);
}

/* Waits under k->mu until |done(k)|, an error or the timeout. Returns 0,
 * the recorded error, or ML_ERR_TIMEOUT; sets ml_error(). */
static int link_wait(struct mesh_stage_link *k, bool (*done)(struct mesh_stage_link *),
                     const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += k->timeout_ms / 1000;
	ts.tv_nsec += (long)(k->timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	int rc = 0;
	while (!k->err && !done(k) && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&k->cv, &k->mu, &ts);
	if (k->err)
		return ml_error(k->err, "%s", k->errmsg);
	if (!done(k)) {
		k->err = ML_ERR_TIMEOUT;
		snprintf(k->errmsg, sizeof(k->errmsg), "no answer from the stages for %u ms (%s)",
		         k->timeout_ms, what);
		return ml_error(k->err, "%s", k->errmsg);
	}
	return 0;
}

static bool all_acked(struct mesh_stage_link *k)
{
	return k->n_acked == (int)k->plan.n_stages - 1;
}

static bool result_in(struct mesh_stage_link *k)
{
	return k->result_ready;
}

static bool want_output(const struct gguf_tensor *t, void *u)
{
	return strcmp(t->name, (const char *)u) == 0;
}

static int link_start(struct eng_link *l, const struct eng_link_setup *s)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	int rc;
	pthread_mutex_lock(&k->mu);
	k->setup = *s;
	pthread_mutex_unlock(&k->mu);
	if (s->layer_begin != (int)k->plan.stages[0].layer_end ||
	    s->n_layer != (int)k->plan.n_layer)
		return ml_error(ML_ERR_INVALID,
		                "split: the engine runs layers 0-%d of %d but the plan gives the "
		                "host 0-%u of %u",
		                s->layer_begin - 1, s->n_layer, k->plan.stages[0].layer_end - 1,
		                k->plan.n_layer);
	if (s->kv_type != MODEL_KV_F16 && s->kv_type != MODEL_KV_F32)
		return ml_error(ML_ERR_UNSUPPORTED, "split: KV cache type %d", (int)s->kv_type);
	pthread_mutex_lock(&k->mu);
	const bool early = k->plan_early;
	pthread_mutex_unlock(&k->mu);

	/* The output head, mapped from our own file. */
	if ((rc = gguf_open(&k->gf, k->path)) < 0)
		return rc;
	/* (an early plan is the loop's to read: its fingerprint is already set) */
	if (!early && (rc = mesh_stage_fingerprint(k->gf, k->plan.fingerprint)) < 0)
		return rc;
	const char *name =
	    gguf_find_tensor(k->gf, "output.weight") ? "output.weight" : "token_embd.weight";
	if ((rc = gguf_map(k->gf, want_output, (void *)name)) < 0)
		return rc;
	const struct gguf_tensor *t = gguf_find_tensor(k->gf, name);
	if (!t || !t->data || t->ne[0] != (uint64_t)s->n_embd || t->ne[1] != (uint64_t)s->n_vocab ||
	    !kern_type_traits((enum ml_dtype)t->type)->supported)
		return ml_error(ML_ERR_UNSUPPORTED, "split: %s has no usable %s (%d x %d)", k->path,
		                name, s->n_vocab, s->n_embd);
	k->w_out = t->data;
	k->w_type = (enum ml_dtype)t->type;
	enum ml_dtype vdt = kern_type_traits(k->w_type)->vec_dot_type;
	size_t nseq = (size_t)s->n_seq, ne = (size_t)s->n_embd;
	k->normed = malloc(nseq * ne * sizeof(float));
	k->xq = malloc(nseq * ml_dtype_row_size(vdt, s->n_embd) + 64);
	k->exp_seq = malloc((size_t)s->n_batch * sizeof(int32_t));
	k->exp_pos = malloc((size_t)s->n_batch * sizeof(int32_t));
	if (!k->normed || !k->xq || !k->exp_seq || !k->exp_pos)
		return ml_error(ML_ERR_NOMEM, "split: out of memory");
	if ((rc = ml_pool_init(&k->pool, s->n_threads > 0 ? s->n_threads : 1)) < 0)
		return rc;
	uint64_t need =
	    mesh_stage_batch_size((uint32_t)s->n_batch, (uint32_t)s->n_embd, k->act_dtype);
	if (need == 0 || need > NET_FRAME_MAX_STAGE)
		return ml_error(ML_ERR_RANGE,
		                "split: a batch of %d x %d activations does not fit one message",
		                s->n_batch, s->n_embd);
	if ((rc = net_buf_reserve(&k->tx_batch, (size_t)need)) < 0)
		return ml_error(rc, "split: out of memory for the batch buffer");

	const uint8_t kv = s->kv_type == MODEL_KV_F32 ? ML_DTYPE_F32 : ML_DTYPE_F16;
	double t0 = ml_time_s();
	pthread_mutex_lock(&k->mu);
	if (early) {
		/* the stages loaded while we did: their acks may be in already */
		rc = link_wait(k, all_acked, "plan acknowledgements");
		if (rc == 0 &&
		    (k->plan.n_ctx != (uint32_t)s->n_ctx || k->plan.n_seq != (uint32_t)s->n_seq ||
		     k->plan.n_batch != (uint32_t)s->n_batch || k->plan.kv_dtype != kv)) {
			ML_INFO(
			    "split: the engine runs %d sequences of %d positions, batches of %d, "
			    "%s KV; the plan sent early said %u, %u, %u, %s: sending it again",
			    s->n_seq, s->n_ctx, s->n_batch, kv == ML_DTYPE_F32 ? "f32" : "f16",
			    k->plan.n_seq, k->plan.n_ctx, k->plan.n_batch,
			    k->plan.kv_dtype == ML_DTYPE_F32 ? "f32" : "f16");
			k->n_acked = 0;
			k->plan_early = false;
		}
	}
	if (rc == 0 && !k->plan_early) {
		k->plan.n_ctx = (uint32_t)s->n_ctx;
		k->plan.n_seq = (uint32_t)s->n_seq;
		k->plan.n_batch = (uint32_t)s->n_batch;
		k->plan.act_dtype = k->act_dtype;
		k->plan.kv_dtype = kv;
		k->want_plan = true;
		link_poke(k);
		rc = link_wait(k, all_acked, "plan acknowledgements");
	}
	bool was_early = k->plan_early;
	pthread_mutex_unlock(&k->mu);
	if (rc < 0)
		return rc;
	ML_INFO("split: plan epoch %llu acknowledged by %u stages in %.2f s%s; layers 0-%d here",
	        (unsigned long long)k->plan.epoch, k->plan.n_stages - 1, ml_time_s() - t0,
	        was_early ? " (sent before this node loaded its layers: the stages loaded theirs "
	                    "meanwhile)"
	                  : "",
	        s->layer_begin - 1);
	return 0;
}

/* The output head on the host: logits (n, n_vocab) = normed (n, n_embd)
 * W^T, as pool items (ml_pool_run_items) like the engine's products, so a
 * worker thread the OS descheduled costs the items it took, not a wait for
 * it. The conversion is cut into HEAD_ITEMS_PER_THREAD items per thread,
 * the product into HEAD_CHUNKS_PER_THREAD chunks of at least 16 weight rows
 * per thread (kern_matmul's share (k, n_chunks); any partition is valid and
 * gives the same results). */
#define HEAD_ITEMS_PER_THREAD 2
#define HEAD_CHUNKS_PER_THREAD 4

struct head_job {
	struct mesh_stage_link *k;
	enum ml_dtype vdt;
	int n;
	float *logits;
};

static void head_quant_fn(void *arg, int item, int n_items, int ith)
{
	struct head_job *j = arg;
	(void)ith;
	kern_quantize_rows(j->vdt, j->k->normed, j->k->setup.n_embd, j->k->xq, j->n,
	                   j->k->setup.n_embd, item, n_items);
}

static void head_mm_fn(void *arg, int item, int n_items, int ith)
{
	struct head_job *j = arg;
	const struct mesh_stage_link *k = j->k;
	const void *xq = j->vdt == ML_DTYPE_F32 ? (const void *)k->normed : k->xq;
	(void)ith;
	kern_matmul(k->w_type, k->w_out, k->setup.n_vocab, k->setup.n_embd, xq, j->n, j->logits,
	            k->setup.n_vocab, item, n_items);
}

static void head_run(struct mesh_stage_link *k, int n_out, float *logits)
{
	struct head_job j = {k, kern_type_traits(k->w_type)->vec_dot_type, n_out, logits};
	const int nth = ml_pool_size(k->pool);
	if (j.vdt != ML_DTYPE_F32)
		ml_pool_run_items(k->pool, head_quant_fn, &j,
		                  nth > 1 ? nth * HEAD_ITEMS_PER_THREAD : 1);
	int chunks = nth > 1 ? nth * HEAD_CHUNKS_PER_THREAD : 1;
	if (chunks > k->setup.n_vocab / 16)
		chunks = k->setup.n_vocab / 16 > 1 ? k->setup.n_vocab / 16 : 1;
	ml_pool_run_items(k->pool, head_mm_fn, &j, chunks);
}

static int link_forward(struct eng_link *l, const struct eng_link_batch *b, const float *hidden,
                        float *logits)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	double t0 = ml_time_s();
	int n_out = 0;
	for (int i = 0; i < b->n_tokens; i++)
		if (b->logits[i]) {
			k->exp_seq[n_out] = b->seq[i];
			k->exp_pos[n_out] = b->pos[i];
			n_out++;
		}
	if (n_out > k->setup.n_seq)
		return ml_error(ML_ERR_RANGE, "split: %d rows of logits in one batch, at most %d",
		                n_out, k->setup.n_seq);

	pthread_mutex_lock(&k->mu);
	if (k->err) {
		int err = k->err;
		pthread_mutex_unlock(&k->mu);
		return ml_error(err, "%s", k->errmsg);
	}
	pthread_mutex_unlock(&k->mu);

	/* Encode here (the loop thread does not touch tx_batch until batch_ready). */
	struct mesh_stage_batch_in in = {
	    .epoch = k->plan.epoch,
	    .batch_id = ++k->batch_id,
	    .dtype = k->act_dtype,
	    .rows = MESH_STAGE_ROWS_HIDDEN,
	    .n_embd = (uint32_t)k->setup.n_embd,
	    .n_tokens = (uint32_t)b->n_tokens,
	    .seq = b->seq,
	    .pos = b->pos,
	    .logits = b->logits,
	    .embd = hidden,
	};
	net_buf_reset(&k->tx_batch);
	int rc = mesh_stage_batch_put(&k->tx_batch, NET_MSG_STAGE_FORWARD, &in);
	if (rc < 0)
		return rc;

	pthread_mutex_lock(&k->mu);
	k->n_out = n_out;
	k->result_ready = false;
	k->batch_ready = true;
	link_poke(k);
	rc = link_wait(k, result_in, "a batch result");
	k->result_ready = false;
	k->n_out = -1;
	pthread_mutex_unlock(&k->mu);
	if (rc < 0)
		return rc;

	double t1 = ml_time_s();
	if (n_out > 0)
		head_run(k, n_out, logits);
	double t2 = ml_time_s();
	pthread_mutex_lock(&k->mu);
	k->stats.n_batches++;
	k->stats.n_tokens += (uint64_t)b->n_tokens;
	k->stats.n_logit_rows += (uint64_t)n_out;
	k->stats.wait_s += t2 - t0;
	k->stats.head_s += t2 - t1;
	pthread_mutex_unlock(&k->mu);
	return 0;
}

static void link_kv_truncate(struct eng_link *l, int seq, int pos)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	struct mesh_stage_kv kv = {
	    .epoch = k->plan.epoch,
	    .op = pos == 0 ? MESH_STAGE_KV_CLEAR : MESH_STAGE_KV_TRUNCATE,
	    .seq = (uint32_t)seq,
	    .pos = (uint32_t)pos,
	};
	pthread_mutex_lock(&k->mu);
	while (k->kv_n == LINK_KVQ && !k->err)
		pthread_cond_wait(&k->cv, &k->mu);
	if (!k->err) {
		k->kvq[(k->kv_head + k->kv_n) % LINK_KVQ] = kv;
		k->kv_n++;
		link_poke(k);
	}
	pthread_mutex_unlock(&k->mu);
}

struct link_free_job {
	struct mesh_stage_link *k;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

/* Loop thread: finish the streams before the link goes away. */
static void link_free_on_loop(evutil_socket_t fd, short what, void *u)
{
	(void)fd;
	(void)what;
	struct link_free_job *j = u;
	struct mesh_stage_link *k = j->k;
	for (uint32_t i = 1; i < k->plan.n_stages; i++)
		if (k->st[i]) {
			struct mesh_stream *s = k->st[i];
			k->st[i] = NULL;
			mesh_stream_set_callbacks(s, &detached_cb, NULL);
			mesh_stream_finish(s);
		}
	pthread_mutex_lock(&j->mu);
	j->done = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

static void link_free(struct eng_link *l)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	bool on_loop = k->loop_tid_set && pthread_equal(k->loop_tid, pthread_self());
	pthread_mutex_unlock(&k->mu);
	if (k->wake && on_loop) {
		/* freed from a loop callback (shutdown): detach right here */
		event_free(k->wake);
		struct link_free_job j = {.k = k, .done = false};
		pthread_mutex_init(&j.mu, NULL);
		pthread_cond_init(&j.cv, NULL);
		link_free_on_loop(-1, 0, &j);
		pthread_mutex_destroy(&j.mu);
		pthread_cond_destroy(&j.cv);
	} else if (k->wake) {
		event_free(k->wake);
		/* Detach the streams on the loop thread, and wait for it. */
		struct link_free_job j = {.k = k, .done = false};
		pthread_mutex_init(&j.mu, NULL);
		pthread_cond_init(&j.cv, NULL);
		if (event_base_once(k->base, -1, EV_TIMEOUT, link_free_on_loop, &j,
		                    &(struct timeval){0, 0}) == 0) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 5;
			pthread_mutex_lock(&j.mu);
			int rc = 0;
			while (!j.done && rc != ETIMEDOUT)
				rc = pthread_cond_timedwait(&j.cv, &j.mu, &ts);
			pthread_mutex_unlock(&j.mu);
			if (!j.done)
				ML_WARN("split: the event loop did not release the stage streams");
		}
		pthread_mutex_destroy(&j.mu);
		pthread_cond_destroy(&j.cv);
	}
	ml_pool_free(k->pool);
	gguf_close(k->gf);
	net_buf_free(&k->tx);
	net_buf_free(&k->tx_batch);
	free(k->normed);
	free(k->xq);
	free(k->exp_seq);
	free(k->exp_pos);
	free(k->path);
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->cv);
	free(k);
}

int mesh_stage_link_new(struct eng_link **out, const struct mesh_stage_link_params *p)
{
	*out = NULL;
	if (!p || !p->mesh || !p->base || !p->model_path || !p->plan)
		return ml_error(ML_ERR_INVALID, "mesh_stage_link_new: missing parameters");
	if (p->plan->n_stages < 2 || p->plan->n_stages > MESH_STAGE_MAX_STAGES)
		return ml_error(
		    ML_ERR_INVALID,
		    "mesh_stage_link_new: a split needs 2 to %d stages, the plan has %u",
		    MESH_STAGE_MAX_STAGES, p->plan->n_stages);
	if (memcmp(p->plan->stages[0].id, mesh_node_id(p->mesh), NET_ID_LEN) != 0)
		return ml_error(ML_ERR_INVALID,
		                "mesh_stage_link_new: stage 1 of the plan is not this node");
	if (p->act_dtype != ML_DTYPE_F32 && p->act_dtype != ML_DTYPE_F16)
		return ml_error(ML_ERR_INVALID, "mesh_stage_link_new: activation type %u",
		                p->act_dtype);
	struct mesh_stage_link *k = calloc(1, sizeof(*k));
	if (!k)
		return ml_error(ML_ERR_NOMEM, "mesh_stage_link_new: out of memory");
	k->mesh = p->mesh;
	k->base = p->base;
	k->act_dtype = p->act_dtype;
	k->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : 60000;
	k->plan = *p->plan;
	k->n_out = -1;
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv, NULL);
	net_buf_init(&k->tx, NET_FRAME_MAX_STAGE + NET_FRAME_HDR_LEN);
	net_buf_init(&k->tx_batch, NET_FRAME_MAX_STAGE + NET_FRAME_HDR_LEN);
	k->path = strdup(p->model_path);
	k->wake = event_new(p->base, -1, 0, link_wake, k);
	k->link.start = link_start;
	k->link.forward = link_forward;
	k->link.kv_truncate = link_kv_truncate;
	k->link.free = link_free;
	if (!k->path || !k->wake) {
		link_free(&k->link);
		return ml_error(ML_ERR_NOMEM, "mesh_stage_link_new: out of memory");
	}
	*out = &k->link;
	return 0;
}

int mesh_stage_link_send_plan(struct eng_link *l, const struct eng_link_setup *expect)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	if (!k || !expect || expect->n_seq < 1 || expect->n_ctx < 1 || expect->n_batch < 1 ||
	    (expect->kv_type != MODEL_KV_F16 && expect->kv_type != MODEL_KV_F32))
		return ml_error(ML_ERR_INVALID, "%s: no link or a bad setup", __func__);
	pthread_mutex_lock(&k->mu);
	bool sent = k->plan_early || k->want_plan || k->n_acked > 0;
	pthread_mutex_unlock(&k->mu);
	if (sent)
		return ml_error(ML_ERR_INVALID, "%s: the plan was sent already", __func__);
	/* the loop thread reads the plan only once want_plan is set (under mu) */
	int rc = mesh_stage_fingerprint_file(k->path, k->plan.fingerprint);
	if (rc < 0)
		return rc;
	k->plan.n_ctx = (uint32_t)expect->n_ctx;
	k->plan.n_seq = (uint32_t)expect->n_seq;
	k->plan.n_batch = (uint32_t)expect->n_batch;
	k->plan.act_dtype = k->act_dtype;
	k->plan.kv_dtype = expect->kv_type == MODEL_KV_F32 ? ML_DTYPE_F32 : ML_DTYPE_F16;
	pthread_mutex_lock(&k->mu);
	k->plan_early = true;
	k->want_plan = true;
	link_poke(k);
	pthread_mutex_unlock(&k->mu);
	return 0;
}

void mesh_stage_link_get_setup(struct eng_link *l, struct eng_link_setup *out)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	pthread_mutex_lock(&k->mu);
	*out = k->setup;
	pthread_mutex_unlock(&k->mu);
}

void mesh_stage_link_get_stats(struct eng_link *l, struct mesh_stage_link_stats *out)
{
	struct mesh_stage_link *k = (struct mesh_stage_link *)l;
	pthread_mutex_lock(&k->mu);
	*out = k->stats;
	pthread_mutex_unlock(&k->mu);
}

void mesh_stage_link_abort(struct eng_link *l, const char *reason)
{
	link_fail((struct mesh_stage_link *)l, ML_ERR_CLOSED, "%s", reason ? reason : "aborted");
}
