/* Loading a model: architecture and hyperparameters from GGUF metadata,
 * shape and type checks of every tensor a layer range needs, and mapping of
 * only those tensors. Weights stay views into the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "gguf/gguf.h"
#include "kernels/kern.h"
#include "model/model_impl.h"

#define MODEL_MAX_LAYERS 4096
#define MODEL_MAX_DIM (1 << 20)

static const struct {
	const char *name;
	enum model_arch arch;
	enum model_rope rope;
} archs[] = {
	{"llama", MODEL_ARCH_LLAMA, MODEL_ROPE_NORMAL},
	{"qwen2", MODEL_ARCH_QWEN2, MODEL_ROPE_NEOX},
	{"qwen3", MODEL_ARCH_QWEN3, MODEL_ROPE_NEOX},
};
#define N_ARCHS (sizeof(archs) / sizeof(archs[0]))

/* ---- metadata ---------------------------------------------------------- */

/* Reads "<arch>.<suffix>" as a positive int no larger than |max|; absent
 * keys give |def| (or an error when def < 0, i.e. the key is required). */
static int get_int(const struct gguf_file *gf, const struct model_hparams *hp, const char *suffix,
		   int def, int max, int *out)
{
	char key[128];
	uint32_t v;
	snprintf(key, sizeof(key), "%s.%s", hp->arch_name, suffix);
	int rc = gguf_get_u32(gf, key, &v);
	if (rc == ML_ERR_NOT_FOUND) {
		if (def < 0)
			return ml_error(ML_ERR_FORMAT, "%s: required key %s is missing", gguf_path(gf), key);
		*out = def;
		return 0;
	}
	if (rc < 0)
		return ml_error(rc, "%s: key %s: %s", gguf_path(gf), key, ml_last_error());
	if (v == 0 || v > (uint32_t)max)
		return ml_error(ML_ERR_FORMAT, "%s: key %s = %u is out of range (1..%d)", gguf_path(gf), key, v,
				max);
	*out = (int)v;
	return 0;
}

static int get_float(const struct gguf_file *gf, const struct model_hparams *hp, const char *suffix,
		     float *out, bool *found)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", hp->arch_name, suffix);
	int rc = gguf_get_f32(gf, key, out);
	*found = rc == 0;
	if (rc == ML_ERR_NOT_FOUND)
		return 0;
	if (rc < 0)
		return ml_error(rc, "%s: key %s: %s", gguf_path(gf), key, ml_last_error());
	return 0;
}

static int read_arch(const struct gguf_file *gf, struct model_hparams *hp)
{
	struct gguf_str s;
	int rc = gguf_get_str(gf, "general.architecture", &s);
	if (rc == ML_ERR_NOT_FOUND)
		return ml_error(ML_ERR_FORMAT, "%s: general.architecture is missing", gguf_path(gf));
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < N_ARCHS; i++) {
		if (s.len == strlen(archs[i].name) && memcmp(s.ptr, archs[i].name, s.len) == 0) {
			hp->arch = archs[i].arch;
			hp->rope_type = archs[i].rope;
			snprintf(hp->arch_name, sizeof(hp->arch_name), "%s", archs[i].name);
			return 0;
		}
	}
	char list[128] = "";
	for (size_t i = 0; i < N_ARCHS; i++) {
		strncat(list, archs[i].name, sizeof(list) - strlen(list) - 1);
		if (i + 1 < N_ARCHS)
			strncat(list, ", ", sizeof(list) - strlen(list) - 1);
	}
	return ml_error(ML_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: %s)",
			gguf_path(gf), (int)(s.len > 64 ? 64 : s.len), s.ptr, list);
}

