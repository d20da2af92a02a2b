/* The forward pass over a layer range for a batch of tokens from several
 * sequences, and the context it runs in (KV cache plus scratch, all sized
 * once in model_ctx_init()).
 *
 * Per layer, as llama.cpp's llama/qwen2/qwen3 graphs:
 *   xn = rmsnorm(x) * attn_norm
 *   q, k, v = Wq xn (+bq), Wk xn (+bk), Wv xn (+bv)
 *   qwen3: q, k = rmsnorm per head * q_norm / k_norm
 *   q, k = rope(q, pos), rope(k, pos); k, v -> cache[layer][seq][pos]
 *   x += Wo attention(q, cache)
 *   xn = rmsnorm(x) * ffn_norm
 *   x += Wdown (silu(Wgate xn) * Wup xn)
 * and on the last stage logits = Woutput (rmsnorm(x) * output_norm) for the
 * entries that ask for them (only the normed rows when |out| is NULL: a
 * pipeline's last network stage sends those, the host owns the head).
 *
 * Matrix products convert the activations once per vec-dot type
 * (kern_quantize_rows) and share them between q/k/v and between gate/up.
 * A batch of tokens goes through each product at once (kern_matmul's tiled
 * matrix-matrix path), never token by token.
 *
 * Threads: every parallel step is a pool item job (ml_pool_run_items):
 * products are cut into chunks of weight rows, the attention into groups of
 * (token, KV head) units, per-row work (norms, RoPE and the KV-cache writes)
 * and element-wise ops into row ranges, and whichever threads are running
 * take the items; the step ends when the items are done, so a thread that
 * the OS delays (cores shared with other processes) costs the items it
 * took, not a wait at every step. Steps run on the pool only when they are
 * large enough to pay for waking the workers (MODEL_MIN_PARALLEL_WORK).
 *
 * The KV cache holds F32 or F16 rows (model_ctx_params.kv_type); K is
 * stored after RoPE, both rounded to half once when written. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "kernels/kern.h"
#include "kernels/kern_ops.h"
#include "model/model_impl.h"

struct model_ctx {
	struct model *m;
	struct ml_pool *pool;  /* borrowed; NULL: compute on the calling thread */
	int nth;               /* threads of the pool */
	int n_seq;
	int n_ctx;
	int n_batch;
	int n_layer;           /* layers held: layer_end - layer_begin */
	int64_t n_q;           /* n_head * head_dim */
	int64_t n_kv;          /* n_head_kv * head_dim */
	enum model_kv_type kv_type;
	size_t kv_esz;         /* bytes per cache element: 4 (F32) or 2 (F16) */

	void *k_cache;         /* (n_layer, n_seq, n_ctx, n_kv) of kv_type */
	void *v_cache;         /* (n_layer, n_seq, n_ctx, n_kv) of kv_type */
	int32_t *seq_len;      /* (n_seq) positions held per sequence */
	int32_t *seq_next;     /* (n_seq) scratch: next position while checking a batch */

	float *x;              /* (n_batch, n_embd) residual stream */
	float *xn;             /* (n_batch, n_embd) normed block input, then block output */
	float *q;              /* (n_batch, n_q) */
	float *k;              /* (n_batch, n_kv) */
	float *v;              /* (n_batch, n_kv) */
	float *att;            /* (n_batch, n_q) attention output */
	float *gate;           /* (n_batch, n_ff) */
	float *up;             /* (n_batch, n_ff) */
	float *rope_cs;        /* (n_batch, n_rot) cos/sin per entry */
	float *out_norm;       /* (n_batch, n_embd) last stage: normed rows that want logits */
	void *xq;              /* (n_batch, row bytes of the widest input in any vec-dot type) */
	size_t xq_row_cap;     /* bytes per xq row available */
	const void **att_k;    /* (n_batch) K cache rows of each entry's sequence */
	const void **att_v;    /* (n_batch) V cache rows */
	int32_t *att_n;        /* (n_batch) positions each entry may see */
	float *att_scratch;    /* (nth, n_head / n_head_kv * n_ctx) softmax rows */

	int n_last;            /* entries in the last batch */
	int n_out;             /* rows of out_norm filled by the last batch */
};

/* ---- threaded jobs ----------------------------------------------------- */

