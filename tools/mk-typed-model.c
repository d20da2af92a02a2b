/* mk-typed-model: rewrites a GGUF model with every 2-D tensor converted to
 * one weight type (QA tool: makes files of the types llama.cpp's usual
 * mixtures do not produce alone, e.g. Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, pure
 * Q4_K/Q5_K). 1-D tensors (norms, biases) stay as they are. A 2-D tensor
 * whose row length is not a multiple of the type's block size keeps its
 * type unless --fallback TYPE names one to use instead (llama.cpp's
 * quantizer falls back the same way). Metadata is copied unchanged.
 *
 *   mk-typed-model IN.gguf OUT.gguf TYPE [--fallback TYPE] [--skip NAME]...
 *                  [--drop NAME]... [--set-f32|--set-u32|--set-str KEY=V]...
 *                  [--rope-freqs N] [--alignment A] [--version 2|3]
 *
 * TYPE "keep" leaves every tensor's type alone. --skip keeps tensors whose
 * name contains NAME in their type; --drop leaves out the tensor NAME (e.g.
 * output.weight: a tied output); --set-f32/--set-u32/--set-str add or replace a
 * metadata key; --rope-freqs N adds an F32 rope_freqs.weight of N values
 * (Llama-3-style per-dimension frequency factors, 1 + i/N).
 *
 * Quantization uses kern_type_traits(t)->from_f32 (ggml's reference
 * quantizers, no imatrix), i.e. what llama-quantize writes for a pure file. */
#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "kernels/kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int type_by_name(const char *s)
{
	for (uint32_t t = 0; t < ML_DTYPE_COUNT; t++) {
		const struct ml_dtype_info *d = ml_dtype_get(t);
		if (d && d->name && strcmp(d->name, s) == 0)
			return (int)t;
	}
	return -1;
}