static int read_hparams(const struct gguf_file *gf, struct model_hparams *hp)
{
	int rc;
	bool found;
	memset(hp, 0, sizeof(*hp));
	if ((rc = read_arch(gf, hp)) < 0)
		return rc;
	if ((rc = get_int(gf, hp, "block_count", -1, MODEL_MAX_LAYERS, &hp->n_layer)) < 0 ||
	    (rc = get_int(gf, hp, "embedding_length", -1, MODEL_MAX_DIM, &hp->n_embd)) < 0 ||
	    (rc = get_int(gf, hp, "feed_forward_length", -1, MODEL_MAX_DIM, &hp->n_ff)) < 0 ||
	    (rc = get_int(gf, hp, "attention.head_count", -1, 4096, &hp->n_head)) < 0 ||
	    (rc = get_int(gf, hp, "attention.head_count_kv", hp->n_head, 4096, &hp->n_head_kv)) < 0 ||
	    (rc = get_int(gf, hp, "context_length", -1, 1 << 24, &hp->n_ctx_train)) < 0)
		return rc;
	/* Mixtral-style files say "llama" too: refuse them by their experts. */
	char ek[128];
	uint32_t n_expert = 0;
	snprintf(ek, sizeof(ek), "%s.expert_count", hp->arch_name);
	if (gguf_get_u32(gf, ek, &n_expert) == 0 && n_expert > 0)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: mixture-of-experts models (%s = %u) are not supported",
				gguf_path(gf), ek, n_expert);
	if (hp->n_head % hp->n_head_kv != 0)
		return ml_error(ML_ERR_FORMAT, "%s: head_count %d is not a multiple of head_count_kv %d",
				gguf_path(gf), hp->n_head, hp->n_head_kv);
	int def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : -1;
	int k_len, v_len;
	if ((rc = get_int(gf, hp, "attention.key_length", def_hd, 65536, &k_len)) < 0 ||
	    (rc = get_int(gf, hp, "attention.value_length", k_len, 65536, &v_len)) < 0)
		return rc;
	if (k_len != v_len)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: key_length %d differs from value_length %d (not supported)",
				gguf_path(gf), k_len, v_len);
	hp->head_dim = k_len;
	if ((rc = get_int(gf, hp, "rope.dimension_count", hp->head_dim, 65536, &hp->n_rot)) < 0)
		return rc;
	if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
		return ml_error(ML_ERR_FORMAT, "%s: rope.dimension_count %d must be even and <= head dim %d",
				gguf_path(gf), hp->n_rot, hp->head_dim);

	hp->norm_eps = 1e-5f;
	if ((rc = get_float(gf, hp, "attention.layer_norm_rms_epsilon", &hp->norm_eps, &found)) < 0)
		return rc;
	if (!found)
		return ml_error(ML_ERR_FORMAT, "%s: required key %s.attention.layer_norm_rms_epsilon is missing",
				gguf_path(gf), hp->arch_name);
	if (!(hp->norm_eps > 0.0f && hp->norm_eps < 1.0f))
		return ml_error(ML_ERR_FORMAT, "%s: RMS norm epsilon %g is out of range (0, 1)", gguf_path(gf),
				(double)hp->norm_eps);

	hp->rope_freq_base = 10000.0f;
	if ((rc = get_float(gf, hp, "rope.freq_base", &hp->rope_freq_base, &found)) < 0)
		return rc;
	if (!(hp->rope_freq_base > 0.0f))
		return ml_error(ML_ERR_FORMAT, "%s: rope.freq_base %g must be positive", gguf_path(gf),
				(double)hp->rope_freq_base);

	/* Linear scaling only ("position interpolation"): freq_scale = 1/factor.
	 * As in llama.cpp, an absent type means linear. */
	float factor = 0.0f;
	char key[128];
	struct gguf_str st;
	bool linear = true;
	snprintf(key, sizeof(key), "%s.rope.scaling.type", hp->arch_name);
	rc = gguf_get_str(gf, key, &st);
	if (rc < 0 && rc != ML_ERR_NOT_FOUND)
		return rc;
	if (rc == 0) {
		if (st.len == 4 && memcmp(st.ptr, "none", 4) == 0)
			linear = false;
		else if (!(st.len == 6 && memcmp(st.ptr, "linear", 6) == 0))
			return ml_error(ML_ERR_UNSUPPORTED,
					"%s: rope scaling type '%.*s' is not supported (supported: none, linear)",
					gguf_path(gf), (int)(st.len > 32 ? 32 : st.len), st.ptr);
	}
	if ((rc = get_float(gf, hp, "rope.scaling.factor", &factor, &found)) < 0)
		return rc;
	if (!found && (rc = get_float(gf, hp, "rope.scale_linear", &factor, &found)) < 0)
		return rc;
	if (!linear || !found || factor == 0.0f)
		factor = 1.0f;
	if (!(factor > 0.0f))
		return ml_error(ML_ERR_FORMAT, "%s: rope scaling factor %g must be positive", gguf_path(gf),
				(double)factor);
	hp->rope_freq_scale = 1.0f / factor;
	return 0;
}

/* ---- tensors ----------------------------------------------------------- */