/* Jobs below this much work (in multiply-adds, or the equivalent for
 * element-wise ops) run on the calling thread. Handing a job to the pool
 * and waiting for it costs ~1-5 us when the workers are spinning; a single
 * thread does 64K multiply-adds of a quantized product in ~5-10 us. The
 * first version used 1M, which kept decode attention (2 * n_ctx * n_q per
 * layer, ~0.7M for a 1B model at 160 positions) and every per-row op on one
 * thread. */
#define MODEL_MIN_PARALLEL_WORK (64 * 1024)
/* Chunks of weight rows per thread in a product: more chunks balance
 * threads that run at different speeds, fewer cost less bookkeeping. */
#define MODEL_MM_CHUNKS_PER_THREAD 4
/* Items per thread for the attention and the row / element-wise steps. */
#define MODEL_ITEMS_PER_THREAD 2

static bool use_pool(const struct model_ctx *c, double work)
{
	return c->pool && c->nth > 1 && work >= MODEL_MIN_PARALLEL_WORK;
}

/* Runs |fn| as MODEL_ITEMS_PER_THREAD items per thread on the pool, or as
 * one item on the calling thread when |work| is too small. */
static void pool_run(struct model_ctx *c, ml_pool_item_fn fn, void *arg, double work)
{
	if (use_pool(c, work))
		ml_pool_run_items(c->pool, fn, arg, c->nth * MODEL_ITEMS_PER_THREAD);
	else
		fn(arg, 0, 1, 0);
}

/* Contiguous share [*lo, *hi) of |n| items for thread |ith| of |nth|. */
static void share(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
	const int64_t per = (n + nth - 1) / nth;
	*lo = per * ith < n ? per * ith : n;
	*hi = *lo + per < n ? *lo + per : n;
}

struct quant_job {
	enum ml_dtype vdt;
	const float *x;
	void *xq;
	int64_t n_rows, n_cols;
};

static void quant_fn(void *arg, int item, int n_items, int ith)
{
	const struct quant_job *j = arg;
	(void)ith;
	kern_quantize_rows(j->vdt, j->x, j->n_cols, j->xq, j->n_rows, j->n_cols, item, n_items);
}

/* y (n_tok, w->n_rows) = x (n_tok, w->n_cols) W^T */
struct mm {
	const struct model_weight *w;
	float *y;
	int64_t y_stride;
};

/* Products of one converted input, cut into chunks[i] row chunks each; the
 * pool's items are the chunks of all products in order. Chunk k of product
 * i is kern_matmul()'s share (ith, nth) = (k, chunks[i]): any partition is
 * valid by its contract, and each output is one dot product whatever the
 * split, so results do not depend on the thread count. */
struct mm_job {
	const struct mm *list;
	int n;
	const void *xq;
	int64_t n_tok;
	int chunks[4];
	int n_chunks;
};

static void mm_fn(void *arg, int item, int n_items, int ith)
{
	const struct mm_job *j = arg;
	(void)n_items;
	(void)ith;
	int k = item, i = 0;
	while (k >= j->chunks[i])
		k -= j->chunks[i++];
	const struct model_weight *w = j->list[i].w;
	kern_matmul(w->type, w->data, w->n_rows, w->n_cols, j->xq, j->n_tok, j->list[i].y, j->list[i].y_stride, k,
		    j->chunks[i]);
}

/* Runs the products in |list| (all with inputs of x's width) on the rows of
 * |x| (n_tok, n_cols, packed), converting x once per distinct vec-dot type. */
