/* In-process stage_link (see eng_link_loop.h): the stages after the
 * engine's own, each a model object over its layer range with its own KV
 * cache, run one after another on the engine thread, sharing one compute
 * pool. Hidden states go from stage to stage through two buffers sized at
 * start(); forward() does not allocate. */
#include "engine/eng_link_loop.h"

#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "model/model.h"

struct loop_stage {
	int layer_begin, layer_end;
	struct model *model;
	struct model_ctx *ctx;
};

struct eng_link_loop {
	struct eng_link link; /* first: the engine's handle */
	char *path;
	int n_stages;
	struct loop_stage st[ENG_LINK_LOOP_MAX_STAGES];
	struct ml_pool *pool;
	int n_embd;
	float *buf[2]; /* [n_batch][n_embd] each: stage input and output */
};

static int loop_start(struct eng_link *l, const struct eng_link_setup *s)
{
	struct eng_link_loop *k = (struct eng_link_loop *)l;
	int rc;

	if (k->st[0].layer_begin != s->layer_begin)
		return ml_error(ML_ERR_INVALID,
		                "eng_link_loop: the first stage starts at layer %d but the engine "
		                "stops at %d",
		                k->st[0].layer_begin, s->layer_begin);
	for (int i = 0; i < k->n_stages; i++) {
		k->st[i].layer_end = i + 1 < k->n_stages ? k->st[i + 1].layer_begin : s->n_layer;
		if (k->st[i].layer_end <= k->st[i].layer_begin || k->st[i].layer_end > s->n_layer)
			return ml_error(ML_ERR_INVALID,
			                "eng_link_loop: stage %d/%d has layers %d-%d of %d", i + 2,
			                k->n_stages + 1, k->st[i].layer_begin,
			                k->st[i].layer_end - 1, s->n_layer);
	}
	if ((rc = ml_pool_init(&k->pool, s->n_threads > 0 ? s->n_threads : 1)) < 0)
		return rc;
	for (int i = 0; i < k->n_stages; i++) {
		struct loop_stage *st = &k->st[i];
		struct model_params mp = {
		    .path = k->path, .layer_begin = st->layer_begin, .layer_end = st->layer_end};
		if ((rc = model_load(&st->model, &mp)) < 0)
			return rc;
		if (model_hparams(st->model)->n_embd != s->n_embd)
			return ml_error(ML_ERR_INVALID,
			                "eng_link_loop: %s has another width (%d, not %d)", k->path,
			                model_hparams(st->model)->n_embd, s->n_embd);
		struct model_ctx_params cp = {.n_seq = s->n_seq,
		                              .n_ctx = s->n_ctx,
		                              .n_batch = s->n_batch,
		                              .kv_type = s->kv_type};
		if ((rc = model_ctx_init_params(&st->ctx, st->model, k->pool, &cp)) < 0)
			return rc;
		ML_INFO("stage %d/%d (in process): layers %d-%d loaded from %s", i + 2,
		        k->n_stages + 1, st->layer_begin, st->layer_end - 1, k->path);
	}
	k->n_embd = s->n_embd;
	for (int i = 0; i < 2; i++) {
		k->buf[i] = malloc((size_t)s->n_batch * (size_t)s->n_embd * sizeof(float));
		if (!k->buf[i])
			return ml_error(ML_ERR_NOMEM, "eng_link_loop: out of memory for a batch");
	}
	return 0;
}

static int loop_forward(struct eng_link *l, const struct eng_link_batch *b, const float *hidden,
                        float *logits)
{
	struct eng_link_loop *k = (struct eng_link_loop *)l;
	const float *in = hidden;
	for (int i = 0; i < k->n_stages; i++) {
		bool last = i + 1 == k->n_stages;
		float *out = last ? logits : k->buf[i & 1];
		struct model_batch mb = {
		    .n_tokens = b->n_tokens,
		    .tokens = NULL,
		    .embd = in,
		    .pos = b->pos,
		    .seq = b->seq,
		    .logits = b->logits,
		};
		int rc = model_forward(k->st[i].ctx, &mb, out);
		if (rc < 0)
			return rc;
		in = out;
	}
	return 0;
}

static void loop_kv_truncate(struct eng_link *l, int seq, int pos)
{
	struct eng_link_loop *k = (struct eng_link_loop *)l;
	for (int i = 0; i < k->n_stages; i++)
		if (k->st[i].ctx)
			model_kv_truncate(k->st[i].ctx, seq, pos);
}

static void loop_free(struct eng_link *l)
{
	struct eng_link_loop *k = (struct eng_link_loop *)l;
	if (!k)
		return;
	for (int i = 0; i < k->n_stages; i++) {
		model_ctx_free(k->st[i].ctx);
		model_free(k->st[i].model);
	}
	ml_pool_free(k->pool);
	free(k->buf[0]);
	free(k->buf[1]);
	free(k->path);
	free(k);
}

int eng_link_loop_new(struct eng_link **out, const char *path, const int *bounds, int n_stages)
{
	*out = NULL;
	if (!path || !bounds || n_stages < 1 || n_stages > ENG_LINK_LOOP_MAX_STAGES)
		return ml_error(ML_ERR_INVALID, "eng_link_loop_new: %d stages (1..%d allowed)",
		                n_stages, ENG_LINK_LOOP_MAX_STAGES);
	for (int i = 0; i < n_stages; i++)
		if (bounds[i] < 1 || (i > 0 && bounds[i] <= bounds[i - 1]))
			return ml_error(ML_ERR_INVALID,
			                "eng_link_loop_new: stage bounds must increase from 1 "
			                "(stage %d starts at layer %d)",
			                i, bounds[i]);
	struct eng_link_loop *k = calloc(1, sizeof(*k));
	char *p = strdup(path);
	if (!k || !p) {
		free(k);
		free(p);
		return ml_error(ML_ERR_NOMEM, "eng_link_loop_new: out of memory");
	}
	k->path = p;
	k->n_stages = n_stages;
	for (int i = 0; i < n_stages; i++)
		k->st[i].layer_begin = bounds[i];
	k->link.start = loop_start;
	k->link.forward = loop_forward;
	k->link.kv_truncate = loop_kv_truncate;
	k->link.free = loop_free;
	*out = &k->link;
	return 0;
}
