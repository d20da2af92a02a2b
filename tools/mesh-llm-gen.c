/* mesh-llm-gen: writes synthetic GGUF models with random weights for tests
 * and benchmarks, in any supported weight type, for the llama, qwen2 and
 * qwen3 architectures. The files carry complete hyperparameter and tokenizer
 * metadata (a SentencePiece vocab for llama, a byte-level BPE vocab with
 * merges for qwen2/qwen3) so that other GGUF runtimes load them too.
 *
 * Weights follow the scales of ../shared/refdata's synthetic models
 * (token_embd 0.02, attention and gate/up 0.05, down 0.03, output 0.1,
 * biases 0.1, norms 1 + 0.1 noise), drawn from an approximately normal
 * distribution (sum of four uniforms). Quantizing a billion weights with
 * the reference K-quant quantizers takes minutes, so quantized tensors are
 * assembled from a pool of GEN_POOL_BLOCKS blocks quantized once per
 * (type, scale): every block of every row is drawn from the pool at random.
 * Rows are then distinct with overwhelming probability and values have the
 * intended distribution, and a 1B-parameter file is written in seconds.
 * Output is a pure function of the arguments: every row is seeded from
 * (seed, tensor name, row index). Rows are produced in parallel, chunk by
 * chunk, while the file is written, so memory stays small.
 *
 * Type mixtures follow llama.cpp's quantizer: Q4_K_M / Q5_K_M use Q6_K for
 * output.weight and for attn_v / ffn_down of the layers where llama.cpp
 * spends more bits; Q4_0 uses Q6_K for output.weight; 1-D tensors are F32. */
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_pool.h"
#include "base/ml_rng.h"
#include "base/ml_time.h"
#include "gguf/gguf_write.h"
#include "kernels/kern.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum gen_arch { GEN_LLAMA, GEN_QWEN2, GEN_QWEN3 };

struct gen_opts {
	enum gen_arch arch;
	const char *arch_name;
	int n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
	const char *type_name;
	uint64_t seed;
	const char *out;
	int threads;
};

#define GEN_POOL_BLOCKS 4096
#define GEN_MAX_POOLS 16

/* Quantized blocks shared by all tensors of one (type, mean, std). */
struct gen_pool {
	uint32_t type;
	float mean, std;
	uint8_t *blocks; /* [GEN_POOL_BLOCKS][type_size] */
};

/* Per-tensor generation recipe, owned by the tensor table. */
struct gen_tensor {
	char name[64];
	uint32_t type;
	uint32_t n_dims;
	uint64_t ne[4];
	float mean; /* every value is mean + std * noise */
	float std;
	uint64_t seed;
	const struct gen_pool *pool; /* quantized types: where blocks come from */
};