static void matmuls(struct model_ctx *c, const float *x, int64_t n_tok, const struct mm *list, int n)
{
	bool done[4] = {false, false, false, false};
	for (int i = 0; i < n; i++) {
		if (done[i])
			continue;
		const enum ml_dtype vdt = kern_type_traits(list[i].w->type)->vec_dot_type;
		struct mm group[4];
		int ng = 0;
		for (int k = i; k < n; k++) {
			if (!done[k] && kern_type_traits(list[k].w->type)->vec_dot_type == vdt) {
				group[ng++] = list[k];
				done[k] = true;
			}
		}
		const int64_t n_cols = list[i].w->n_cols;
		const void *xq = x;
		if (vdt != ML_DTYPE_F32) {
			struct quant_job qj = {vdt, x, c->xq, n_tok, n_cols};
			pool_run(c, quant_fn, &qj, (double)n_tok * (double)n_cols * 4);
			xq = c->xq;
		}
		struct mm_job mj = {.list = group, .n = ng, .xq = xq, .n_tok = n_tok};
		double work = 0;
		int64_t rows = 0;
		for (int k = 0; k < ng; k++) {
			work += (double)group[k].w->n_rows * (double)n_cols * (double)n_tok;
			rows += group[k].w->n_rows;
		}
		const bool par = use_pool(c, work);
		/* Row chunks of about rows / (nth * MODEL_MM_CHUNKS_PER_THREAD), at
		 * least 16 rows (kern_matmul aligns shares to 16). */
		int64_t target = par ? rows / ((int64_t)c->nth * MODEL_MM_CHUNKS_PER_THREAD) : rows;
		if (target < 16)
			target = 16;
		for (int k = 0; k < ng; k++) {
			int64_t ck = par ? (group[k].w->n_rows + target - 1) / target : 1;
			mj.chunks[k] = (int)(ck < 1 ? 1 : ck);
			mj.n_chunks += mj.chunks[k];
		}
		if (par)
			ml_pool_run_items(c->pool, mm_fn, &mj, mj.n_chunks);
		else
			for (int k = 0; k < mj.n_chunks; k++)
				mm_fn(&mj, k, mj.n_chunks, 0);
	}
}

/* Item |item| of |n_items| is kern_attn()'s share (item, n_items). Its
 * score rows go to the running thread's scratch row: kern_attn indexes
 * scratch by its share, so it gets that row with a stride of 0. */
static void attn_fn(void *arg, int item, int n_items, int ith)
{
	struct kern_attn_args a = *(const struct kern_attn_args *)arg;
	a.scratch += (size_t)ith * (size_t)a.scratch_stride;
	a.scratch_stride = 0;
	kern_attn(&a, item, n_items);
}

/* y row i = rmsnorm(x row i) * w, rows split between threads. */
struct norm_job {
	float *y;
	const float *x;
	const float *w;
	int64_t n_rows, n;
	float eps;
};

static void norm_fn(void *arg, int item, int n_items, int ith)
{
	const struct norm_job *j = arg;
	int64_t lo, hi;
	(void)ith;
	share(j->n_rows, item, n_items, &lo, &hi);
	for (int64_t i = lo; i < hi; i++)
		kern_rmsnorm(j->y + i * j->n, j->x + i * j->n, j->w, j->n, j->eps);
}

static void norm_rows(struct model_ctx *c, float *y, const float *x, const float *w, int64_t n_rows,
		      int64_t n, float eps)
{
	struct norm_job j = {y, x, w, n_rows, n, eps};
	pool_run(c, norm_fn, &j, (double)n_rows * (double)n * 3);
}

/* Element-wise y = a + b or y = silu(a) * b over |n| values, split between threads. */
struct ew_job {
	bool swiglu;
	float *y;
	const float *a, *b;
	int64_t n;
};

static void ew_fn(void *arg, int item, int n_items, int ith)
{
	const struct ew_job *j = arg;
	int64_t lo, hi;
	(void)ith;
	share((j->n + 15) / 16, item, n_items, &lo, &hi); /* 16-value pieces keep threads off each other's lines */
	lo *= 16;
	hi = hi * 16 < j->n ? hi * 16 : j->n;
	if (lo >= hi)
		return;
	if (j->swiglu)
		kern_swiglu(j->y + lo, j->a + lo, j->b + lo, hi - lo);
	else
		kern_add(j->y + lo, j->a + lo, j->b + lo, hi - lo);
}

static void ew_run(struct model_ctx *c, bool swiglu, float *y, const float *a, const float *b, int64_t n)
{
	struct ew_job j = {swiglu, y, a, b, n};
	pool_run(c, ew_fn, &j, (double)n * (swiglu ? 8 : 1)); /* ~8 multiply-adds per exp */
}

/* ---- context ----------------------------------------------------------- */

static size_t max_row_bytes(const struct model *m, int64_t n_cols_max)
{
	size_t best = (size_t)n_cols_max * sizeof(float);
	for (uint32_t t = 0; t < ML_DTYPE_COUNT; t++) {
		const struct kern_type_traits *tr = kern_type_traits(t);
		if (tr == NULL || !tr->supported)
			continue;
		size_t r = ml_dtype_row_size(tr->vec_dot_type, n_cols_max);
		/* Widths below the maximum may round up differently per block. */
		const struct ml_dtype_info *di = ml_dtype_get(tr->vec_dot_type);
		if (di && di->block_size > 1)
			r = (size_t)((n_cols_max + di->block_size - 1) / di->block_size) * di->type_size;
		if (r > best)
			best = r;
	}
	(void)m;
	return best;
}

