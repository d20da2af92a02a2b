/* qa-logits: mesh-llm's counterpart of bench/llamacpp/ref.mjs for QA: runs
 * refdata's three id prompts (or --ids) through the model with an F32 KV
 * cache, the whole prompt in one batch with logits for the last position,
 * then greedy decoding one token per call, and prints one JSON object with
 * refdata's field names (prompts[].name, ids, top10_last, greedy_ids,
 * greedy_top2_margin) so bench/llamacpp/cmp_ref.mjs can compare the two.
 *
 *   qa-logits --model FILE [--ids 1,2,3] [-n 32] [-t THREADS] [--kv f16] [--one-by-one]
 */
#include "base/ml_err.h"
#include "base/ml_pool.h"
#include "gguf/gguf.h"
#include "kernels/kern.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool one_by_one; /* --one-by-one: the prompt one token per call */

static void top2(const float *l, int n, int *best, float *margin)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (l[i] > l[b])
			b = i;
	float s = -1e30f;
	for (int i = 0; i < n; i++)
		if (i != b && l[i] > s)
			s = l[i];
	*best = b;
	*margin = l[b] - s;
}

static int run(struct model *m, struct model_ctx *ctx, const char *name, const int32_t *ids,
               int n_ids, int n_gen, bool first)
{
	const struct model_hparams *hp = model_hparams(m);
	const int nv = hp->n_vocab;
	float *lg = malloc((size_t)nv * sizeof(float));
	int32_t *pos = malloc((size_t)n_ids * sizeof(int32_t)),
	        *seq = calloc((size_t)n_ids, sizeof(int32_t));
	for (int i = 0; i < n_ids; i++)
		pos[i] = i;
	model_kv_truncate(ctx, 0, 0);
	for (int i0 = 0; i0 < n_ids; i0 += one_by_one ? 1 : n_ids) {
		struct model_batch b = {.n_tokens = one_by_one ? 1 : n_ids,
		                        .tokens = ids + i0,
		                        .pos = pos + i0,
		                        .seq = seq,
		                        .logits = NULL};
		if (model_forward(ctx, &b, lg) != 0) {
			fprintf(stderr, "qa-logits: forward: %s\n", ml_last_error());
			return 1;
		}
	}
	printf("%s{\"name\":\"%s\",\"ids\":[", first ? "" : ",", name);
	for (int i = 0; i < n_ids; i++)
		printf("%s%d", i ? "," : "", ids[i]);
	printf("],\"top10_last\":[");
	char *used = calloc((size_t)nv, 1);
	for (int k = 0; k < 10 && k < nv; k++) {
		int b2 = -1;
		for (int i = 0; i < nv; i++)
			if (!used[i] && (b2 < 0 || lg[i] > lg[b2]))
				b2 = i;
		used[b2] = 1;
		printf("%s[%d,%.9g]", k ? "," : "", b2, (double)lg[b2]);
	}
	free(used);
	printf("],\"greedy_ids\":[");
	float *mg = malloc((size_t)(n_gen > 0 ? n_gen : 1) * sizeof(float));
	for (int s = 0; s < n_gen; s++) {
		int t;
		top2(lg, nv, &t, &mg[s]);
		printf("%s%d", s ? "," : "", t);
		if (s + 1 == n_gen)
			break;
		int32_t tok = t, p = n_ids + s, s0 = 0;
		struct model_batch b1 = {
		    .n_tokens = 1, .tokens = &tok, .pos = &p, .seq = &s0, .logits = NULL};
		if (model_forward(ctx, &b1, lg) != 0) {
			fprintf(stderr, "qa-logits: forward: %s\n", ml_last_error());
			return 1;
		}
	}
	printf("],\"greedy_top2_margin\":[");
	for (int s = 0; s < n_gen; s++)
		printf("%s%.6g", s ? "," : "", (double)mg[s]);
	printf("]}");
	free(mg);
	free(lg);
	free(pos);
	free(seq);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *ids_s = NULL;
	int n_gen = 32, threads = 1;
	bool kv16 = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--model") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(argv[i], "--ids") && i + 1 < argc)
			ids_s = argv[++i];
		else if (!strcmp(argv[i], "-n") && i + 1 < argc)
			n_gen = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-t") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--one-by-one"))
			one_by_one = true;
		else if (!strcmp(argv[i], "--kv") && i + 1 < argc)
			kv16 = !strcmp(argv[++i], "f16");
		else {
			fprintf(stderr, "usage: qa-logits --model FILE [--ids 1,2,3] [-n 32] [-t "
			                "T] [--kv f32|f16]\n");
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "qa-logits: --model is required\n");
		return 2;
	}
	kern_init();
	struct model *m = NULL;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	if (model_load(&m, &mp) != 0) {
		fprintf(stderr, "qa-logits: %s\n", ml_last_error());
		return 1;
	}
	struct ml_pool *pool = NULL;
	if (threads > 1 && ml_pool_init(&pool, threads) != 0)
		return 1;
	struct model_ctx *ctx = NULL;
	struct model_ctx_params cp = model_ctx_default_params();
	cp.n_ctx = 512;
	cp.n_batch = 512;
	cp.kv_type = kv16 ? MODEL_KV_F16 : MODEL_KV_F32;
	if (model_ctx_init_params(&ctx, m, pool, &cp) != 0) {
		fprintf(stderr, "qa-logits: ctx: %s\n", ml_last_error());
		return 1;
	}
	const struct model_hparams *hp = model_hparams(m);
	printf("{\"model_file\":\"%s\",\"prompts\":[", path);
	int rc = 0;
	if (ids_s) {
		int32_t ids[512];
		int n = 0;
		for (char *p = (char *)ids_s; *p && n < 512;) {
			ids[n++] = (int32_t)strtol(p, &p, 10);
			while (*p == ',' || *p == ' ')
				p++;
		}
		rc = run(m, ctx, "custom", ids, n, n_gen, true);
	} else {
		uint32_t bos = 1;
		if (gguf_get_u32(model_gguf(m), "tokenizer.ggml.bos_token_id", &bos) != 0)
			bos = 1;
		int32_t five[5] = {1, 100, 200, 300, 50}, sf[64], b1[1] = {(int32_t)bos};
		sf[0] = (int32_t)bos;
		for (int i = 1; i < 64; i++)
			sf[i] = 3 + (i * 97 + 13) % 447;
		rc = run(m, ctx, "five_ids", five, 5, n_gen, true) ||
		     run(m, ctx, "sixty_four_ids", sf, 64, n_gen, false) ||
		     run(m, ctx, "bos_only", b1, 1, n_gen, false);
	}
	(void)hp;
	printf("]}\n");
	model_ctx_free(ctx);
	model_free(m);
	return rc;
}
