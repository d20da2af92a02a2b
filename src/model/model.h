/* A transformer model (llama, qwen2, qwen3) over a range of its layers.
 *
 * model_load() maps from the GGUF only the tensors of layers [layer_begin,
 * layer_end), plus token_embd on the first stage (layer_begin == 0) and
 * output_norm/output (or tied token_embd) on the last (layer_end ==
 * n_layer). Weights are read once into read-only huge-page memory, or with
 * model_params.mmap stay views of the file's mapping (see gguf_set_resident:
 * resident weights stream ~1.4x faster in decode; the mapping loads lazily
 * and shares the page cache).
 *
 * A model_ctx holds the KV cache of those layers for n_seq sequences of up
 * to n_ctx positions each, plus all scratch for batches of up to n_batch
 * tokens, all allocated once: model_forward() does not allocate. */
#ifndef MODEL_H
#define MODEL_H

#include <stdbool.h>
#include <stdint.h>

struct gguf_file;
struct ml_pool;

enum model_arch {
	MODEL_ARCH_LLAMA,
	MODEL_ARCH_QWEN2,
	MODEL_ARCH_QWEN3,
};

enum model_rope {
	MODEL_ROPE_NORMAL, /* rotate adjacent pairs (x[2i], x[2i+1]) */
	MODEL_ROPE_NEOX,   /* rotate (x[i], x[i + n_rot/2]) */
};

struct model_hparams {
	enum model_arch arch;
	char arch_name[32];
	int n_layer;
	int n_embd;
	int n_ff;
	int n_head;
	int n_head_kv;
	int head_dim;    /* n_embd / n_head unless the metadata says otherwise */
	int n_rot;       /* rope dimension count */
	int n_vocab;
	int n_ctx_train;
	float norm_eps;
	float rope_freq_base;
	float rope_freq_scale; /* 1 / linear scaling factor */
	enum model_rope rope_type;
	bool tied_output;      /* no output.weight: token_embd is the output head */
};

struct model_params {
	const char *path;
	int layer_begin; /* first layer to run (0 for the first stage) */
	int layer_end;   /* one past the last layer; -1 means n_layer */
	bool mmap;       /* weights as views of the file mapping instead of resident */
	/* A last stage whose logits another node computes (a network pipeline's
	 * last worker): output.weight (or, tied, token_embd.weight unless this
	 * is also the first stage) is neither mapped nor counted; output_norm
	 * is. Such a model must be run with model_forward(ctx, b, NULL): the
	 * final-normed rows are in model_ctx_result_norm(). */
	bool no_output_head;
};

struct model;
struct model_ctx;

/* Loads and checks the model at p->path. Unsupported architectures and
 * weight types are refused with a message naming them (and, for
 * architectures, listing the supported ones). */
int model_load(struct model **out, const struct model_params *p);
void model_free(struct model *m); /* accepts NULL */

const struct model_hparams *model_hparams(const struct model *m);
const struct gguf_file *model_gguf(const struct model *m);
int model_layer_begin(const struct model *m);
int model_layer_end(const struct model *m);
bool model_is_first(const struct model *m); /* layer_begin == 0 */
bool model_is_last(const struct model *m);  /* layer_end == n_layer */
/* Bytes of weights this model maps (its layers plus embedding/output where held). */
uint64_t model_weight_bytes(const struct model *m);

/* One batch: n_tokens entries, each (token or hidden state, position,
 * sequence). Entries of one sequence appear in increasing position order and
 * attend to that sequence's cached positions <= their own. They continue the
 * sequence without gaps: the first at a position <= the number the cache
 * holds (a lower one drops the cached positions from there on), the others
 * one after another; otherwise model_forward() returns ML_ERR_INVALID. */