struct model_ctx_params model_ctx_default_params(void)
{
	struct model_ctx_params p = {.n_seq = 1, .n_ctx = 512, .n_batch = 512, .kv_type = MODEL_KV_F16};
	return p;
}

int model_ctx_init(struct model_ctx **out, struct model *m, struct ml_pool *pool, int n_seq, int n_ctx,
		   int n_batch)
{
	struct model_ctx_params p = {.n_seq = n_seq, .n_ctx = n_ctx, .n_batch = n_batch, .kv_type = MODEL_KV_F32};
	return model_ctx_init_params(out, m, pool, &p);
}

enum model_kv_type model_ctx_kv_type(const struct model_ctx *c)
{
	return c->kv_type;
}

int model_ctx_init_params(struct model_ctx **out, struct model *m, struct ml_pool *pool,
			  const struct model_ctx_params *p)
{
	const struct model_hparams *hp = &m->hp;
	const int n_seq = p->n_seq, n_ctx = p->n_ctx, n_batch = p->n_batch;
	struct model_ctx *c;

	*out = NULL;
	if (p->kv_type != MODEL_KV_F32 && p->kv_type != MODEL_KV_F16)
		return ml_error(ML_ERR_INVALID, "model_ctx_init: unknown KV cache type %d", (int)p->kv_type);
	if (n_seq < 1 || n_seq > 4096 || n_ctx < 1 || n_ctx > (1 << 24) || n_batch < 1 || n_batch > (1 << 20))
		return ml_error(ML_ERR_INVALID, "model_ctx_init: n_seq %d, n_ctx %d, n_batch %d out of range",
				n_seq, n_ctx, n_batch);
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return ML_ERR_NOMEM;
	c->m = m;
	c->pool = pool;
	c->nth = pool ? ml_pool_size(pool) : 1;
	c->n_seq = n_seq;
	c->n_ctx = n_ctx;
	c->n_batch = n_batch;
	c->n_layer = m->layer_end - m->layer_begin;
	c->n_q = (int64_t)hp->n_head * hp->head_dim;
	c->n_kv = (int64_t)hp->n_head_kv * hp->head_dim;
	c->kv_type = p->kv_type;
	c->kv_esz = p->kv_type == MODEL_KV_F16 ? sizeof(kern_f16) : sizeof(float);

	const size_t nb = (size_t)n_batch;
	const size_t kv_floats = (size_t)c->n_layer * (size_t)n_seq * (size_t)n_ctx * (size_t)c->n_kv;
	int64_t widest = hp->n_embd;
	if (hp->n_ff > widest)
		widest = hp->n_ff;
	if (c->n_q > widest)
		widest = c->n_q;
	c->xq_row_cap = max_row_bytes(m, widest);

	c->k_cache = calloc(kv_floats, c->kv_esz);
	c->v_cache = calloc(kv_floats, c->kv_esz);
	c->seq_len = calloc((size_t)n_seq, sizeof(int32_t));
	c->seq_next = calloc((size_t)n_seq, sizeof(int32_t));
	c->x = malloc(nb * (size_t)hp->n_embd * sizeof(float));
	c->xn = malloc(nb * (size_t)hp->n_embd * sizeof(float));
	c->q = malloc(nb * (size_t)c->n_q * sizeof(float));
	c->k = malloc(nb * (size_t)c->n_kv * sizeof(float));
	c->v = malloc(nb * (size_t)c->n_kv * sizeof(float));
	c->att = malloc(nb * (size_t)c->n_q * sizeof(float));
	c->gate = malloc(nb * (size_t)hp->n_ff * sizeof(float));
	c->up = malloc(nb * (size_t)hp->n_ff * sizeof(float));
	c->rope_cs = malloc(nb * (size_t)hp->n_rot * sizeof(float) + sizeof(float));
	c->out_norm = malloc(nb * (size_t)hp->n_embd * sizeof(float));
	c->xq = malloc(nb * c->xq_row_cap);
	c->att_k = malloc(nb * sizeof(*c->att_k));
	c->att_v = malloc(nb * sizeof(*c->att_v));
	c->att_n = malloc(nb * sizeof(*c->att_n));
	c->att_scratch = malloc((size_t)c->nth * (size_t)(hp->n_head / hp->n_head_kv) * (size_t)n_ctx * sizeof(float));
	if (!c->k_cache || !c->v_cache || !c->seq_len || !c->seq_next || !c->x || !c->xn || !c->q || !c->k ||
	    !c->v || !c->att || !c->gate || !c->up || !c->rope_cs || !c->out_norm || !c->xq || !c->att_k ||
	    !c->att_v || !c->att_n || !c->att_scratch) {
		model_ctx_free(c);
		return ml_error(ML_ERR_NOMEM, "model_ctx_init: out of memory for a KV cache of %.1f MB",
				(double)kv_floats * 2.0 * (double)(p->kv_type == MODEL_KV_F16 ? 2 : 4) / 1e6);
	}
	if (n_ctx > hp->n_ctx_train)
		ML_WARN("context of %d positions is longer than the %d the model was trained with", n_ctx,
			hp->n_ctx_train);
	ML_DEBUG("model context: %d sequence(s) of %d positions, batches of up to %d, KV cache %.1f MB (%s)",
		 n_seq, n_ctx, n_batch, (double)kv_floats * 2.0 * (double)c->kv_esz / 1e6,
		 c->kv_type == MODEL_KV_F16 ? "f16" : "f32");
	*out = c;
	return 0;
}

