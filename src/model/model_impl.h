/* Internal layout of a loaded model, shared by model_load.c (which fills
 * it) and model_forward.c (which computes with it). Not a public header.
 *
 * Shapes are written as (rows, columns) of the matrix a weight is used as:
 * a GGUF tensor with ne = [n_cols, n_rows] stores n_rows rows of n_cols
 * elements, and y = W x takes x of n_cols values to y of n_rows values. */
#ifndef MODEL_IMPL_H
#define MODEL_IMPL_H

#include <stdint.h>

#include "base/ml_dtype.h"
#include "model/model.h"

/* A 2-D weight, a view into the mapped file. */
struct model_weight {
	const char *name;     /* the tensor's name (owned by the gguf_file) */
	const void *data;     /* n_rows rows of ml_dtype_row_size(type, n_cols) bytes */
	enum ml_dtype type;
	int64_t n_rows;       /* ne[1] */
	int64_t n_cols;       /* ne[0] */
};

/* One transformer block. n_q = n_head * head_dim, n_kv = n_head_kv * head_dim. */
struct model_layer {
	const float *attn_norm;      /* (n_embd) */
	struct model_weight wq;      /* (n_q, n_embd) */
	struct model_weight wk;      /* (n_kv, n_embd) */
	struct model_weight wv;      /* (n_kv, n_embd) */
	const float *bq;             /* (n_q) qwen2 only, else NULL */
	const float *bk;             /* (n_kv) qwen2 only */
	const float *bv;             /* (n_kv) qwen2 only */
	const float *q_norm;         /* (head_dim) qwen3 only: RMS norm of each query head */
	const float *k_norm;         /* (head_dim) qwen3 only */
	struct model_weight wo;      /* (n_embd, n_q) */
	const float *bo;             /* (n_embd) optional attn_output.bias, else NULL */
	const float *ffn_norm;       /* (n_embd) */
	struct model_weight w_gate;  /* (n_ff, n_embd) */
	struct model_weight w_up;    /* (n_ff, n_embd) */
	struct model_weight w_down;  /* (n_embd, n_ff) */
};

struct model {
	struct gguf_file *gf;
	struct model_hparams hp;
	int layer_begin;
	int layer_end;
	struct model_weight tok_embd; /* (n_vocab, n_embd); data set on the first stage only */
	const float *rope_freqs;      /* (n_rot/2) optional RoPE frequency factors (Llama 3.1), else NULL */
	const float *output_norm;     /* (n_embd); last stage only */
	struct model_weight output;   /* (n_vocab, n_embd); last stage only (token_embd if tied) */
	struct model_layer *layers;   /* [layer_end - layer_begin], index 0 is layer_begin */
	uint64_t weight_bytes;
};

#endif
