/* qa-gen-model: a random-weight llama/qwen2/qwen3 GGUF of any shape, with
 * the tokenizer metadata copied from a template GGUF (QA tool; unlike
 * mesh-llm-gen it takes an explicit head dim, so n_head * head_dim may
 * differ from n_embd as in Qwen3-0.6B, a partial rope dimension count, and
 * a tied output for any arch).
 *
 *   qa-gen-model --template T.gguf --arch A --n-layer L --n-embd E --n-ff F
 *                --n-head H --n-head-kv K --head-dim D [--n-rot R] [--tied]
 *                [--type TYPE] [--seed S] -o OUT.gguf
 *
 * Weight scales follow refdata's synthetic models (embd 0.02, attention
 * and gate/up 0.05, down 0.03, output 0.1, biases 0.1, norms 1 + N(0, 0.1)).
 * 2-D tensors are written in TYPE (default F32) where the row length fits
 * the block size, else F32. */
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "kernels/kern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

static double unif(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static float gauss(void)
{
	return (float)(sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif()));
}

static struct gguf_writer *w;
static int wtype = ML_DTYPE_F32;
static void *bufs[4096];
static int n_bufs;

static void add(const char *name, int64_t ne0, int64_t ne1, float std, float mean)
{
	const int64_t n = ne0 * ne1;
	float *x = malloc((size_t)n * sizeof(float));
	for (int64_t i = 0; i < n; i++)
		x[i] = mean + std * gauss();
	uint32_t t = ML_DTYPE_F32;
	void *data = x;
	if (ne1 > 1 && wtype != ML_DTYPE_F32 &&
	    ne0 % ml_dtype_get((uint32_t)wtype)->block_size == 0) {
		t = (uint32_t)wtype;
		const size_t rs = ml_dtype_row_size(t, ne0);
		data = malloc(rs * (size_t)ne1);
		for (int64_t r = 0; r < ne1; r++)
			kern_type_traits(t)->from_f32(x + r * ne0, (char *)data + (size_t)r * rs,
			                              ne0);
		free(x);
	}
	bufs[n_bufs++] = data;
	const uint64_t ne[2] = {(uint64_t)ne0, (uint64_t)ne1};
	if (gguf_writer_add_tensor(w, name, t, ne1 > 1 ? 2 : 1, ne, data) != 0) {
		fprintf(stderr, "qa-gen-model: %s: %s\n", name, ml_last_error());
		exit(1);
	}
}

int main(int argc, char **argv)
{
	const char *tmpl = NULL, *arch = NULL, *out = NULL;
	long L = 0, E = 0, F = 0, H = 0, K = 0, D = 0, R = -1, seed = 1;
	bool tied = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--tied")) {
			tied = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "qa-gen-model: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--template"))
			tmpl = v;
		else if (!strcmp(a, "--arch"))
			arch = v;
		else if (!strcmp(a, "-o"))
			out = v;
		else if (!strcmp(a, "--n-layer"))
			L = atol(v);
		else if (!strcmp(a, "--n-embd"))
			E = atol(v);
		else if (!strcmp(a, "--n-ff"))
			F = atol(v);
		else if (!strcmp(a, "--n-head"))
			H = atol(v);
		else if (!strcmp(a, "--n-head-kv"))
			K = atol(v);
		else if (!strcmp(a, "--head-dim"))
			D = atol(v);
		else if (!strcmp(a, "--n-rot"))
			R = atol(v);
		else if (!strcmp(a, "--seed"))
			seed = atol(v);
		else if (!strcmp(a, "--type")) {
			wtype = -1;
			for (uint32_t t = 0; t < ML_DTYPE_COUNT; t++)
				if (ml_dtype_get(t) && ml_dtype_get(t)->name &&
				    !strcmp(ml_dtype_get(t)->name, v))
					wtype = (int)t;
			if (wtype < 0) {
				fprintf(stderr, "qa-gen-model: unknown type %s\n", v);
				return 2;
			}
		} else {
			fprintf(stderr, "qa-gen-model: unknown option %s\n", a);
			return 2;
		}
	}
	if (!tmpl || !arch || !out || L <= 0 || E <= 0 || F <= 0 || H <= 0 || K <= 0 || D <= 0) {
		fprintf(stderr, "usage: see the comment at the top of tools/qa-gen-model.c\n");
		return 2;
	}
	if (R < 0)
		R = D;
	rng ^= (uint64_t)seed * 0x9E3779B97F4A7C15ull;
	kern_init();
	struct gguf_file *gf = NULL;
	if (gguf_open(&gf, tmpl) != 0) {
		fprintf(stderr, "qa-gen-model: %s: %s\n", tmpl, ml_last_error());
		return 1;
	}
	uint64_t n_vocab = 0;
	const struct gguf_value *toks = gguf_find(gf, "tokenizer.ggml.tokens");
	if (!toks || toks->type != GGUF_TYPE_ARRAY) {
		fprintf(stderr, "qa-gen-model: template has no tokenizer.ggml.tokens\n");
		return 1;
	}
	n_vocab = toks->arr.n;
	gguf_writer_init(&w);
	gguf_writer_add_str(w, "general.architecture", arch);
	gguf_writer_add_str(w, "general.name", "qa-gen-model");
	char k[128];