void model_ctx_free(struct model_ctx *c)
{
	if (c == NULL)
		return;
	free(c->k_cache);
	free(c->v_cache);
	free(c->seq_len);
	free(c->seq_next);
	free(c->x);
	free(c->xn);
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->att);
	free(c->gate);
	free(c->up);
	free(c->rope_cs);
	free(c->out_norm);
	free(c->xq);
	free(c->att_k);
	free(c->att_v);
	free(c->att_n);
	free(c->att_scratch);
	free(c);
}

void model_kv_truncate(struct model_ctx *c, int seq, int pos)
{
	if (seq < 0 || seq >= c->n_seq || pos < 0)
		return;
	if (pos < c->seq_len[seq])
		c->seq_len[seq] = pos;
}

const float *model_ctx_hidden(const struct model_ctx *c)
{
	return c->x;
}

const float *model_ctx_result_norm(const struct model_ctx *c)
{
	return model_is_last(c->m) ? c->out_norm : NULL;
}

/* ---- forward ----------------------------------------------------------- */

static char *cache_row(const struct model_ctx *c, void *cache, int il, int seq, int pos)
{
	size_t i = (((size_t)il * (size_t)c->n_seq + (size_t)seq) * (size_t)c->n_ctx + (size_t)pos);
	return (char *)cache + i * (size_t)c->n_kv * c->kv_esz;
}

static void cache_store(const struct model_ctx *c, char *dst, const float *src)
{
	if (c->kv_type == MODEL_KV_F16)
		kern_f32_to_f16_row((kern_f16 *)dst, src, c->n_kv);
	else
		memcpy(dst, src, (size_t)c->n_kv * sizeof(float));
}

/* Per entry, after the q/k/v products: qwen3's per-head norms, RoPE, and
 * the K/V rows into the cache; rows split between threads. */
struct qkv_job {
	struct model_ctx *c;
	const struct model_layer *L;
	const struct model_batch *b;
	int il;
};

static void qkv_post_fn(void *arg, int item, int n_items, int ith)
{
	const struct qkv_job *j = arg;
	struct model_ctx *c = j->c;
	const struct model_hparams *hp = &c->m->hp;
	const struct model_layer *L = j->L;
	const int64_t HD = hp->head_dim;
	const bool neox = hp->rope_type == MODEL_ROPE_NEOX;
	int64_t lo, hi;
	(void)ith;
	share(j->b->n_tokens, item, n_items, &lo, &hi);
	for (int64_t i = lo; i < hi; i++) {
		float *qi = c->q + i * c->n_q, *ki = c->k + i * c->n_kv;
		if (L->q_norm) {
			for (int h = 0; h < hp->n_head; h++)
				kern_rmsnorm(qi + h * HD, qi + h * HD, L->q_norm, HD, hp->norm_eps);
			for (int h = 0; h < hp->n_head_kv; h++)
				kern_rmsnorm(ki + h * HD, ki + h * HD, L->k_norm, HD, hp->norm_eps);
		}
		const float *cs = c->rope_cs + (size_t)i * hp->n_rot;
		kern_rope(qi, hp->n_head, (int)HD, hp->n_rot, cs, neox);
		kern_rope(ki, hp->n_head_kv, (int)HD, hp->n_rot, cs, neox);
		const int s = j->b->seq[i], p = j->b->pos[i];
		cache_store(c, cache_row(c, c->k_cache, j->il, s, p), ki);
		cache_store(c, cache_row(c, c->v_cache, j->il, s, p), c->v + i * c->n_kv);
	}
}