struct gen_fill_job {
	const struct gen_tensor *t;
	uint64_t row0, n_rows;
	uint8_t *dst;
	float *scratch; /* [nth][ne0] */
	int err;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

/* Approximately normal noise with unit variance: the sum of four 16-bit
 * uniforms, centred and scaled (Irwin-Hall). */
static float noise(struct ml_rng *rng)
{
	uint64_t r = ml_rng_next(rng);
	float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
		  (float)(r >> 48);
	return (s / 65536.0f - 2.0f) * 1.7320508f; /* var of sum = 4/12 */
}

static void gen_fill_rows(void *arg, int ith, int nth)
{
	struct gen_fill_job *job = arg;
	const struct gen_tensor *t = job->t;
	const struct kern_type_traits *tr = kern_type_traits(t->type);
	size_t row_bytes = ml_dtype_row_size(t->type, (int64_t)t->ne[0]);
	const struct ml_dtype_info *di = ml_dtype_get(t->type);
	float *x = job->scratch + (size_t)ith * t->ne[0];
	for (uint64_t r = (uint64_t)ith; r < job->n_rows; r += (uint64_t)nth) {
		struct ml_rng rng;
		uint8_t *row = job->dst + r * row_bytes;
		ml_rng_seed(&rng, t->seed ^ ((job->row0 + r) * 0x9e3779b97f4a7c15ull));
		if (t->pool) {
			for (uint64_t b = 0; b < t->ne[0] / di->block_size; b++) {
				uint64_t k = ml_rng_next(&rng) % GEN_POOL_BLOCKS;
				memcpy(row + b * di->type_size, t->pool->blocks + k * di->type_size,
				       di->type_size);
			}
			continue;
		}
		for (uint64_t i = 0; i < t->ne[0]; i++)
			x[i] = t->mean + t->std * noise(&rng);
		tr->from_f32(x, row, (int64_t)t->ne[0]);
	}
}

struct gen_ctx {
	struct gen_tensor *tensors;
	int n_tensors;
	struct gen_pool pools[GEN_MAX_POOLS];
	int n_pools;
	struct ml_pool *pool;
	float *scratch;
};

static int gen_fill(void *user, const char *name, uint64_t row0, uint64_t n_rows, void *dst)
{
	struct gen_ctx *g = user;
	for (int i = 0; i < g->n_tensors; i++) {
		if (strcmp(g->tensors[i].name, name) != 0)
			continue;
		struct gen_fill_job job = {&g->tensors[i], row0, n_rows, dst, g->scratch, 0};
		ml_pool_run(g->pool, gen_fill_rows, &job);
		return 0;
	}
	return ml_error(ML_ERR_NOT_FOUND, "%s: no recipe for tensor %s", __func__, name);
}

/* Finds or makes the block pool of (type, mean, std). */
static int gen_pool_get(struct gen_ctx *g, uint64_t seed, struct gen_tensor *t)
{
	const struct ml_dtype_info *di = ml_dtype_get(t->type);
	const struct kern_type_traits *tr = kern_type_traits(t->type);
	for (int i = 0; i < g->n_pools; i++) {
		struct gen_pool *p = &g->pools[i];
		if (p->type == t->type && p->mean == t->mean && p->std == t->std) {
			t->pool = p;
			return 0;
		}
	}
	if (g->n_pools == GEN_MAX_POOLS)
		return ml_error(ML_ERR_RANGE, "%s: more than %d block pools", __func__, GEN_MAX_POOLS);
	struct gen_pool *p = &g->pools[g->n_pools];
	float x[256];
	struct ml_rng rng;
	p->blocks = malloc((size_t)GEN_POOL_BLOCKS * di->type_size);
	if (p->blocks == NULL)
		return ML_ERR_NOMEM;
	ml_rng_seed(&rng, seed ^ ((uint64_t)t->type << 32) ^ (uint64_t)g->n_pools);
	for (int b = 0; b < GEN_POOL_BLOCKS; b++) {
		for (uint32_t i = 0; i < di->block_size; i++)
			x[i] = t->mean + t->std * noise(&rng);
		tr->from_f32(x, p->blocks + (size_t)b * di->type_size, di->block_size);
	}
	p->type = t->type;
	p->mean = t->mean;
	p->std = t->std;
	g->n_pools++;
	t->pool = p;
	return 0;
}

/* The weight type of a 2-D tensor under file type |ft|, as llama.cpp's
 * quantizer would choose it. */
static uint32_t gen_weight_type(const char *ft, const char *kind, int layer, int n_layer)
{
	bool more_bits = layer >= 0 && (layer < n_layer / 8 || layer >= 7 * n_layer / 8 ||
					(layer - n_layer / 8) % 3 == 2);
	bool is_output = strcmp(kind, "output") == 0;
	if (strcmp(ft, "F32") == 0)
		return ML_DTYPE_F32;
	if (strcmp(ft, "F16") == 0)
		return ML_DTYPE_F16;
	if (strcmp(ft, "BF16") == 0)
		return ML_DTYPE_BF16;
	if (strcmp(ft, "Q8_0") == 0)
		return ML_DTYPE_Q8_0;
	if (strcmp(ft, "Q6_K") == 0)
		return ML_DTYPE_Q6_K;
	if (strcmp(ft, "Q4_0") == 0)
		return is_output ? ML_DTYPE_Q6_K : ML_DTYPE_Q4_0;
	if (strcmp(ft, "Q4_K_M") == 0 || strcmp(ft, "Q5_K_M") == 0) {
		bool v_or_down = strcmp(kind, "attn_v") == 0 || strcmp(kind, "ffn_down") == 0;
		if (is_output || (v_or_down && more_bits))
			return ML_DTYPE_Q6_K;
		return ft[1] == '4' ? ML_DTYPE_Q4_K : ML_DTYPE_Q5_K;
	}
	return UINT32_MAX;
}

/* llama.cpp's general.file_type ids for the names we accept. */
static uint32_t gen_file_type(const char *ft)
{
	static const struct {
		const char *name;
		uint32_t id;
	} ids[] = {{"F32", 0}, {"F16", 1}, {"Q4_0", 2}, {"Q8_0", 7}, {"Q4_K_M", 15},
		   {"Q5_K_M", 17}, {"Q6_K", 18}, {"BF16", 32}};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (strcmp(ids[i].name, ft) == 0)
			return ids[i].id;
	return 0;
}

static int add_tensor(struct gen_ctx *g, const struct gen_opts *o, const char *name, const char *kind,
		      int layer, uint64_t ne0, uint64_t ne1, float mean, float std)
{
	struct gen_tensor *t = &g->tensors[g->n_tensors++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->n_dims = ne1 ? 2 : 1;
	t->ne[0] = ne0;
	t->ne[1] = ne1 ? ne1 : 1;
	t->ne[2] = t->ne[3] = 1;
	t->type = ne1 ? gen_weight_type(o->type_name, kind, layer, o->n_layer) : ML_DTYPE_F32;
	t->mean = mean;
	t->std = std;
	t->seed = o->seed ^ hash_name(name);
	if (ne0 % ml_dtype_get(t->type)->block_size != 0)
		return ml_error(ML_ERR_INVALID,
				"tensor %s: row length %llu is not a multiple of the %s block size %u",
				name, (unsigned long long)ne0, ml_dtype_name(t->type),
				ml_dtype_get(t->type)->block_size);
	return ml_dtype_get(t->type)->block_size > 1 ? gen_pool_get(g, o->seed, t) : 0;
}

static int gen_tensors(struct gen_ctx *g, const struct gen_opts *o)
{
	int hd = o->n_embd / o->n_head;
	uint64_t e = (uint64_t)o->n_embd, q = (uint64_t)hd * o->n_head,
		 kv = (uint64_t)hd * o->n_head_kv, f = (uint64_t)o->n_ff;
	char name[64];
	int rc;
#define ADD(kind, layer, ne0, ne1, mean, std)                                                    \
	do {                                                                                     \
		if ((rc = add_tensor(g, o, name, kind, layer, ne0, ne1, mean, std)) < 0)         \
			return rc;                                                               \
	} while (0)
	snprintf(name, sizeof(name), "token_embd.weight");
	ADD("token_embd", -1, e, (uint64_t)o->n_vocab, 0.0f, 0.02f);
	snprintf(name, sizeof(name), "output_norm.weight");
	ADD("norm", -1, e, 0, 1.0f, 0.1f);
	if (o->arch != GEN_QWEN3) {
		snprintf(name, sizeof(name), "output.weight");
		ADD("output", -1, e, (uint64_t)o->n_vocab, 0.0f, 0.1f);
	}
	for (int l = 0; l < o->n_layer; l++) {
		static const struct {
			const char *kind;
			int rows; /* 0 e, 1 q, 2 kv, 3 ff */
			int cols;
			float std;
		} mats[] = {{"attn_q", 1, 0, 0.05f},   {"attn_k", 2, 0, 0.05f},
			    {"attn_v", 2, 0, 0.05f},   {"attn_output", 0, 1, 0.05f},
			    {"ffn_gate", 3, 0, 0.05f}, {"ffn_up", 3, 0, 0.05f},
			    {"ffn_down", 0, 3, 0.03f}};
		uint64_t dims[4] = {e, q, kv, f};
		snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", l);
		ADD("norm", l, e, 0, 1.0f, 0.1f);
		snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", l);
		ADD("norm", l, e, 0, 1.0f, 0.1f);
		for (size_t m = 0; m < sizeof(mats) / sizeof(mats[0]); m++) {
			snprintf(name, sizeof(name), "blk.%d.%s.weight", l, mats[m].kind);
			ADD(mats[m].kind, l, dims[mats[m].cols], dims[mats[m].rows], 0.0f, mats[m].std);
		}
		if (o->arch == GEN_QWEN2) {
			snprintf(name, sizeof(name), "blk.%d.attn_q.bias", l);
			ADD("bias", l, q, 0, 0.0f, 0.1f);
			snprintf(name, sizeof(name), "blk.%d.attn_k.bias", l);
			ADD("bias", l, kv, 0, 0.0f, 0.1f);
			snprintf(name, sizeof(name), "blk.%d.attn_v.bias", l);
			ADD("bias", l, kv, 0, 0.0f, 0.1f);
		}
		if (o->arch == GEN_QWEN3) {
			snprintf(name, sizeof(name), "blk.%d.attn_q_norm.weight", l);
			ADD("norm", l, (uint64_t)hd, 0, 1.0f, 0.1f);
			snprintf(name, sizeof(name), "blk.%d.attn_k_norm.weight", l);
			ADD("norm", l, (uint64_t)hd, 0, 1.0f, 0.1f);
		}
	}
#undef ADD
	return 0;
}

/* ---- vocabularies ---- */

/* Letters used to build synthetic pieces. */
static const char gen_alpha[] = "etaoinshrdlucmfwypvbgkjqxz";

/* The |i|-th synthetic word: base-26 digits over gen_alpha, at least 2 letters. */
static void gen_word(int i, char *buf)
{
	int n = 0;
	char tmp[16];
	i += 26; /* skip one-letter words: the byte tokens cover them */
	while (i > 0 && n < 15) {
		tmp[n++] = gen_alpha[i % 26];
		i /= 26;
	}
	for (int k = 0; k < n; k++)
		buf[k] = tmp[n - 1 - k];
	buf[n] = '\0';
}

static int add_spm_vocab(struct gguf_writer *w, int n_vocab)
{
	char **tokens = calloc((size_t)n_vocab, sizeof(*tokens));
	float *scores = calloc((size_t)n_vocab, sizeof(*scores));
	int32_t *types = calloc((size_t)n_vocab, sizeof(*types));
	int rc = ML_ERR_NOMEM;
	if (!tokens || !scores || !types)
		goto done;
	for (int i = 0; i < n_vocab; i++) {
		char buf[40];
		if (i == 0)
			snprintf(buf, sizeof(buf), "<unk>"), types[i] = 2;
		else if (i == 1)
			snprintf(buf, sizeof(buf), "<s>"), types[i] = 3;
		else if (i == 2)
			snprintf(buf, sizeof(buf), "</s>"), types[i] = 3;
		else if (i < 3 + 256)
			snprintf(buf, sizeof(buf), "<0x%02X>", i - 3), types[i] = 6;
		else if (i == 259) /* "▁": a lone space must not need byte fallback */
			snprintf(buf, sizeof(buf), "\xe2\x96\x81"), types[i] = 1;
		else {
			char word[16];
			gen_word(i - 260, word);
			/* alternate word-initial ("▁word") and inner pieces */
			snprintf(buf, sizeof(buf), "%s%s", (i & 1) ? "\xe2\x96\x81" : "", word);
			types[i] = 1;
		}
		scores[i] = i < 259 ? 0.0f : -(float)(i - 259);
		if ((tokens[i] = strdup(buf)) == NULL)
			goto done;
	}
	if ((rc = gguf_writer_add_str(w, "tokenizer.ggml.model", "llama")) < 0 ||
	    (rc = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens,
					  (uint64_t)n_vocab)) < 0 ||
	    (rc = gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
				      (uint64_t)n_vocab)) < 0 ||
	    (rc = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
				      (uint64_t)n_vocab)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0)) < 0 ||
	    (rc = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true)) < 0)
		goto done;
	rc = 0;