struct model_batch {
	int n_tokens;
	const int32_t *tokens; /* [n_tokens], first stage only */
	const float *embd;     /* [n_tokens][n_embd], input hidden states on later stages */
	const int32_t *pos;    /* [n_tokens] */
	const int32_t *seq;    /* [n_tokens], each in [0, n_seq) */
	const int8_t *logits;  /* [n_tokens], last stage: nonzero = compute logits for it
	                        * (NULL: for the last entry only) */
};

/* Element type of the KV cache. F16 halves its memory and the bytes that
 * attention reads per token (llama.cpp's default); F32 is what the
 * reference outputs in ../shared/refdata were made with. Switching moves
 * the logits by about the amount llama.cpp's own F16-KV variant does
 * (refdata README: ~0.006 on F32/F16 weights, ~0.1 on quantized ones). */
enum model_kv_type {
	MODEL_KV_F32,
	MODEL_KV_F16,
};

struct model_ctx_params {
	int n_seq;                  /* sequences held at once */
	int n_ctx;                  /* positions per sequence */
	int n_batch;                /* most entries per model_forward() call */
	enum model_kv_type kv_type; /* KV cache element type */
};

/* Defaults for serving and benchmarks: 1 sequence, 512 positions, batches
 * of 512, F16 KV cache. */
struct model_ctx_params model_ctx_default_params(void);

/* KV cache for p->n_seq sequences of p->n_ctx positions in p->kv_type and
 * scratch for up to p->n_batch tokens per forward call, computing on |pool|
 * (borrowed; must outlive the ctx; NULL computes on the calling thread).
 * Returns ML_ERR_INVALID for values out of range, ML_ERR_NOMEM. */
int model_ctx_init_params(struct model_ctx **out, struct model *m, struct ml_pool *pool,
			  const struct model_ctx_params *p);

/* As model_ctx_init_params() with an F32 KV cache (the first API; kept
 * for callers that compare with F32-KV reference outputs). */
int model_ctx_init(struct model_ctx **out, struct model *m, struct ml_pool *pool, int n_seq,
		   int n_ctx, int n_batch);

/* The KV cache type |ctx| was made with. */
enum model_kv_type model_ctx_kv_type(const struct model_ctx *ctx);
void model_ctx_free(struct model_ctx *ctx); /* accepts NULL */

/* Forgets positions >= |pos| of sequence |seq| (pos = 0 clears it). */
void model_kv_truncate(struct model_ctx *ctx, int seq, int pos);

/* Runs this model's layers over |b|.
 * Last stage: writes one row of n_vocab logits to |out| for each entry with
 * logits[i] != 0, in batch order. Other stages: writes the hidden states
 * after layer_end - 1, [n_tokens][n_embd], to |out|.
 * |out| may be NULL: then nothing is written there, and on the last stage
 * the output head (the n_vocab x n_embd product) is not computed at all;
 * the results stay readable through model_ctx_hidden() and
 * model_ctx_result_norm() (a pipeline's last network stage sends the normed
 * rows to the host, which owns the head; a middle stage sends the hidden
 * states without a copy).
 * Returns ML_ERR_RANGE for a position >= n_ctx or more than n_batch tokens,
 * ML_ERR_INVALID for a bad token id or sequence id. */
int model_forward(struct model_ctx *ctx, const struct model_batch *b, float *out);

/* After a successful model_forward(), valid until the next one on |ctx|:
 * the residual stream after this model's last layer (llama.cpp's
 * l_out-<layer>), [n_tokens][n_embd], what a non-last stage writes to |out|.
 * On the last stage the last layer runs only for the entries that asked for
 * logits, so only their rows are there, first to last, [n_out][n_embd]. */
const float *model_ctx_hidden(const struct model_ctx *ctx);
/* Last stage only (NULL otherwise): the final RMS-normed rows times
 * output_norm (llama.cpp's result_norm) of the entries that asked for
 * logits, in batch order, [n_out][n_embd]. */
const float *model_ctx_result_norm(const struct model_ctx *ctx);

#endif