static void supported_types(char *buf, size_t cap)
{
	buf[0] = '\0';
	for (uint32_t t = 0; t < ML_DTYPE_COUNT; t++) {
		const struct kern_type_traits *tr = kern_type_traits(t);
		if (tr == NULL || !tr->supported || tr->vec_dot == NULL)
			continue;
		if (buf[0])
			strncat(buf, ", ", cap - strlen(buf) - 1);
		strncat(buf, ml_dtype_name(t), cap - strlen(buf) - 1);
	}
}

static int tensor_missing(const struct gguf_file *gf, const char *name, const char *arch)
{
	return ml_error(ML_ERR_FORMAT, "%s: tensor '%s' is missing (required by the %s architecture)",
			gguf_path(gf), name, arch);
}

static int bad_shape(const struct gguf_file *gf, const struct gguf_tensor *t, int64_t ne0, int64_t ne1)
{
	char got[96], want[64];
	if (t->n_dims == 1)
		snprintf(got, sizeof(got), "[%llu]", (unsigned long long)t->ne[0]);
	else
		snprintf(got, sizeof(got), "[%llu, %llu%s]", (unsigned long long)t->ne[0],
			 (unsigned long long)t->ne[1], t->n_dims > 2 ? ", ..." : "");
	if (ne1 < 0)
		snprintf(want, sizeof(want), "[%lld]", (long long)ne0);
	else
		snprintf(want, sizeof(want), "[%lld, %lld]", (long long)ne0, (long long)ne1);
	return ml_error(ML_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", gguf_path(gf), t->name,
			got, want);
}

/* A 1-D F32 vector of |n| values (norm weight or bias). |optional|: absent
 * is fine (*out stays NULL). Records the tensor for mapping in |keep|. */
static int check_vec(const struct gguf_file *gf, const char *name, int64_t n, bool optional,
		     const struct gguf_tensor **out, const char *arch)
{
	const struct gguf_tensor *t = gguf_find_tensor(gf, name);
	*out = NULL;
	if (t == NULL)
		return optional ? 0 : tensor_missing(gf, name, arch);
	if (t->n_dims != 1 || (int64_t)t->ne[0] != n)
		return bad_shape(gf, t, n, -1);
	if (t->type != ML_DTYPE_F32)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s; norm weights and biases must be F32",
				gguf_path(gf), name, ml_dtype_name(t->type));
	*out = t;
	return 0;
}

/* A matrix of |n_rows| rows of |n_cols| in a type the kernels multiply with. */
static int check_mat(const struct gguf_file *gf, const char *name, int64_t n_cols, int64_t n_rows,
		     const struct gguf_tensor **out, const char *arch)
{
	const struct gguf_tensor *t = gguf_find_tensor(gf, name);
	*out = NULL;
	if (t == NULL)
		return tensor_missing(gf, name, arch);
	if (t->n_dims != 2 || (int64_t)t->ne[0] != n_cols || (int64_t)t->ne[1] != n_rows)
		return bad_shape(gf, t, n_cols, n_rows);
	const struct kern_type_traits *tr = kern_type_traits(t->type);
	if (tr == NULL || !tr->supported || tr->vec_dot == NULL || tr->to_f32 == NULL) {
		char list[256];
		supported_types(list, sizeof(list));
		return ml_error(ML_ERR_UNSUPPORTED, "%s: tensor '%s' has weight type %s, which is not supported (supported: %s)",
				gguf_path(gf), name, ml_dtype_name(t->type), list);
	}
	if (ml_dtype_row_size(t->type, n_cols) == 0 || ml_dtype_row_size(tr->vec_dot_type, n_cols) == 0)
		return ml_error(ML_ERR_UNSUPPORTED,
				"%s: tensor '%s': row length %lld is not a multiple of the block size of %s/%s",
				gguf_path(gf), name, (long long)n_cols, ml_dtype_name(t->type),
				ml_dtype_name(tr->vec_dot_type));
	*out = t;
	return 0;
}

static void weight_from(struct model_weight *w, const struct gguf_tensor *t)
{
	w->name = t->name;
	w->data = t->data;
	w->type = (enum ml_dtype)t->type;
	w->n_cols = (int64_t)t->ne[0];
	w->n_rows = (int64_t)t->ne[1];
}

/* Which tensors this stage maps. */
struct map_filter {
	int layer_begin, layer_end;
	bool first, last, tied;
	bool head; /* the last stage maps the output head (model_params.no_output_head) */
};