done:
	for (int i = 0; tokens && i < n_vocab; i++)
		free(tokens[i]);
	free(tokens);
	free(scores);
	free(types);
	return rc;
}

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the rest to
 * U+0100 upwards. Writes the UTF-8 of byte |b|'s symbol. */
static void gpt2_byte_symbol(int b, char *out)
{
	int cp;
	if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
		cp = b;
	} else {
		int n = 0;
		for (int x = 0; x < b; x++)
			if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
				n++;
		cp = 256 + n;
	}
	if (cp < 0x80) {
		out[0] = (char)cp, out[1] = '\0';
	} else {
		out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = '\0';
	}
}

/* Byte-level BPE: ids 0-255 are the bytes (id = byte), then one token per
 * merge ("Ġ" + word prefixes grown letter by letter), then the three
 * ChatML specials at the end. */
static int add_bpe_vocab(struct gguf_writer *w, int n_vocab)
{
	int n_merge = n_vocab - 256 - 3;
	char **tokens = calloc((size_t)n_vocab, sizeof(*tokens));
	char **merges = calloc((size_t)(n_merge > 0 ? n_merge : 1), sizeof(*merges));
	int32_t *types = calloc((size_t)n_vocab, sizeof(*types));
	int rc = ML_ERR_NOMEM;
	if (!tokens || !merges || !types)
		goto done;
	for (int b = 0; b < 256; b++) {
		char sym[4];
		gpt2_byte_symbol(b, sym);
		types[b] = 1;
		if ((tokens[b] = strdup(sym)) == NULL)
			goto done;
	}
	/* merge k joins token left(k) with one letter: words grow "Ġa" -> "Ġab" ...
	 * and every prefix is itself an earlier token, so merges are valid. */
	for (int k = 0; k < n_merge; k++) {
		char word[16], left[64], right[4];
		int id = 256 + k;
		gen_word(k, word);
		size_t n = strlen(word);
		right[0] = word[n - 1], right[1] = '\0';
		word[n - 1] = '\0';
		snprintf(left, sizeof(left), "\xc4\xa0%s", word); /* "Ġ" + prefix */
		if (n - 1 == 0)
			snprintf(left, sizeof(left), "\xc4\xa0");
		char tok[80], merge[160];
		snprintf(tok, sizeof(tok), "%s%s", left, right);
		snprintf(merge, sizeof(merge), "%s %s", left, right);
		types[id] = 1;
		if ((tokens[id] = strdup(tok)) == NULL || (merges[k] = strdup(merge)) == NULL)
			goto done;
	}
	static const char *specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
	for (int s = 0; s < 3; s++) {
		types[n_vocab - 3 + s] = 3;
		if ((tokens[n_vocab - 3 + s] = strdup(specials[s])) == NULL)
			goto done;
	}
	if ((rc = gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2")) < 0 ||
	    (rc = gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2")) < 0 ||
	    (rc = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens,
					  (uint64_t)n_vocab)) < 0 ||
	    (rc = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
				      (uint64_t)n_vocab)) < 0 ||
	    (rc = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges,
					  (uint64_t)n_merge)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)n_vocab - 3)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)n_vocab - 1)) < 0 ||
	    (rc = gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)n_vocab - 3)) < 0 ||
	    (rc = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false)) < 0 ||
	    (rc = gguf_writer_add_str(
		     w, "tokenizer.chat_template",
		     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
		     "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
		     "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")) < 0)
		goto done;
	rc = 0;