struct conv {
	const struct gguf_tensor *src;
	uint32_t type;
	void *data;
};

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: mk-typed-model IN.gguf OUT.gguf TYPE [--fallback TYPE] "
		                "[--skip NAME]...\n");
		return 2;
	}
	const char *in = argv[1], *out = argv[2];
	int type = strcmp(argv[3], "keep") == 0 ? -2 : type_by_name(argv[3]), fb = -1;
	const char *skip[64], *drop[64], *setk[64];
	int n_skip = 0, n_drop = 0, n_set = 0, rope_n = 0, align = 0, version = 0;
	char sett[64];
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--fallback") && i + 1 < argc)
			fb = type_by_name(argv[++i]);
		else if (!strcmp(argv[i], "--skip") && i + 1 < argc && n_skip < 64)
			skip[n_skip++] = argv[++i];
		else if (!strcmp(argv[i], "--drop") && i + 1 < argc && n_drop < 64)
			drop[n_drop++] = argv[++i];
		else if ((!strcmp(argv[i], "--set-f32") || !strcmp(argv[i], "--set-u32") ||
		          !strcmp(argv[i], "--set-str")) &&
		         i + 1 < argc && n_set < 64 && strchr(argv[i + 1], '='))
			sett[n_set] = argv[i][6], setk[n_set++] = argv[++i];
		else if (!strcmp(argv[i], "--alignment") && i + 1 < argc)
			align = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--version") && i + 1 < argc)
			version = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rope-freqs") && i + 1 < argc)
			rope_n = atoi(argv[++i]);
		else {
			fprintf(stderr, "mk-typed-model: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	kern_init();
	if (type == -1 || (type >= 0 && (!kern_type_traits((uint32_t)type) ||
	                                 !kern_type_traits((uint32_t)type)->from_f32))) {
		fprintf(stderr, "mk-typed-model: no quantizer for type '%s'\n", argv[3]);
		return 2;
	}
	struct gguf_file *gf = NULL;
	if (gguf_open(&gf, in) != 0 || gguf_map(gf, NULL, NULL) != 0) {
		fprintf(stderr, "mk-typed-model: %s: %s\n", in, ml_last_error());
		return 1;
	}
	struct gguf_writer *w = NULL;
	if (gguf_writer_init(&w) != 0)
		return 1;
	if ((align && gguf_writer_set_alignment(w, (uint32_t)align) != 0) ||
	    (version && gguf_writer_set_version(w, (uint32_t)version) != 0)) {
		fprintf(stderr, "mk-typed-model: %s\n", ml_last_error());
		return 1;
	}
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		bool replaced = false;
		for (int k = 0; k < n_set; k++)
			replaced |= strncmp(setk[k], kv->key.ptr, strlen(kv->key.ptr)) == 0 &&
			            setk[k][strlen(kv->key.ptr)] == '=';
		if (!strcmp(kv->key.ptr, "general.alignment") || replaced)
			continue;
		if (gguf_writer_add_value(w, kv->key.ptr, &kv->value) != 0) {
			fprintf(stderr, "mk-typed-model: key %s: %s\n", kv->key.ptr,
			        ml_last_error());
			return 1;
		}
	}
	for (int k = 0; k < n_set; k++) {
		char key[256];
		const char *eq = strchr(setk[k], '=');
		snprintf(key, sizeof(key), "%.*s", (int)(eq - setk[k]), setk[k]);
		int rc = sett[k] == 'u'
		             ? gguf_writer_add_u32(w, key, (uint32_t)strtoul(eq + 1, NULL, 0))
		         : sett[k] == 'f' ? gguf_writer_add_f32(w, key, strtof(eq + 1, NULL))
		                          : gguf_writer_add_str(w, key, eq + 1);
		if (rc != 0) {
			fprintf(stderr, "mk-typed-model: key %s: %s\n", key, ml_last_error());
			return 1;
		}
	}
	float *rf = NULL;
	if (rope_n > 0) {
		rf = malloc((size_t)rope_n * sizeof(float));
		for (int k = 0; k < rope_n; k++)
			rf[k] = 1.0f + (float)k / (float)rope_n;
		const uint64_t ne[1] = {(uint64_t)rope_n};
		if (gguf_writer_add_tensor(w, "rope_freqs.weight", ML_DTYPE_F32, 1, ne, rf) != 0)
			return 1;
	}
	const uint64_t nt = gguf_n_tensors(gf);
	struct conv *cv = calloc(nt, sizeof(*cv));
	for (uint64_t i = 0; i < nt; i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		uint32_t tt = t->type;
		bool skipped = type < 0, dropped = false;
		for (int k = 0; k < n_drop; k++)
			dropped |= strcmp(t->name, drop[k]) == 0;
		cv[i].src = t;
		cv[i].data = (void *)t->data;
		if (dropped)
			continue;
		for (int k = 0; k < n_skip; k++)
			skipped |= strstr(t->name, skip[k]) != NULL;
		if (t->n_dims == 2 && !skipped) {
			if (t->ne[0] % ml_dtype_get((uint32_t)type)->block_size == 0)
				tt = (uint32_t)type;
			else if (fb >= 0 && t->ne[0] % ml_dtype_get((uint32_t)fb)->block_size == 0)
				tt = (uint32_t)fb;
		}
		cv[i].src = t;
		cv[i].type = tt;
		if (tt == t->type) {
			cv[i].data = (void *)t->data;
		} else {
			const struct kern_type_traits *st = kern_type_traits(t->type);
			const struct kern_type_traits *dt = kern_type_traits(tt);
			const int64_t ne0 = (int64_t)t->ne[0],
			              nr = (int64_t)(t->n_elements / t->ne[0]);
			float *row = malloc((size_t)ne0 * sizeof(float));
			const size_t srs = ml_dtype_row_size(t->type, ne0),
			             drs = ml_dtype_row_size(tt, ne0);
			cv[i].data = malloc(drs * (size_t)nr);
			for (int64_t r = 0; r < nr; r++) {
				st->to_f32((const char *)t->data + (size_t)r * srs, row, ne0);
				dt->from_f32(row, (char *)cv[i].data + (size_t)r * drs, ne0);
			}
			free(row);
		}
		if (gguf_writer_add_tensor(w, t->name, tt, t->n_dims, t->ne, cv[i].data) != 0) {
			fprintf(stderr, "mk-typed-model: tensor %s: %s\n", t->name,
			        ml_last_error());
			return 1;
		}
	}
	if (gguf_writer_write(w, out) != 0) {
		fprintf(stderr, "mk-typed-model: %s: %s\n", out, ml_last_error());
		return 1;
	}
	for (uint64_t i = 0; i < nt; i++)
		if (cv[i].data != cv[i].src->data)
			free(cv[i].data);
	free(cv);
	free(rf);
	gguf_writer_free(w);
	gguf_close(gf);
	return 0;
}