static bool want_tensor(const struct gguf_tensor *t, void *user)
{
	const struct map_filter *f = user;
	const char *n = t->name;
	if (strncmp(n, "blk.", 4) == 0) {
		char *end;
		long l = strtol(n + 4, &end, 10);
		return end != n + 4 && *end == '.' && l >= f->layer_begin && l < f->layer_end;
	}
	if (strcmp(n, "rope_freqs.weight") == 0)
		return true;
	if (strcmp(n, "token_embd.weight") == 0)
		return f->first || (f->last && f->tied && f->head);
	if (strcmp(n, "output_norm.weight") == 0)
		return f->last;
	if (strcmp(n, "output.weight") == 0)
		return f->last && f->head;
	return false;
}

/* Tensors of one layer, checked (pass 0) or fetched after mapping (pass 1). */
static int layer_tensors(struct model *m, int il, struct model_layer *L)
{
	const struct gguf_file *gf = m->gf;
	const struct model_hparams *hp = &m->hp;
	const int64_t n_q = (int64_t)hp->n_head * hp->head_dim;
	const int64_t n_kv = (int64_t)hp->n_head_kv * hp->head_dim;
	const char *a = hp->arch_name;
	const struct gguf_tensor *t;
	char name[96];
	int rc;

#define NAME(s) (snprintf(name, sizeof(name), "blk.%d." s, il), name)
#define VEC(field, s, n, opt)                                                   \
	do {                                                                    \
		if ((rc = check_vec(gf, NAME(s), (n), (opt), &t, a)) < 0)       \
			return rc;                                              \
		L->field = t ? (const float *)t->data : NULL;                   \
		m->weight_bytes += t ? t->n_bytes : 0;                          \
	} while (0)
#define MAT(field, s, cols, rows)                                               \
	do {                                                                    \
		if ((rc = check_mat(gf, NAME(s), (cols), (rows), &t, a)) < 0)   \
			return rc;                                              \
		weight_from(&L->field, t);                                      \
		m->weight_bytes += t->n_bytes;                                  \
	} while (0)

	VEC(attn_norm, "attn_norm.weight", hp->n_embd, false);
	MAT(wq, "attn_q.weight", hp->n_embd, n_q);
	MAT(wk, "attn_k.weight", hp->n_embd, n_kv);
	MAT(wv, "attn_v.weight", hp->n_embd, n_kv);
	bool qwen2 = hp->arch == MODEL_ARCH_QWEN2;
	VEC(bq, "attn_q.bias", n_q, !qwen2);
	VEC(bk, "attn_k.bias", n_kv, !qwen2);
	VEC(bv, "attn_v.bias", n_kv, !qwen2);
	bool qwen3 = hp->arch == MODEL_ARCH_QWEN3;
	if (qwen3) {
		VEC(q_norm, "attn_q_norm.weight", hp->head_dim, false);
		VEC(k_norm, "attn_k_norm.weight", hp->head_dim, false);
	}
	MAT(wo, "attn_output.weight", n_q, hp->n_embd);
	VEC(bo, "attn_output.bias", hp->n_embd, true);
	VEC(ffn_norm, "ffn_norm.weight", hp->n_embd, false);
	MAT(w_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff);
	MAT(w_up, "ffn_up.weight", hp->n_embd, hp->n_ff);
	MAT(w_down, "ffn_down.weight", hp->n_ff, hp->n_embd);
#undef NAME
#undef VEC
#undef MAT
	return 0;
}

/* Checks (before mapping, data pointers NULL) or fetches (after) all tensors
 * of this stage. */
static int stage_tensors(struct model *m, bool head)
{
	const struct gguf_file *gf = m->gf;
	struct model_hparams *hp = &m->hp;
	const struct gguf_tensor *t;
	int rc;

	m->weight_bytes = 0;
	if ((rc = check_vec(gf, "rope_freqs.weight", hp->n_rot / 2, true, &t, hp->arch_name)) < 0)
		return rc;
	m->rope_freqs = t ? (const float *)t->data : NULL;
	if (model_is_first(m)) {
		if ((rc = check_mat(gf, "token_embd.weight", hp->n_embd, hp->n_vocab, &t, hp->arch_name)) < 0)
			return rc;
		weight_from(&m->tok_embd, t);
		m->weight_bytes += t->n_bytes;
	}
	for (int il = m->layer_begin; il < m->layer_end; il++)
		if ((rc = layer_tensors(m, il, &m->layers[il - m->layer_begin])) < 0)
			return rc;
	if (model_is_last(m)) {
		if ((rc = check_vec(gf, "output_norm.weight", hp->n_embd, false, &t, hp->arch_name)) < 0)
			return rc;
		m->output_norm = (const float *)t->data;
		m->weight_bytes += t->n_bytes;
	}
	if (model_is_last(m) && head) {
		const char *out_name = hp->tied_output ? "token_embd.weight" : "output.weight";
		if ((rc = check_mat(gf, out_name, hp->n_embd, hp->n_vocab, &t, hp->arch_name)) < 0)
			return rc;
		weight_from(&m->output, t);
		if (!(hp->tied_output && model_is_first(m)))
			m->weight_bytes += t->n_bytes;
	}
	return 0;
}