done:
	for (int i = 0; tokens && i < n_vocab; i++)
		free(tokens[i]);
	for (int i = 0; merges && i < n_merge; i++)
		free(merges[i]);
	free(tokens);
	free(merges);
	free(types);
	return rc;
}

static int gen_metadata(struct gguf_writer *w, const struct gen_opts *o)
{
	char key[96];
	int rc;
	const char *a = o->arch_name;
#define KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", a, suffix), key)
	if ((rc = gguf_writer_add_str(w, "general.architecture", a)) < 0 ||
	    (rc = gguf_writer_add_str(w, "general.name", "mesh-llm synthetic")) < 0 ||
	    (rc = gguf_writer_add_u32(w, "general.file_type", gen_file_type(o->type_name))) < 0 ||
	    (rc = gguf_writer_add_u32(w, "general.quantization_version", 2)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)o->n_ctx)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)o->n_embd)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)o->n_layer)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)o->n_ff)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)o->n_head)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)o->n_head_kv)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("rope.dimension_count"),
				      (uint32_t)(o->n_embd / o->n_head))) < 0 ||
	    (rc = gguf_writer_add_f32(w, KEY("rope.freq_base"), 10000.0f)) < 0 ||
	    (rc = gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f)) < 0 ||
	    (rc = gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)o->n_vocab)) < 0)
		return rc;
	if (o->arch == GEN_QWEN3 &&
	    ((rc = gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)(o->n_embd / o->n_head))) < 0 ||
	     (rc = gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)(o->n_embd / o->n_head))) < 0))
		return rc;
