/* stage_link: how the engine reaches the pipeline stages after its own.
 *
 * A split engine runs layers [0, a) of its model itself (embedding
 * included) and hands the hidden states of each batch to a link, which runs
 * layers [a, n_layer) somewhere (other model objects in this process, or
 * other nodes over the mesh) and gives back the logits of the entries that
 * asked for them. The engine calls every function of a link on its own
 * thread, one call at a time; forward() blocks until the last stage's
 * result is back. The solo engine has no link and pays nothing for this.
 *
 * KV commands keep the stages' caches in step with the engine's: the engine
 * sends one whenever it truncates or clears a sequence of its own cache
 * (slot reuse with a cached prefix, cancellation, errors).
 *
 * Implementations: eng_link_loop.h (all stages in this process, for tests
 * and as the reference), mesh/mesh_stage.h (stages on other nodes). */
#ifndef ENG_LINK_H
#define ENG_LINK_H

#include <stdint.h>

#include "model/model.h"

/* What the engine tells a link once, from eng_init(), before any batch. */
struct eng_link_setup {
	int layer_begin; /* first layer the link runs (= the engine's layer_end) */
	int n_layer;     /* model layers */
	int n_embd;      /* hidden state width */
	int n_vocab;     /* logits per row */
	int n_seq;       /* sequences (engine slots); seq ids are in [0, n_seq) */
	int n_ctx;       /* positions per sequence */
	int n_batch;     /* most entries per forward() */
	int n_threads;   /* compute threads the engine uses (a hint) */
	/* KV cache type of the engine's layers; every stage must use it too,
	 * or split output differs from solo output */
	enum model_kv_type kv_type;
};

/* One batch as the engine built it, [n_tokens] each (borrowed for the call). */
struct eng_link_batch {
	int n_tokens;
	const int32_t *pos;
	const int32_t *seq;
	const int8_t *logits; /* nonzero: the engine wants this entry's logits */
};

struct eng_link {
	/* Called once by eng_init() after the engine's model is loaded.
	 * Returns 0 or a negative ML_ERR_* with ml_error() set; eng_init()
	 * then fails with it. */
	int (*start)(struct eng_link *l, const struct eng_link_setup *s);
	/* Runs the remaining layers over |hidden| ([n_tokens][n_embd], the
	 * residual stream after layer layer_begin - 1) and writes one row of
	 * n_vocab logits to |logits| for each entry with logits[i] != 0, in
	 * batch order. Blocks until done. Returns 0 or a negative ML_ERR_* with
	 * ml_error() set (the engine then fails the requests in the batch). */
	int (*forward)(struct eng_link *l, const struct eng_link_batch *b, const float *hidden,
	               float *logits);
	/* Forget positions >= |pos| of sequence |seq| on every stage (pos 0
	 * clears it). Best effort: a failure is logged by the link and shows
	 * up as an error of the next forward(). */
	void (*kv_truncate)(struct eng_link *l, int seq, int pos);
	/* Frees the link. eng_free() calls it when the engine owns the link
	 * (eng_params.link_owned). */
	void (*free)(struct eng_link *l);
};

#endif