int model_load(struct model **out, const struct model_params *p)
{
	struct model *m;
	int rc;

	*out = NULL;
	if (p == NULL || p->path == NULL)
		return ml_error(ML_ERR_INVALID, "model_load: no model path given");
	kern_init();
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return ML_ERR_NOMEM;
	if ((rc = gguf_open(&m->gf, p->path)) < 0)
		goto fail;
	if ((rc = read_hparams(m->gf, &m->hp)) < 0)
		goto fail;

	struct model_hparams *hp = &m->hp;
	const struct gguf_tensor *te = gguf_find_tensor(m->gf, "token_embd.weight");
	if (te == NULL) {
		rc = tensor_missing(m->gf, "token_embd.weight", hp->arch_name);
		goto fail;
	}
	if (te->n_dims != 2 || te->ne[0] != (uint64_t)hp->n_embd || te->ne[1] == 0 ||
	    te->ne[1] > (uint64_t)MODEL_MAX_DIM * 4) {
		rc = bad_shape(m->gf, te, hp->n_embd, te->n_dims >= 2 ? (int64_t)te->ne[1] : 0);
		goto fail;
	}
	hp->n_vocab = (int)te->ne[1];
	hp->tied_output = gguf_find_tensor(m->gf, "output.weight") == NULL;

	m->layer_begin = p->layer_begin;
	m->layer_end = p->layer_end < 0 ? hp->n_layer : p->layer_end;
	if (m->layer_begin < 0 || m->layer_begin >= m->layer_end || m->layer_end > hp->n_layer) {
		rc = ml_error(ML_ERR_INVALID, "%s: layer range [%d, %d) is not inside the model's %d layers",
			      p->path, p->layer_begin, p->layer_end, hp->n_layer);
		goto fail;
	}
	m->layers = calloc((size_t)(m->layer_end - m->layer_begin), sizeof(*m->layers));
	if (m->layers == NULL) {
		rc = ML_ERR_NOMEM;
		goto fail;
	}
	/* Check everything before mapping anything, then map and fetch. */
	const bool head = !p->no_output_head;
	if ((rc = stage_tensors(m, head)) < 0)
		goto fail;
	struct map_filter f = {m->layer_begin, m->layer_end, model_is_first(m), model_is_last(m),
			       hp->tied_output, head};
	gguf_set_resident(m->gf, !p->mmap);
	if ((rc = gguf_map(m->gf, want_tensor, &f)) < 0)
		goto fail;
	if ((rc = stage_tensors(m, head)) < 0)
		goto fail;

	ML_INFO("loading layers %d-%d of %d of %s model %s%s%s (%.1f MB %s)", m->layer_begin,
		m->layer_end - 1, hp->n_layer, hp->arch_name, p->path, model_is_first(m) ? ", with embeddings" : "",
		!model_is_last(m) ? "" : head ? ", with output head" : ", with final norm (no output head)",
		(double)m->weight_bytes / 1e6,
		p->mmap ? "mapped" : "resident");
	*out = m;
	return 0;
fail:
	model_free(m);
	return rc;
}

void model_free(struct model *m)
{
	if (m == NULL)
		return;
	free(m->layers);
	gguf_close(m->gf);
	free(m);
}

const struct model_hparams *model_hparams(const struct model *m)
{
	return &m->hp;
}

const struct gguf_file *model_gguf(const struct model *m)
{
	return m->gf;
}

int model_layer_begin(const struct model *m)
{
	return m->layer_begin;
}

int model_layer_end(const struct model *m)
{
	return m->layer_end;
}

bool model_is_first(const struct model *m)
{
	return m->layer_begin == 0;
}

bool model_is_last(const struct model *m)
{
	return m->layer_end == m->hp.n_layer;
}

uint64_t model_weight_bytes(const struct model *m)
{
	return m->weight_bytes;
}