#undef KEY
	return o->arch == GEN_LLAMA ? add_spm_vocab(w, o->n_vocab) : add_bpe_vocab(w, o->n_vocab);
}

static void gen_usage(FILE *f)
{
	fprintf(f,
		"usage: mesh-llm-gen --arch llama|qwen2|qwen3 --n-layer L --n-embd E --n-ff F\n"
		"                    --n-head H --n-head-kv K --n-vocab V\n"
		"                    --type F32|F16|BF16|Q8_0|Q4_0|Q6_K|Q4_K_M|Q5_K_M\n"
		"                    [--seed S] [--ctx N] [--threads T] -o FILE\n\n"
		"Writes a GGUF model with random weights (deterministic for a given seed).\n"
		"n-embd must be a multiple of n-head, n-head of n-head-kv; K-quant types need\n"
		"n-embd and n-ff to be multiples of 256, Q4_0/Q8_0 multiples of 32.\n"
		"llama gets a SentencePiece vocab (n-vocab >= 260), qwen2/qwen3 a byte-level\n"
		"BPE vocab with ChatML specials (n-vocab >= 260).\n");
}

static int parse_num(const char *flag, const char *v, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (v == NULL || errno || end == v || *end || x < lo || x > hi) {
		fprintf(stderr, "mesh-llm-gen: %s needs an integer in [%ld, %ld], got '%s'\n", flag, lo,
			hi, v ? v : "");
		return -1;
	}
	*out = x;
	return 0;
}