/* Checks every entry before anything is written, so a bad batch leaves the
 * cache as it was. Each sequence's entries must continue its cached
 * positions without gaps (the first at a position <= what the cache holds,
 * which drops the positions after it; the rest one after another). */
static int check_batch(struct model_ctx *c, const struct model_batch *b)
{
	const struct model *m = c->m;
	if (b->n_tokens < 0 || b->n_tokens > c->n_batch)
		return ml_error(ML_ERR_RANGE, "model_forward: batch of %d entries, at most %d", b->n_tokens,
				c->n_batch);
	if (b->pos == NULL || b->seq == NULL)
		return ml_error(ML_ERR_INVALID, "model_forward: batch without positions or sequence ids");
	if (model_is_first(m) ? b->tokens == NULL : b->embd == NULL)
		return ml_error(ML_ERR_INVALID, "model_forward: batch without %s",
				model_is_first(m) ? "token ids" : "input hidden states");
	memcpy(c->seq_next, c->seq_len, (size_t)c->n_seq * sizeof(int32_t));
	for (int i = 0; i < c->n_seq; i++)
		c->seq_next[i] = -1 - c->seq_next[i]; /* negative: not yet seen in this batch */
	for (int i = 0; i < b->n_tokens; i++) {
		const int s = b->seq[i], p = b->pos[i];
		if (s < 0 || s >= c->n_seq)
			return ml_error(ML_ERR_INVALID, "model_forward: entry %d: sequence id %d outside [0, %d)", i, s,
					c->n_seq);
		if (p < 0 || p >= c->n_ctx)
			return ml_error(ML_ERR_RANGE, "model_forward: entry %d: position %d outside the context of %d",
					i, p, c->n_ctx);
		if (model_is_first(m) && (b->tokens[i] < 0 || b->tokens[i] >= m->hp.n_vocab))
			return ml_error(ML_ERR_INVALID, "model_forward: entry %d: token id %d outside [0, %d)", i,
					b->tokens[i], m->hp.n_vocab);
		const int next = c->seq_next[s];
		if (next < 0 ? p > -1 - next : p != next)
			return ml_error(ML_ERR_INVALID,
					"model_forward: entry %d: position %d of sequence %d does not continue it (expected %s%d)",
					i, p, s, next < 0 ? "at most " : "", next < 0 ? -1 - next : next);
		c->seq_next[s] = p + 1;
	}
	return 0;
}