#define KEY(s) (snprintf(k, sizeof(k), "%s." s, arch), k)
	gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)L);
	gguf_writer_add_u32(w, KEY("context_length"), 512);
	gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)E);
	gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)F);
	gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)H);
	gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)K);
	gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)D);
	gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)D);
	gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)R);
	gguf_writer_add_f32(w, KEY("rope.freq_base"), 10000.0f);
	gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		if (!strncmp(kv->key.ptr, "tokenizer.", 10))
			gguf_writer_add_value(w, kv->key.ptr, &kv->value);
	}
	const bool qwen2 = !strcmp(arch, "qwen2"), qwen3 = !strcmp(arch, "qwen3");
	add("token_embd.weight", E, (int64_t)n_vocab, 0.02f, 0);
	add("output_norm.weight", E, 1, 0.1f, 1);
	if (!tied)
		add("output.weight", E, (int64_t)n_vocab, 0.1f, 0);
	for (long l = 0; l < L; l++) {
		char n[96];
#define T(s) (snprintf(n, sizeof(n), "blk.%ld." s, l), n)
		add(T("attn_norm.weight"), E, 1, 0.1f, 1);
		add(T("attn_q.weight"), E, H * D, 0.05f, 0);
		add(T("attn_k.weight"), E, K * D, 0.05f, 0);
		add(T("attn_v.weight"), E, K * D, 0.05f, 0);
		if (qwen2) {
			add(T("attn_q.bias"), H * D, 1, 0.1f, 0);
			add(T("attn_k.bias"), K * D, 1, 0.1f, 0);
			add(T("attn_v.bias"), K * D, 1, 0.1f, 0);
		}
		if (qwen3) {
			add(T("attn_q_norm.weight"), D, 1, 0.1f, 1);
			add(T("attn_k_norm.weight"), D, 1, 0.1f, 1);
		}
		add(T("attn_output.weight"), H * D, E, 0.05f, 0);
		add(T("ffn_norm.weight"), E, 1, 0.1f, 1);
		add(T("ffn_gate.weight"), E, F, 0.05f, 0);
		add(T("ffn_up.weight"), E, F, 0.05f, 0);
		add(T("ffn_down.weight"), F, E, 0.03f, 0);
	}
	if (gguf_writer_write(w, out) != 0) {
		fprintf(stderr, "qa-gen-model: %s: %s\n", out, ml_last_error());
		return 1;
	}
	for (int i = 0; i < n_bufs; i++)
		free(bufs[i]);
	gguf_writer_free(w);
	gguf_close(gf);
	return 0;
}