int main(int argc, char **argv)
{
	struct gen_opts o = {.n_ctx = 4096, .threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
	struct {
		const char *flag;
		int *dst;
		long lo, hi;
	} ints[] = {{"--n-layer", &o.n_layer, 1, 1024},    {"--n-embd", &o.n_embd, 1, 65536},
		    {"--n-ff", &o.n_ff, 1, 262144},        {"--n-head", &o.n_head, 1, 1024},
		    {"--n-head-kv", &o.n_head_kv, 1, 1024}, {"--n-vocab", &o.n_vocab, 260, 1 << 20},
		    {"--ctx", &o.n_ctx, 1, 1 << 20},        {"--threads", &o.threads, 1, 256}};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long x;
		size_t k;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			gen_usage(stdout);
			return 0;
		}
		for (k = 0; k < sizeof(ints) / sizeof(ints[0]); k++)
			if (strcmp(a, ints[k].flag) == 0)
				break;
		if (k < sizeof(ints) / sizeof(ints[0])) {
			if (parse_num(a, v, ints[k].lo, ints[k].hi, &x) < 0)
				return 2;
			*ints[k].dst = (int)x;
		} else if (strcmp(a, "--seed") == 0) {
			if (parse_num(a, v, 0, 0x7fffffffffffffffL, &x) < 0)
				return 2;
			o.seed = (uint64_t)x;
		} else if (strcmp(a, "--arch") == 0 && v) {
			o.arch_name = v;
		} else if (strcmp(a, "--type") == 0 && v) {
			o.type_name = v;
		} else if (strcmp(a, "-o") == 0 && v) {
			o.out = v;
		} else {
			fprintf(stderr, "mesh-llm-gen: unknown option or missing value: '%s'\n", a);
			gen_usage(stderr);
			return 2;
		}
		i++;
	}
	if (!o.arch_name || !o.type_name || !o.out || !o.n_layer || !o.n_embd || !o.n_ff ||
	    !o.n_head || !o.n_head_kv || !o.n_vocab) {
		fprintf(stderr, "mesh-llm-gen: --arch, --type, -o and every --n-* option are required\n");
		gen_usage(stderr);
		return 2;
	}
	if (strcmp(o.arch_name, "llama") == 0)
		o.arch = GEN_LLAMA;
	else if (strcmp(o.arch_name, "qwen2") == 0)
		o.arch = GEN_QWEN2;
	else if (strcmp(o.arch_name, "qwen3") == 0)
		o.arch = GEN_QWEN3;
	else {
		fprintf(stderr, "mesh-llm-gen: --arch '%s' is not one of llama, qwen2, qwen3\n",
			o.arch_name);
		return 2;
	}
	if (gen_weight_type(o.type_name, "attn_q", 0, 1) == UINT32_MAX) {
		fprintf(stderr, "mesh-llm-gen: --type '%s' is not one of F32 F16 BF16 Q8_0 Q4_0 "
				"Q6_K Q4_K_M Q5_K_M\n", o.type_name);
		return 2;
	}
	if (o.n_embd % o.n_head || o.n_head % o.n_head_kv) {
		fprintf(stderr, "mesh-llm-gen: n-embd (%d) must be a multiple of n-head (%d), and "
				"n-head of n-head-kv (%d)\n", o.n_embd, o.n_head, o.n_head_kv);
		return 2;
	}

	kern_init();
	struct gen_ctx g = {0};
	struct gguf_writer *w = NULL;
	int max_cols = o.n_embd > o.n_ff ? o.n_embd : o.n_ff;
	int rc = ML_ERR_NOMEM;
	g.tensors = calloc((size_t)(3 + o.n_layer * 12), sizeof(*g.tensors));
	g.scratch = calloc((size_t)o.threads * (size_t)max_cols, sizeof(float));
	if (!g.tensors || !g.scratch)
		goto fail;
	if ((rc = ml_pool_init(&g.pool, o.threads)) < 0 || (rc = gen_tensors(&g, &o)) < 0 ||
	    (rc = gguf_writer_init(&w)) < 0 || (rc = gen_metadata(w, &o)) < 0)
		goto fail;
	uint64_t n_params = 0;
	for (int i = 0; i < g.n_tensors; i++) {
		struct gen_tensor *t = &g.tensors[i];
		n_params += t->ne[0] * t->ne[1];
		if ((rc = gguf_writer_add_tensor_fill(w, t->name, t->type, t->n_dims, t->ne, gen_fill,
						      &g)) < 0)
			goto fail;
	}
	double t0 = ml_time_s();
	if ((rc = gguf_writer_write(w, o.out)) < 0)
		goto fail;
	fprintf(stderr, "mesh-llm-gen: wrote %s: %s %s, %.1fM parameters, %d tensors in %.1f s\n",
		o.out, o.arch_name, o.type_name, (double)n_params / 1e6, g.n_tensors,
		ml_time_s() - t0);
	rc = 0;
fail:
	if (rc < 0)
		fprintf(stderr, "mesh-llm-gen: %s\n", ml_last_error()[0] ? ml_last_error() : ml_strerror(rc));
	gguf_writer_free(w);
	ml_pool_free(g.pool);
	for (int i = 0; i < g.n_pools; i++)
		free(g.pools[i].blocks);
	free(g.tensors);
	free(g.scratch);
	return rc < 0 ? 1 : 0;
}