int model_forward(struct model_ctx *c, const struct model_batch *b, float *out)
{
	const struct model *m = c->m;
	const struct model_hparams *hp = &m->hp;
	const int n = b->n_tokens;
	const int64_t E = hp->n_embd, F = hp->n_ff, HD = hp->head_dim;
	int rc;

	if ((rc = check_batch(c, b)) < 0)
		return rc;
	if (out != NULL && model_is_last(m) && m->output.data == NULL)
		return ml_error(ML_ERR_INVALID, "%s: logits asked of a model loaded without its output head",
				__func__);
	if (n == 0)
		return 0;

	/* Input rows. */
	if (model_is_first(m)) {
		const struct kern_type_traits *tr = kern_type_traits(m->tok_embd.type);
		const size_t row = ml_dtype_row_size(m->tok_embd.type, E);
		for (int i = 0; i < n; i++)
			tr->to_f32((const char *)m->tok_embd.data + (size_t)b->tokens[i] * row, c->x + i * E, E);
	} else {
		memcpy(c->x, b->embd, (size_t)n * (size_t)E * sizeof(float));
	}

	for (int i = 0; i < n; i++)
		kern_rope_cache(c->rope_cs + (size_t)i * hp->n_rot, hp->n_rot, b->pos[i], hp->rope_freq_base,
				hp->rope_freq_scale, m->rope_freqs);
	int nr = n; /* rows still going through the layers */
	const float kq_scale = 1.0f / sqrtf((float)HD);

	for (int il = 0; il < c->n_layer; il++) {
		const struct model_layer *L = &m->layers[il];

		/* Attention block. */
		norm_rows(c, c->xn, c->x, L->attn_norm, n, E, hp->norm_eps);
		struct mm qkv[3] = {{&L->wq, c->q, c->n_q}, {&L->wk, c->k, c->n_kv}, {&L->wv, c->v, c->n_kv}};
		matmuls(c, c->xn, n, qkv, 3);
		if (L->bq) {
			kern_add_rows(c->q, c->n_q, L->bq, c->n_q, n);
			kern_add_rows(c->k, c->n_kv, L->bk, c->n_kv, n);
			kern_add_rows(c->v, c->n_kv, L->bv, c->n_kv, n);
		}
		struct qkv_job qj = {c, L, b, il};
		pool_run(c, qkv_post_fn, &qj, (double)n * (double)(c->n_q + 2 * c->n_kv) * 4);
		for (int i = 0; i < n; i++) {
			c->att_k[i] = cache_row(c, c->k_cache, il, b->seq[i], 0);
			c->att_v[i] = cache_row(c, c->v_cache, il, b->seq[i], 0);
			c->att_n[i] = b->pos[i] + 1;
		}
		struct kern_attn_args aa = {
			.n_tok = n,
			.kv_f16 = c->kv_type == MODEL_KV_F16,
			.n_head = hp->n_head,
			.n_head_kv = hp->n_head_kv,
			.head_dim = (int)HD,
			.q = c->q,
			.q_stride = c->n_q,
			.out = c->att,
			.out_stride = c->n_q,
			.k = c->att_k,
			.v = c->att_v,
			.kv_stride = c->n_kv,
			.n_kv = c->att_n,
			.scale = kq_scale,
			.scratch = c->att_scratch,
			.scratch_stride = (int64_t)(hp->n_head / hp->n_head_kv) * c->n_ctx,
		};
		double att_work = 0;
		for (int i = 0; i < n; i++)
			att_work += (double)c->att_n[i] * (double)c->n_q * 2;
		pool_run(c, attn_fn, &aa, att_work);

		/* The last layer of the last stage goes on only with the rows that
		 * want logits (moved to the front, in batch order): the others
		 * have written their K/V and nothing reads their output. */
		if (model_is_last(m) && il == c->n_layer - 1) {
			int kept = 0;
			for (int i = 0; i < n; i++) {
				if (!(b->logits ? b->logits[i] != 0 : i == n - 1))
					continue;
				if (kept != i) {
					memcpy(c->att + kept * c->n_q, c->att + i * c->n_q, (size_t)c->n_q * sizeof(float));
					memcpy(c->x + kept * E, c->x + i * E, (size_t)E * sizeof(float));
				}
				kept++;
			}
			nr = kept;
			if (nr == 0)
				break;
		}
		struct mm o = {&L->wo, c->xn, E};
		matmuls(c, c->att, nr, &o, 1);
		if (L->bo)
			kern_add_rows(c->xn, E, L->bo, E, nr);
		ew_run(c, false, c->x, c->x, c->xn, (int64_t)nr * E);

		/* Feed-forward block. */
		norm_rows(c, c->xn, c->x, L->ffn_norm, nr, E, hp->norm_eps);
		struct mm gu[2] = {{&L->w_gate, c->gate, F}, {&L->w_up, c->up, F}};
		matmuls(c, c->xn, nr, gu, 2);
		ew_run(c, true, c->gate, c->gate, c->up, (int64_t)nr * F);
		struct mm d = {&L->w_down, c->xn, E};
		matmuls(c, c->gate, nr, &d, 1);
		ew_run(c, false, c->x, c->x, c->xn, (int64_t)nr * E);
	}

	for (int i = 0; i < n; i++)
		c->seq_len[b->seq[i]] = b->pos[i] + 1;
	c->n_last = n;

	if (!model_is_last(m)) {
		if (out)
			memcpy(out, c->x, (size_t)n * (size_t)E * sizeof(float));
		return 0;
	}
	/* The rows kept above (the last entry's if b->logits is NULL): the
	 * final norm always (n_out x n_embd, what a last network stage sends
	 * on), the output head only when the caller wants logits: it is the
	 * largest product of a small model (n_vocab x n_embd per row). */
	norm_rows(c, c->out_norm, c->x, m->output_norm, nr, E, hp->norm_eps);
	c->n_out = nr;
	if (nr > 0 && out) {
		struct mm lo = {&m->output, out, hp->n_vocab};
		matmuls(c, c->out_norm, nr, &lo, 1);
	}
	return 0;
}
