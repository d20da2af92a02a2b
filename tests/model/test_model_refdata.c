/* The forward pass against llama.cpp's reference outputs
 * (every JSON file in ../shared/refdata, see its README), plus pipeline splits,
 * multi-sequence batches, refusal of unsupported/malformed models and a
 * resident-memory report.
 *
 * One test per JSON file found in the refdata directory, so files added
 * later are covered without touching this test. Per file:
 *   - every prompt (prompts[].ids, text_prompts[].ids) in one batch:
 *     top10_last and last_logits within the logit tolerance of the file's
 *     weight types (below);
 *   - greedy decoding, ids identical step by step until the first step
 *     whose reference top-2 margin is below the tolerance (a near-tie that
 *     rounding may flip), our logit of the chosen token within tolerance;
 *   - for prompts with hidden_states: embd (exact), l_out-i through the
 *     layer-range API ([0, i+1) as a first stage), result_norm, and the
 *     per-position argmax logits from an all-positions batch.
 *
 * Logit tolerances (absolute) per weight type, from refdata/README.md:
 *   F32   5e-4  only summation order differs; llama.cpp itself moves by 7e-7
 *               between kernel paths; measured here <= 1.4e-5 with scalar
 *               kernels, the rest is headroom for SIMD summation orders.
 *   F16   2e-2  activations rounded to F16 as llama.cpp does; its own
 *               F16-KV/flash-attention variant moves logits by up to 6e-3.
 *   BF16  5e-2  same, BF16 rounding is coarser (variants move by 3e-2).
 *   Q8_0, Q4_0, Q4_K, Q5_K, Q6_K  0.2  one flipped 8-bit activation moves
 *               logits by ~0.1; the README expects 0.1-0.2 unless kernels
 *               reproduce llama.cpp's arithmetic bit for bit.
 * A file's tolerance is the loosest of its 2-D weight types. Hidden states
 * (values of order 1) use the same tolerance. The measured maxima are
 * printed per file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "base/ml_pool.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "kernels/kern.h"
#include "model/model.h"

#define N_CTX 512
#define MAX_FILES 128

static struct ml_pool *pool;
static char refdata_dir[600];
static char shared_dir[512];

/* ---- helpers ------------------------------------------------------------ */

static double type_tol(const char *t)
{
	if (strcmp(t, "F32") == 0)
		return 5e-4;
	if (strcmp(t, "F16") == 0)
		return 2e-2;
	if (strcmp(t, "BF16") == 0)
		return 5e-2;
	return 0.2; /* Q8_0, Q4_0 and the K-quants */
}

/* Loosest tolerance over the file's tensor types. */
static double file_tol(json_t *info, char *types, size_t cap)
{
	json_t *counts = json_object_get(info, "tensor_type_counts");
	double tol = type_tol("F32");
	const char *key;
	json_t *val;
	types[0] = '\0';
	json_object_foreach(counts, key, val)
	{
		(void)val;
		if (type_tol(key) > tol)
			tol = type_tol(key);
		if (types[0])
			strncat(types, "+", cap - strlen(types) - 1);
		strncat(types, key, cap - strlen(types) - 1);
	}
	return tol;
}

static int find_model(const char *name, char *path, size_t cap)
{
	struct stat st;
	snprintf(path, cap, "%s/models/%s", refdata_dir, name);
	if (stat(path, &st) == 0)
		return 0;
	snprintf(path, cap, "%s/models/%s", shared_dir, name);
	return stat(path, &st) == 0 ? 0 : -1;
}

static int32_t *json_ids(json_t *arr, int *n)
{
	*n = (int)json_array_size(arr);
	int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(int32_t));
	for (int i = 0; i < *n; i++)
		ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
	return ids;
}

/* JSON floats were printed from float32 with 9 digits: round back to float
 * so exact values compare exactly. */
static double jnum(json_t *j)
{
	return (double)(float)json_number_value(j);
}

static int argmax(const float *x, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

/* Runs |n| ids of sequence |seq| from position |pos0| in one batch; logits
 * for every entry (all) or the last only, written to |out|. */
static int run_ids(struct model_ctx *c, const int32_t *ids, int n, int seq, int pos0, bool all, float *out)
{
	int32_t *pos = malloc((size_t)n * sizeof(int32_t));
	int32_t *sq = malloc((size_t)n * sizeof(int32_t));
	int8_t *lg = malloc((size_t)n);
	for (int i = 0; i < n; i++) {
		pos[i] = pos0 + i;
		sq[i] = seq;
		lg[i] = all || i == n - 1;
	}
	struct model_batch b = {.n_tokens = n, .tokens = ids, .pos = pos, .seq = sq, .logits = lg};
	int rc = model_forward(c, &b, out);
	free(pos);
	free(sq);
	free(lg);
	return rc;
}

struct stats {
	double top10, last, greedy_logit, hidden, embd, result_norm, per_pos;
	int greedy_cmp, greedy_total, failures;
	char notes[2048];
};

static void note(struct stats *s, const char *fmt, ...)
{
	va_list ap;
	size_t len = strlen(s->notes);
	if (len + 2 >= sizeof(s->notes))
		return;
	va_start(ap, fmt);
	vsnprintf(s->notes + len, sizeof(s->notes) - len, fmt, ap);
	va_end(ap);
	len = strlen(s->notes);
	if (len + 1 < sizeof(s->notes))
		strcat(s->notes, "\n");
}

static void upd(double *max, double v)
{
	if (v > *max || isnan(v))
		*max = isnan(v) ? INFINITY : v;
}

/* ---- one prompt --------------------------------------------------------- */

static void check_prompt(struct model *m, const char *fname, json_t *p, json_t *f32ref, double tol,
			 struct stats *st)
{
	const struct model_hparams *hp = model_hparams(m);
	const int nv = hp->n_vocab;
	const char *name = json_string_value(json_object_get(p, "name"));
	if (name == NULL)
		name = json_string_value(json_object_get(p, "text"));
	int n;
	int32_t *ids = json_ids(json_object_get(p, "ids"), &n);
	struct model_ctx *c;
	float *logits = malloc((size_t)nv * sizeof(float));

	assert_int_equal(model_ctx_init(&c, m, pool, 1, N_CTX, N_CTX), 0);
	int rc = run_ids(c, ids, n, 0, 0, false, logits);
	if (rc != 0)
		fail_msg("%s %s: model_forward: %s", fname, name, ml_last_error());

	/* top10_last: our logit of each listed id */
	json_t *top = json_object_get(p, "top10_last");
	double d_top = 0;
	for (size_t i = 0; i < json_array_size(top); i++) {
		json_t *e = json_array_get(top, i);
		int id = (int)json_integer_value(json_array_get(e, 0));
		upd(&d_top, fabs(logits[id] - jnum(json_array_get(e, 1))));
	}
	upd(&st->top10, d_top);
	if (d_top > tol) {
		st->failures++;
		note(st, "  %s: top10_last differs by %.4g > %.4g", name, d_top, tol);
	}
	json_t *last = json_object_get(p, "last_logits");
	double st_last = 0;
	if (last && json_array_size(last) == (size_t)nv) {
		double d = 0;
		for (int i = 0; i < nv; i++)
			upd(&d, fabs(logits[i] - jnum(json_array_get(last, (size_t)i))));
		upd(&st->last, d);
		st_last = d;
		if (d > tol) {
			st->failures++;
			note(st, "  %s: last_logits differ by %.4g > %.4g", name, d, tol);
		}
	}

	/* Informational: distance to llama.cpp run on F32-dequantized weights. */
	double d_f32 = -1;
	for (size_t i = 0; f32ref && i < json_array_size(f32ref); i++) {
		json_t *q = json_array_get(f32ref, i);
		json_t *ll = json_object_get(q, "last_logits");
		if (strcmp(json_string_value(json_object_get(q, "name")), name) != 0 || ll == NULL ||
		    json_array_size(ll) != (size_t)nv)
			continue;
		d_f32 = 0;
		for (int k = 0; k < nv; k++)
			upd(&d_f32, fabs(logits[k] - jnum(json_array_get(ll, (size_t)k))));
	}
	if (d_f32 >= 0)
		note(st, "  %-16s (info) last_logits vs f32_activation_reference: %.3g", name, d_f32);

	/* Greedy decoding, fed the reference ids (teacher forcing). Asserted up
	 * to the first near-tie; |agree| counts the identical prefix anyway. */
	int ng;
	int32_t *gids = json_ids(json_object_get(p, "greedy_ids"), &ng);
	json_t *margins = json_object_get(p, "greedy_top2_margin");
	json_t *chosen = json_object_get(p, "greedy_logit_of_chosen");
	int compared = 0, agree = 0;
	bool checking = true, agreeing = true;
	for (int s = 0; s < ng; s++) {
		int ours = argmax(logits, nv);
		if (checking && jnum(json_array_get(margins, (size_t)s)) < tol)
			checking = false; /* near-tie: rounding may pick either */
		agreeing = agreeing && ours == gids[s];
		agree += agreeing;
		if (checking) {
			double d = fabs(logits[gids[s]] - jnum(json_array_get(chosen, (size_t)s)));
			upd(&st->greedy_logit, d);
			if (ours != gids[s] || d > tol) {
				st->failures++;
				note(st, "  %s: greedy step %d: got %d, reference %d (margin %.4g, logit diff %.4g)", name, s,
				     ours, gids[s], jnum(json_array_get(margins, (size_t)s)), d);
				checking = false;
			} else {
				compared++;
			}
		}
		if (s + 1 < ng && (rc = run_ids(c, &gids[s], 1, 0, n + s, false, logits)) != 0)
			fail_msg("%s %s: decode step %d: %s", fname, name, s, ml_last_error());
	}
	st->greedy_cmp += compared;
	st->greedy_total += ng;
	note(st, "  %-16s %2d ids: top10 %.3g, last_logits %s%.3g; greedy: %d/%d asserted (to the first margin < tol), identical prefix %d/%d",
	     name, n, d_top, last ? "" : "n/a ", last ? st_last : 0.0, compared, ng, agree, ng);
	model_ctx_free(c);
	free(gids);
	free(ids);
	free(logits);
}

static double max_diff_rows(const float *x, json_t *rows, int n, int dim)
{
	double d = 0;
	for (int i = 0; i < n; i++) {
		json_t *r = json_array_get(rows, (size_t)i);
		for (int j = 0; j < dim; j++)
			upd(&d, fabs(x[(size_t)i * dim + j] - jnum(json_array_get(r, (size_t)j))));
	}
	return d;
}

/* hidden_states and per_position_argmax of a prompt that has them. */
static void check_hidden(struct model *full, const char *path, const char *fname, json_t *p, double tol,
			 struct stats *st)
{
	const struct model_hparams *hp = model_hparams(full);
	json_t *hs = json_object_get(p, "hidden_states");
	int n;
	int32_t *ids = json_ids(json_object_get(p, "ids"), &n);
	const int E = hp->n_embd, nv = hp->n_vocab;
	float *buf = malloc((size_t)n * (size_t)(nv > E ? nv : E) * sizeof(float));
	struct model_ctx *c;

	/* embd: dequantized rows of token_embd (exact) */
	const struct gguf_tensor *te = gguf_find_tensor(model_gguf(full), "token_embd.weight");
	assert_non_null(te);
	assert_non_null(te->data);
	const size_t row = ml_dtype_row_size(te->type, E);
	for (int i = 0; i < n; i++)
		kern_type_traits(te->type)->to_f32((const char *)te->data + (size_t)ids[i] * row, buf + i * E, E);
	double d = max_diff_rows(buf, json_object_get(hs, "embd"), n, E);
	upd(&st->embd, d);
	if (d > 0) {
		st->failures++;
		note(st, "  embd differs by %.4g (should be exact)", d);
	}

	/* l_out-i for i < n_layer - 1 through first stages [0, i+1) */
	for (int il = 0; il + 1 < hp->n_layer; il++) {
		struct model *m;
		struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = il + 1};
		assert_int_equal(model_load(&m, &mp), 0);
		assert_false(model_is_last(m));
		assert_int_equal(model_ctx_init(&c, m, pool, 1, N_CTX, N_CTX), 0);
		assert_int_equal(run_ids(c, ids, n, 0, 0, true, buf), 0);
		char key[32];
		snprintf(key, sizeof(key), "l_out-%d", il);
		d = max_diff_rows(buf, json_object_get(hs, key), n, E);
		note(st, "  (hidden) %s max diff %.3g", key, d);
		upd(&st->hidden, d);
		if (d > tol) {
			st->failures++;
			note(st, "  %s differs by %.4g > %.4g", key, d, tol);
		}
		model_ctx_free(c);
		model_free(m);
	}

	/* the full model with logits everywhere: last l_out, result_norm, per-position argmax */
	assert_int_equal(model_ctx_init(&c, full, pool, 1, N_CTX, N_CTX), 0);
	assert_int_equal(run_ids(c, ids, n, 0, 0, true, buf), 0);
	char key[32];
	snprintf(key, sizeof(key), "l_out-%d", hp->n_layer - 1);
	d = max_diff_rows(model_ctx_hidden(c), json_object_get(hs, key), n, E);
	upd(&st->hidden, d);
	if (d > tol) {
		st->failures++;
		note(st, "  %s differs by %.4g > %.4g", key, d, tol);
	}
	d = max_diff_rows(model_ctx_result_norm(c), json_object_get(hs, "result_norm"), n, E);
	upd(&st->result_norm, d);
	if (d > tol) {
		st->failures++;
		note(st, "  result_norm differs by %.4g > %.4g", d, tol);
	}
	json_t *ppa = json_object_get(p, "per_position_argmax");
	for (int i = 0; i < n && i < (int)json_array_size(ppa); i++) {
		json_t *e = json_array_get(ppa, (size_t)i);
		int id = (int)json_integer_value(json_array_get(e, 0));
		const float *lg = buf + (size_t)i * nv;
		d = fabs(lg[id] - jnum(json_array_get(e, 1)));
		upd(&st->per_pos, d);
		if (d > tol || (jnum(json_array_get(e, 2)) >= tol && argmax(lg, nv) != id)) {
			st->failures++;
			note(st, "  per_position_argmax %d: id %d/%d logit diff %.4g", i, argmax(lg, nv), id, d);
		}
	}
	model_ctx_free(c);
	free(buf);
	free(ids);
	(void)fname;
}

/* ---- one reference file -------------------------------------------------- */

static void test_refdata_file(void **state)
{
	const char *jpath = *state;
	json_error_t jerr;
	json_t *root = json_load_file(jpath, 0, &jerr);
	if (root == NULL)
		fail_msg("%s: %s (line %d)", jpath, jerr.text, jerr.line);
	const char *fname = json_string_value(json_object_get(root, "model_file"));
	assert_non_null(fname);
	char path[1024];
	if (find_model(fname, path, sizeof(path)) != 0)
		fail_msg("%s: model file %s not found under %s/models or %s/models", jpath, fname, refdata_dir,
			 shared_dir);

	char types[128];
	json_t *info = json_object_get(root, "model_info");
	const double tol = file_tol(info, types, sizeof(types));
	struct model *m;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	if (model_load(&m, &mp) != 0)
		fail_msg("%s: %s", path, ml_last_error());
	const struct model_hparams *hp = model_hparams(m);
	assert_int_equal(hp->n_vocab, (int)json_integer_value(json_object_get(info, "n_vocab")));
	assert_string_equal(hp->arch_name, json_string_value(json_object_get(info, "architecture")));

	struct stats st;
	memset(&st, 0, sizeof(st));
	json_t *arrs[2] = {json_object_get(root, "prompts"), json_object_get(root, "text_prompts")};
	for (int a = 0; a < 2; a++) {
		for (size_t i = 0; i < json_array_size(arrs[a]); i++) {
			json_t *p = json_array_get(arrs[a], i);
			check_prompt(m, fname, p,
				     json_object_get(json_object_get(root, "f32_activation_reference"), "prompts"), tol,
				     &st);
			if (json_object_get(p, "hidden_states"))
				check_hidden(m, path, fname, p, tol, &st);
		}
	}
	printf("refdata %-24s %-14s tol %-6g | top10 %.3g last %.3g chosen %.3g | hidden %.3g embd %.3g "
	       "result_norm %.3g per_pos %.3g | greedy %d/%d compared | %s\n",
	       fname, types, tol, st.top10, st.last, st.greedy_logit, st.hidden, st.embd, st.result_norm,
	       st.per_pos, st.greedy_cmp, st.greedy_total, st.failures ? "FAIL" : "ok");
	fputs(st.notes, stdout);
	fflush(stdout);
	model_free(m);
	int failures = st.failures;
	json_decref(root);
	if (failures)
		fail_msg("%s: %d mismatches (see above)", jpath, failures);
}

/* ---- pipeline and multi-sequence batches ---------------------------------- */

static void model_path(const char *name, char *path, size_t cap)
{
	if (find_model(name, path, cap) != 0)
		fail_msg("model %s not found", name);
}

static const int32_t pipe_ids[] = {1, 100, 200, 300, 50, 7, 99, 311, 42, 250, 17, 3, 400, 128, 64, 32};
#define PIPE_N (int)(sizeof(pipe_ids) / sizeof(pipe_ids[0]))

/* Logits of the last prompt position and of two decode steps from the full
 * model vs. the same through two stages [0, k) -> [k, n). */
static void pipeline_case(const char *name)
{
	char path[1024];
	model_path(name, path, sizeof(path));
	struct model *full;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	assert_int_equal(model_load(&full, &mp), 0);
	const int nv = model_hparams(full)->n_vocab, E = model_hparams(full)->n_embd;
	const int nl = model_hparams(full)->n_layer;
	float ref[3][512 + 32000];
	float *lg = malloc((size_t)nv * sizeof(float));
	float *hid = malloc((size_t)PIPE_N * E * sizeof(float));
	assert_true(nv <= 32000 + 512);
	struct model_ctx *c;
	assert_int_equal(model_ctx_init(&c, full, pool, 1, N_CTX, 64), 0);
	assert_int_equal(run_ids(c, pipe_ids, PIPE_N, 0, 0, false, ref[0]), 0);
	int32_t t1 = argmax(ref[0], nv);
	assert_int_equal(run_ids(c, &t1, 1, 0, PIPE_N, false, ref[1]), 0);
	int32_t t2 = argmax(ref[1], nv);
	assert_int_equal(run_ids(c, &t2, 1, 0, PIPE_N + 1, false, ref[2]), 0);
	model_ctx_free(c);

	for (int k = 1; k < nl; k++) {
		struct model *a, *b;
		struct model_params pa = {.path = path, .layer_begin = 0, .layer_end = k}, pb = {.path = path, .layer_begin = k, .layer_end = -1};
		assert_int_equal(model_load(&a, &pa), 0);
		assert_int_equal(model_load(&b, &pb), 0);
		assert_true(model_is_first(a) && !model_is_last(a));
		assert_true(!model_is_first(b) && model_is_last(b));
		assert_true(model_weight_bytes(a) + model_weight_bytes(b) >= model_weight_bytes(full));
		/* each stage mapped only its own tensors */
		char tn[64];
		snprintf(tn, sizeof(tn), "blk.%d.attn_q.weight", k);
		assert_null(gguf_find_tensor(model_gguf(a), tn)->data);
		assert_null(gguf_find_tensor(model_gguf(a), "output_norm.weight")->data);
		assert_non_null(gguf_find_tensor(model_gguf(b), tn)->data);
		snprintf(tn, sizeof(tn), "blk.%d.attn_q.weight", k - 1);
		assert_null(gguf_find_tensor(model_gguf(b), tn)->data);
		assert_non_null(gguf_find_tensor(model_gguf(a), tn)->data);
		if (!model_hparams(b)->tied_output)
			assert_null(gguf_find_tensor(model_gguf(b), "token_embd.weight")->data);
		struct model_ctx *ca, *cb;
		assert_int_equal(model_ctx_init(&ca, a, pool, 1, N_CTX, 64), 0);
		assert_int_equal(model_ctx_init(&cb, b, pool, 1, N_CTX, 64), 0);
		int32_t pos[PIPE_N], seq[PIPE_N];
		int8_t want[PIPE_N];
		for (int i = 0; i < PIPE_N; i++) {
			pos[i] = i;
			seq[i] = 0;
			want[i] = i == PIPE_N - 1;
		}
		double d = 0;
		for (int step = 0; step < 3; step++) {
			const int32_t *toks = step == 0 ? pipe_ids : step == 1 ? &t1 : &t2;
			const int nt = step == 0 ? PIPE_N : 1;
			int32_t p1 = PIPE_N + step - 1, s1 = 0;
			int8_t w1 = 1;
			struct model_batch ba = {.n_tokens = nt, .tokens = toks, .pos = step ? &p1 : pos, .seq = step ? &s1 : seq};
			assert_int_equal(model_forward(ca, &ba, hid), 0);
			struct model_batch bb = {.n_tokens = nt, .embd = hid, .pos = step ? &p1 : pos, .seq = step ? &s1 : seq,
						 .logits = step ? &w1 : want};
			assert_int_equal(model_forward(cb, &bb, lg), 0);
			for (int i = 0; i < nv; i++)
				upd(&d, fabs(lg[i] - ref[step][i]));
		}
		printf("pipeline %s: [0,%d) -> [%d,%d): max logit diff vs one stage %.3g\n", name, k, k, nl, d);
		assert_true(d <= 1e-5);
		model_ctx_free(ca);
		model_ctx_free(cb);
		model_free(a);
		model_free(b);
	}
	free(lg);
	free(hid);
	model_free(full);
}

static void test_model_pipeline(void **state)
{
	(void)state;
	pipeline_case("stories260K.gguf");
	pipeline_case("syn-qwen3-Q8_0.gguf"); /* tied output: the last stage maps token_embd */
	pipeline_case("syn-llama-Q4_K_M.gguf");
	pipeline_case("syn-qwen2-BF16.gguf");
}

/* Two sequences interleaved in one batch (prompt, then one decode step each
 * in a shared batch) give the same logits as each run alone. */
static void test_model_multi_seq(void **state)
{
	(void)state;
	const char *names[] = {"syn-qwen2-Q4_0.gguf", "syn-llama-F16.gguf"};
	for (size_t f = 0; f < 2; f++) {
		char path[1024];
		model_path(names[f], path, sizeof(path));
		struct model *m;
		struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
		assert_int_equal(model_load(&m, &mp), 0);
		const int nv = model_hparams(m)->n_vocab;
		const int32_t a[] = {1, 100, 200, 300, 50, 60, 70};
		const int32_t b[] = {9, 8, 7, 6};
		const int na = 7, nb = 4;
		float *ra = malloc(2 * (size_t)nv * sizeof(float)), *rb = malloc(2 * (size_t)nv * sizeof(float));
		float *both = malloc(2 * (size_t)nv * sizeof(float));
		struct model_ctx *c;
		/* alone: prompt then one step with token 5 */
		const int32_t next = 5;
		assert_int_equal(model_ctx_init(&c, m, pool, 2, N_CTX, 16), 0);
		assert_int_equal(run_ids(c, a, na, 0, 0, false, ra), 0);
		assert_int_equal(run_ids(c, &next, 1, 0, na, false, ra + nv), 0);
		model_ctx_free(c);
		assert_int_equal(model_ctx_init(&c, m, pool, 2, N_CTX, 16), 0);
		assert_int_equal(run_ids(c, b, nb, 1, 0, false, rb), 0);
		assert_int_equal(run_ids(c, &next, 1, 1, nb, false, rb + nv), 0);
		model_ctx_free(c);

		/* a's prompt in two chunks, the first asking for no logits at all */
		assert_int_equal(model_ctx_init(&c, m, pool, 2, N_CTX, 16), 0);
		{
			int32_t p3[4] = {0, 1, 2, 3}, s3[4] = {0, 0, 0, 0};
			int8_t none[4] = {0, 0, 0, 0};
			struct model_batch b1 = {.n_tokens = 4, .tokens = a, .pos = p3, .seq = s3, .logits = none};
			assert_int_equal(model_forward(c, &b1, both), 0);
			assert_int_equal(run_ids(c, a + 4, na - 4, 0, 4, false, both), 0);
			double dc = 0;
			for (int i = 0; i < nv; i++)
				upd(&dc, fabs(both[i] - ra[i]));
			printf("chunked prompt %s: max logit diff vs one batch %.3g\n", names[f], dc);
			assert_true(dc <= 1e-5);
		}
		model_ctx_free(c);

		/* together: entries interleaved a0 b0 a1 b1 ... */
		int32_t tok[16], pos[16], seq[16];
		int8_t lg[16];
		int n = 0, ia = 0, ib = 0;
		while (ia < na || ib < nb) {
			if (ia < na) {
				tok[n] = a[ia];
				pos[n] = ia;
				seq[n] = 0;
				lg[n++] = ++ia == na;
			}
			if (ib < nb) {
				tok[n] = b[ib];
				pos[n] = ib;
				seq[n] = 1;
				lg[n++] = ++ib == nb;
			}
		}
		assert_int_equal(model_ctx_init(&c, m, pool, 2, N_CTX, 16), 0);
		struct model_batch bt = {.n_tokens = n, .tokens = tok, .pos = pos, .seq = seq, .logits = lg};
		assert_int_equal(model_forward(c, &bt, both), 0);
		/* logits rows come in batch order: b's last entry (index 7) precedes a's (index 10) */
		double d = 0;
		for (int i = 0; i < nv; i++) {
			upd(&d, fabs(both[i] - rb[i]));
			upd(&d, fabs(both[nv + i] - ra[i]));
		}
		int32_t t2[2] = {next, next}, p2[2] = {na, nb}, s2[2] = {0, 1};
		int8_t l2[2] = {1, 1};
		struct model_batch bd = {.n_tokens = 2, .tokens = t2, .pos = p2, .seq = s2, .logits = l2};
		assert_int_equal(model_forward(c, &bd, both), 0);
		for (int i = 0; i < nv; i++) {
			upd(&d, fabs(both[i] - ra[nv + i]));
			upd(&d, fabs(both[nv + i] - rb[nv + i]));
		}
		printf("multi-sequence %s: max logit diff vs alone %.3g\n", names[f], d);
		assert_true(d <= 1e-5);

		/* bad batches are refused and leave the cache usable */
		int32_t badpos = 40, s0 = 0, tk = 3, badseq = 2, badtok = nv;
		struct model_batch bad = {.n_tokens = 1, .tokens = &tk, .pos = &badpos, .seq = &s0};
		assert_int_equal(model_forward(c, &bad, both), ML_ERR_INVALID); /* gap after position 7 */
		badpos = N_CTX;
		assert_int_equal(model_forward(c, &bad, both), ML_ERR_RANGE);
		badpos = na + 1;
		bad.seq = &badseq;
		assert_int_equal(model_forward(c, &bad, both), ML_ERR_INVALID);
		bad.seq = &s0;
		bad.tokens = &badtok;
		assert_int_equal(model_forward(c, &bad, both), ML_ERR_INVALID);
		bad.n_tokens = 17;
		assert_int_equal(model_forward(c, &bad, both), ML_ERR_RANGE);
		/* truncation: rerun a's decode step after dropping it */
		model_kv_truncate(c, 0, na);
		struct model_batch again = {.n_tokens = 1, .tokens = &next, .pos = &p2[0], .seq = &s0};
		assert_int_equal(model_forward(c, &again, both), 0);
		d = 0;
		for (int i = 0; i < nv; i++)
			upd(&d, fabs(both[i] - ra[nv + i]));
		assert_true(d <= 1e-5);
		model_ctx_free(c);
		free(ra);
		free(rb);
		free(both);
		model_free(m);
	}
}

/* ---- refusals ------------------------------------------------------------ */

enum edit {
	EDIT_ARCH,
	EDIT_DROP_TENSOR,
	EDIT_SHAPE,
	EDIT_TYPE,
	EDIT_EXPERTS,     /* adds llama.expert_count = 8 */
	EDIT_ROPE_FREQS2, /* adds rope_freqs.weight = 2 everywhere, zero attn_output biases */
	EDIT_LINEAR2,     /* adds linear rope scaling with factor 2 */
};

/* Copies stories260K.gguf to |out| with one edit. */
static void write_edited(const char *out, enum edit e)
{
	char path[1024];
	model_path("stories260K.gguf", path, sizeof(path));
	struct gguf_file *gf;
	struct gguf_writer *w;
	assert_int_equal(gguf_open(&gf, path), 0);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	assert_int_equal(gguf_writer_init(&w), 0);
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		if (e == EDIT_ARCH && strcmp(kv->key.ptr, "general.architecture") == 0)
			assert_int_equal(gguf_writer_add_str(w, kv->key.ptr, "mamba"), 0);
		else
			assert_int_equal(gguf_writer_add_value(w, kv->key.ptr, &kv->value), 0);
	}
	if (e == EDIT_EXPERTS)
		assert_int_equal(gguf_writer_add_u32(w, "llama.expert_count", 8), 0);
	if (e == EDIT_LINEAR2) {
		assert_int_equal(gguf_writer_add_str(w, "llama.rope.scaling.type", "linear"), 0);
		assert_int_equal(gguf_writer_add_f32(w, "llama.rope.scaling.factor", 2.0f), 0);
	}
	static const float twos[4] = {2, 2, 2, 2};
	static const float zero64[64];
	if (e == EDIT_ROPE_FREQS2) {
		const uint64_t ne4[1] = {4}, ne64[1] = {64};
		assert_int_equal(gguf_writer_add_tensor(w, "rope_freqs.weight", ML_DTYPE_F32, 1, ne4, twos), 0);
		for (int il = 0; il < 5; il++) {
			char bn[64];
			snprintf(bn, sizeof(bn), "blk.%d.attn_output.bias", il);
			assert_int_equal(gguf_writer_add_tensor(w, bn, ML_DTYPE_F32, 1, ne64, zero64), 0);
		}
	}
	static float zeros[64 * 172];
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		uint64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
		if (e == EDIT_DROP_TENSOR && strcmp(t->name, "blk.2.ffn_up.weight") == 0)
			continue;
		if (e == EDIT_SHAPE && strcmp(t->name, "blk.1.attn_k.weight") == 0) {
			ne[0] = t->ne[1]; /* [64, 32] -> [32, 64], same byte count */
			ne[1] = t->ne[0];
		}
		if (e == EDIT_TYPE && strcmp(t->name, "blk.3.attn_v.weight") == 0) {
			/* I32 is a known ggml type the engine cannot multiply with */
			assert_int_equal(gguf_writer_add_tensor(w, t->name, ML_DTYPE_I32, t->n_dims, ne, zeros), 0);
			continue;
		}
		assert_int_equal(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data), 0);
	}
	assert_int_equal(gguf_writer_write(w, out), 0);
	gguf_writer_free(w);
	gguf_close(gf);
}

static void expect_refusal(enum edit e, int code, const char *needle1, const char *needle2)
{
	char out[] = "/tmp/mesh-llm-test-model-XXXXXX.gguf";
	int fd = mkstemps(out, 5);
	assert_true(fd >= 0);
	close(fd);
	write_edited(out, e);
	struct model *m = NULL;
	struct model_params mp = {.path = out, .layer_begin = 0, .layer_end = -1};
	int rc = model_load(&m, &mp);
	printf("refused as expected: %s\n", ml_last_error());
	assert_int_equal(rc, code);
	assert_null(m);
	assert_non_null(strstr(ml_last_error(), needle1));
	assert_non_null(strstr(ml_last_error(), needle2));
	unlink(out);
}

static void last_logits_of(const char *path, float *lg)
{
	struct model *m;
	struct model_ctx *c;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	if (model_load(&m, &mp) != 0)
		fail_msg("%s: %s", path, ml_last_error());
	assert_int_equal(model_ctx_init(&c, m, pool, 1, 64, 64), 0);
	assert_int_equal(run_ids(c, pipe_ids, PIPE_N, 0, 0, false, lg), 0);
	model_ctx_free(c);
	model_free(m);
}

/* Optional tensors are used: rope_freqs.weight = 2 (Llama 3.1-style
 * frequency factors) gives exactly the logits of linear RoPE scaling by 2,
 * which differ from the original; zero attn_output biases change nothing. */
static void test_model_rope_freqs_and_scaling(void **state)
{
	(void)state;
	char orig[1024], a[] = "/tmp/mesh-llm-test-model-XXXXXX.gguf", b[] = "/tmp/mesh-llm-test-model-XXXXXX.gguf";
	model_path("stories260K.gguf", orig, sizeof(orig));
	close(mkstemps(a, 5));
	close(mkstemps(b, 5));
	write_edited(a, EDIT_ROPE_FREQS2);
	write_edited(b, EDIT_LINEAR2);
	static float l0[512], la[512], lb[512];
	last_logits_of(orig, l0);
	last_logits_of(a, la);
	last_logits_of(b, lb);
	double d_ab = 0, d_0a = 0;
	for (int i = 0; i < 512; i++) {
		upd(&d_ab, fabs(la[i] - lb[i]));
		upd(&d_0a, fabs(la[i] - l0[i]));
	}
	printf("rope_freqs=2 vs linear scaling 2: max diff %.3g; vs unscaled: %.3g\n", d_ab, d_0a);
	assert_true(d_ab == 0.0);
	assert_true(d_0a > 1e-3);
	unlink(a);
	unlink(b);
}

static void test_model_refusals(void **state)
{
	(void)state;
	expect_refusal(EDIT_EXPERTS, ML_ERR_UNSUPPORTED, "mixture-of-experts", "expert_count");
	expect_refusal(EDIT_ARCH, ML_ERR_UNSUPPORTED, "'mamba'", "llama, qwen2, qwen3");
	expect_refusal(EDIT_DROP_TENSOR, ML_ERR_FORMAT, "blk.2.ffn_up.weight", "missing");
	expect_refusal(EDIT_SHAPE, ML_ERR_FORMAT, "blk.1.attn_k.weight", "expected [64, 32]");
	expect_refusal(EDIT_TYPE, ML_ERR_UNSUPPORTED, "blk.3.attn_v.weight", "I32");

	/* a layer range outside the model */
	char path[1024];
	model_path("stories260K.gguf", path, sizeof(path));
	struct model *m = NULL;
	struct model_params mp = {.path = path, .layer_begin = 3, .layer_end = 9};
	assert_int_equal(model_load(&m, &mp), ML_ERR_INVALID);
	assert_null(m);
	mp.layer_begin = 2;
	mp.layer_end = 2;
	assert_int_equal(model_load(&m, &mp), ML_ERR_INVALID);
	model_free(NULL);
}


/* ---- weight types without reference files --------------------------------- */

/* Writes syn-llama-F32 with every 2-D weight quantized to |type| (with the
 * kernels' reference quantizer) to |qpath|, and the same weights dequantized
 * back to F32 to |dpath|: both files hold the same weight values. */
static void write_requantized(uint32_t type, const char *qpath, const char *dpath)
{
	char path[1024];
	model_path("syn-llama-F32.gguf", path, sizeof(path));
	struct gguf_file *gf;
	struct gguf_writer *wq, *wd;
	assert_int_equal(gguf_open(&gf, path), 0);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	assert_int_equal(gguf_writer_init(&wq), 0);
	assert_int_equal(gguf_writer_init(&wd), 0);
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		if (strcmp(kv->key.ptr, "general.file_type") == 0)
			continue;
		assert_int_equal(gguf_writer_add_value(wq, kv->key.ptr, &kv->value), 0);
		assert_int_equal(gguf_writer_add_value(wd, kv->key.ptr, &kv->value), 0);
	}
	const struct kern_type_traits *tr = kern_type_traits(type);
	const uint64_t nt = gguf_n_tensors(gf);
	void **bufs = calloc(2 * nt, sizeof(void *));
	for (uint64_t i = 0; i < nt; i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		if (t->n_dims != 2) {
			assert_int_equal(gguf_writer_add_tensor(wq, t->name, t->type, t->n_dims, t->ne, t->data), 0);
			assert_int_equal(gguf_writer_add_tensor(wd, t->name, t->type, t->n_dims, t->ne, t->data), 0);
			continue;
		}
		const int64_t cols = (int64_t)t->ne[0], rows = (int64_t)t->ne[1];
		const size_t qrow = ml_dtype_row_size(type, cols);
		char *q = malloc(qrow * (size_t)rows);
		float *d = malloc((size_t)cols * (size_t)rows * sizeof(float));
		for (int64_t r = 0; r < rows; r++) {
			tr->from_f32((const float *)t->data + r * cols, q + (size_t)r * qrow, cols);
			tr->to_f32(q + (size_t)r * qrow, d + r * cols, cols);
		}
		bufs[2 * i] = q;
		bufs[2 * i + 1] = d;
		assert_int_equal(gguf_writer_add_tensor(wq, t->name, type, 2, t->ne, q), 0);
		assert_int_equal(gguf_writer_add_tensor(wd, t->name, ML_DTYPE_F32, 2, t->ne, d), 0);
	}
	assert_int_equal(gguf_writer_write(wq, qpath), 0);
	assert_int_equal(gguf_writer_write(wd, dpath), 0);
	for (uint64_t i = 0; i < 2 * nt; i++)
		free(bufs[i]);
	free(bufs);
	gguf_writer_free(wq);
	gguf_writer_free(wd);
	gguf_close(gf);
}

/* Every weight type the kernels support runs through the model: a file in
 * that type against an F32 file of the same (dequantized) weights. They
 * differ only by the activation conversion (README: ~0.1-0.2 for 4-8 bit
 * types on these sensitive models); a wrong block layout or vec-dot type
 * gives differences of several units. */
static void test_model_all_weight_types(void **state)
{
	(void)state;
	int tested = 0;
	for (uint32_t type = 0; type < ML_DTYPE_COUNT; type++) {
		const struct kern_type_traits *tr = kern_type_traits(type);
		if (tr == NULL || !tr->supported || tr->from_f32 == NULL || type == ML_DTYPE_F32)
			continue;
		char qp[] = "/tmp/mesh-llm-test-model-XXXXXX.gguf", dp[] = "/tmp/mesh-llm-test-model-XXXXXX.gguf";
		close(mkstemps(qp, 5));
		close(mkstemps(dp, 5));
		write_requantized(type, qp, dp);
		static float lq[512], ld[512];
		last_logits_of(qp, lq);
		last_logits_of(dp, ld);
		double d = 0;
		for (int i = 0; i < 512; i++)
			upd(&d, fabs(lq[i] - ld[i]));
		printf("weight type %-5s: max logit diff vs the same weights in F32: %.3g (%d-token prompt)\n",
		       ml_dtype_name(type), d, PIPE_N);
		assert_true(d < 0.5);
		unlink(qp);
		unlink(dp);
		tested++;
	}
	assert_true(tested >= 8);
}

/* ---- memory ---------------------------------------------------------------- */

static long vm_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Resident memory after loading the largest refdata model and running a
 * prompt, against file size + KV cache size. */
static void test_model_memory(void **state)
{
	(void)state;
	DIR *d = opendir(refdata_dir);
	assert_non_null(d);
	struct dirent *de;
	char best[1024] = "";
	off_t best_size = 0;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l < 10 || strcmp(de->d_name + l - 10, ".gguf.json") != 0)
			continue;
		char name[512], path[1024];
		snprintf(name, sizeof(name), "%.*s", (int)(l - 5), de->d_name);
		struct stat st;
		if (find_model(name, path, sizeof(path)) == 0 && stat(path, &st) == 0 && st.st_size > best_size) {
			best_size = st.st_size;
			snprintf(best, sizeof(best), "%s", path);
		}
	}
	closedir(d);
	assert_true(best_size > 0);

	long before = vm_rss_kb();
	struct model *m;
	struct model_params mp = {.path = best, .layer_begin = 0, .layer_end = -1, .mmap = true};
	assert_int_equal(model_load(&m, &mp), 0);
	long loaded = vm_rss_kb();
	struct model_ctx *c;
	const struct model_hparams *hp = model_hparams(m);
	assert_int_equal(model_ctx_init(&c, m, pool, 1, N_CTX, N_CTX), 0);
	float *lg = malloc((size_t)hp->n_vocab * sizeof(float));
	int32_t ids[64];
	for (int i = 0; i < 64; i++)
		ids[i] = 3 + (i * 97 + 13) % 447;
	assert_int_equal(run_ids(c, ids, 64, 0, 0, false, lg), 0);
	long after = vm_rss_kb();
	const double kv_mb = 2.0 * hp->n_layer * N_CTX * hp->n_head_kv * hp->head_dim * 4 / 1e6;
	printf("memory: %s: file %.1f MB, weights mapped %.1f MB, KV cache (f32, %d positions) %.1f MB; "
	       "VmRSS before load %.1f MB, after load %.1f MB, after ctx + 64-token prompt %.1f MB "
	       "(growth %.1f MB vs file + KV %.1f MB)\n",
	       best, best_size / 1e6, model_weight_bytes(m) / 1e6, N_CTX, kv_mb, before / 1e3, loaded / 1e3,
	       after / 1e3, (after - before) / 1e3, best_size / 1e6 + kv_mb);
	/* Loading maps lazily: it must not read the whole file into memory. */
	assert_true((loaded - before) / 1e3 < best_size / 1e6 * 0.5 + 1);
	/* Everything resident stays within file + KV + scratch + slack. */
	assert_true((after - before) / 1e3 < best_size / 1e6 + kv_mb + 16);
	const size_t n_vocab = (size_t)hp->n_vocab;
	model_ctx_free(c);
	model_free(m);

	/* Resident weights: read at load (RSS grows by about the weights, no
	 * more), same logits as the mapping. */
	float *lr = malloc(n_vocab * sizeof(float));
	before = vm_rss_kb();
	mp.mmap = false;
	assert_int_equal(model_load(&m, &mp), 0);
	loaded = vm_rss_kb();
	const double wmb = model_weight_bytes(m) / 1e6;
	printf("memory: resident weights %.1f MB: VmRSS +%.1f MB on load\n", wmb, (loaded - before) / 1e3);
	assert_true((loaded - before) / 1e3 > wmb * 0.9);
	assert_true((loaded - before) / 1e3 < wmb + 8);
	assert_int_equal(model_ctx_init(&c, m, pool, 1, N_CTX, N_CTX), 0);
	assert_int_equal(run_ids(c, ids, 64, 0, 0, false, lr), 0);
	assert_memory_equal(lg, lr, n_vocab * sizeof(float));
	free(lr);
	free(lg);
	model_ctx_free(c);
	model_free(m);
}

/* ---- F16 KV cache ------------------------------------------------------- */

/* How far an F16 KV cache may move the logits from the F32 cache, per
 * weight type of the file (the loosest of its 2-D types). From the refdata
 * README: llama.cpp's own F16-KV (+ flash attention) variant moves the
 * last-position logits of these files by up to 0.006 (F32, F16), 0.03
 * (BF16) and 0.07-0.15 (Q8_0 and the 4-6-bit types: a rounding change
 * upstream flips 8-bit activations downstream). */
static double kv_f16_tol(const char *t)
{
	if (strcmp(t, "F32") == 0 || strcmp(t, "F16") == 0)
		return 6e-3;
	if (strcmp(t, "BF16") == 0)
		return 3e-2;
	return 0.15;
}

/* The README's figures are for the last prompt position. Decode steps read
 * more rounded cache rows, each also written by a rounded earlier step:
 * measured here up to 2.6x the prompt figure over 16 steps (stories260K,
 * whose logits are larger), so they get 3x. */
#define KV_F16_DECODE_FACTOR 3.0

/* Prompt (64 ids) plus 16 decode steps fed F32's greedy choice, with an
 * F32 and an F16 KV cache: the last prompt position's logits within
 * kv_f16_tol, the decode steps' within KV_F16_DECODE_FACTOR times it. The F16
 * run repeats with no pool (one thread) and must give the same logits bit
 * for bit: the thread split does not change any result. */
static void test_model_kv_f16(void **state)
{
	(void)state;
	const char *names[] = {"stories260K.gguf",     "syn-llama-F32.gguf",  "syn-llama-F16.gguf",
			       "syn-llama-BF16.gguf",  "syn-llama-Q8_0.gguf", "syn-llama-Q4_K_M.gguf",
			       "syn-qwen2-F32.gguf",   "syn-qwen2-Q4_0.gguf", "syn-qwen3-F32.gguf",
			       "syn-qwen3-Q8_0.gguf"};
	enum { NP = 64, NG = 16 };
	for (size_t f = 0; f < sizeof(names) / sizeof(names[0]); f++) {
		char path[1024];
		model_path(names[f], path, sizeof(path));
		struct model *m;
		struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
		assert_int_equal(model_load(&m, &mp), 0);
		const int nv = model_hparams(m)->n_vocab;
		const char *ty = strstr(names[f], "F32") || strncmp(names[f], "stories", 7) == 0 ? "F32"
				 : strstr(names[f], "BF16")                                          ? "BF16"
				 : strstr(names[f], "F16")                                           ? "F16"
												     : "Q";
		const double tol = kv_f16_tol(ty);
		int32_t ids[NP];
		ids[0] = 1;
		for (int i = 1; i < NP; i++)
			ids[i] = 3 + (i * 97 + 13) % (nv < 450 ? nv - 3 : 447);

		struct model_ctx *c32, *c16, *c16s;
		struct model_ctx_params cp = model_ctx_default_params();
		assert_int_equal(cp.kv_type, MODEL_KV_F16);
		cp.n_ctx = 128;
		cp.n_batch = NP;
		assert_int_equal(model_ctx_init(&c32, m, pool, 1, cp.n_ctx, cp.n_batch), 0);
		assert_int_equal(model_ctx_kv_type(c32), MODEL_KV_F32);
		assert_int_equal(model_ctx_init_params(&c16, m, pool, &cp), 0);
		assert_int_equal(model_ctx_init_params(&c16s, m, NULL, &cp), 0);
		assert_int_equal(model_ctx_kv_type(c16), MODEL_KV_F16);
		float *l32 = calloc((size_t)nv, sizeof(float)), *l16 = malloc((size_t)nv * sizeof(float));
		float *l16s = malloc((size_t)nv * sizeof(float));
		double d = 0, d0 = 0;
		int same_argmax = 0;
		for (int step = 0; step <= NG; step++) {
			int32_t tok = argmax(l32, nv);
			const int32_t *in = step == 0 ? ids : &tok;
			const int nin = step == 0 ? NP : 1, pos0 = step == 0 ? 0 : NP + step - 1;
			assert_int_equal(run_ids(c32, in, nin, 0, pos0, false, l32), 0);
			assert_int_equal(run_ids(c16, in, nin, 0, pos0, false, l16), 0);
			assert_int_equal(run_ids(c16s, in, nin, 0, pos0, false, l16s), 0);
			assert_memory_equal(l16, l16s, (size_t)nv * sizeof(float));
			for (int i = 0; i < nv; i++)
				upd(step == 0 ? &d0 : &d, fabs(l32[i] - l16[i]));
			same_argmax += argmax(l32, nv) == argmax(l16, nv);
		}
		printf("kv f16 %-22s max logit diff vs f32 KV: last prompt position %.3g, decode %.3g (tol %.3g), same argmax %d/%d\n",
		       names[f], d0, d, tol, same_argmax, NG + 1);
		assert_true(d0 <= tol);
		assert_true(d <= KV_F16_DECODE_FACTOR * tol);
		model_ctx_free(c32);
		model_ctx_free(c16);
		model_ctx_free(c16s);
		free(l32);
		free(l16);
		free(l16s);
		model_free(m);
	}

	/* a KV type that does not exist is refused */
	char path[1024];
	model_path("stories260K.gguf", path, sizeof(path));
	struct model *m;
	struct model_params mp = {.path = path, .layer_begin = 0, .layer_end = -1};
	assert_int_equal(model_load(&m, &mp), 0);
	struct model_ctx *c = NULL;
	struct model_ctx_params cp = model_ctx_default_params();
	cp.kv_type = (enum model_kv_type)7;
	assert_int_equal(model_ctx_init_params(&c, m, pool, &cp), ML_ERR_INVALID);
	assert_null(c);
	model_free(m);
}

/* ---- main ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* model_params.no_output_head (a network pipeline's last worker; the host
 * computes the logits): the head's bytes are neither mapped nor counted,
 * the final norm is, and model_forward(ctx, b, NULL) leaves the same
 * normed rows as the model with its head. */
static void no_head_case(const char *path, int lb)
{
	struct model *full = NULL, *nh = NULL;
	struct model_params mp = {.path = path, .layer_begin = lb, .layer_end = -1};
	assert_int_equal(model_load(&full, &mp), 0);
	mp.no_output_head = true;
	assert_int_equal(model_load(&nh, &mp), 0);
	const struct gguf_file *gf = model_gguf(full);
	const struct gguf_tensor *o = gguf_find_tensor(gf, "output.weight");
	const char *head_name = o ? "output.weight" : "token_embd.weight";
	/* tied and first: token_embd stays for the embeddings */
	const bool head_gone = o || lb > 0;
	const uint64_t head = head_gone ? gguf_find_tensor(gf, head_name)->n_bytes : 0;
	printf("%s [%d, n): %.2f MB with the head, %.2f MB without (%s, %llu bytes)\n", path, lb,
	       model_weight_bytes(full) / 1e6, model_weight_bytes(nh) / 1e6, head_name,
	       (unsigned long long)head);
	assert_int_equal(model_weight_bytes(full) - model_weight_bytes(nh), head);
	if (head_gone)
		assert_null(gguf_find_tensor(model_gguf(nh), head_name)->data);
	assert_non_null(gguf_find_tensor(model_gguf(nh), "output_norm.weight")->data);
	assert_true(model_is_last(nh));

	const struct model_hparams *hp = model_hparams(full);
	const int n = 4, E = hp->n_embd;
	struct model_ctx *cf = NULL, *cn = NULL;
	assert_int_equal(model_ctx_init(&cf, full, pool, 1, 32, 8), 0);
	assert_int_equal(model_ctx_init(&cn, nh, pool, 1, 32, 8), 0);
	float *in = malloc((size_t)n * (size_t)E * sizeof(float));
	float *lg = malloc((size_t)n * (size_t)hp->n_vocab * sizeof(float));
	int32_t ids[4] = {1, 7, 42, 3};
	for (int i = 0; i < n * E; i++)
		in[i] = (float)((i * 37) % 101 - 50) / 50.0f;
	int32_t pos[4] = {0, 1, 2, 3}, seq[4] = {0, 0, 0, 0};
	int8_t want[4] = {0, 0, 1, 1};
	struct model_batch b = {.n_tokens = n, .pos = pos, .seq = seq, .logits = want};
	if (lb == 0)
		b.tokens = ids;
	else
		b.embd = in;
	assert_int_equal(model_forward(cf, &b, lg), 0);
	assert_int_equal(model_forward(cn, &b, NULL), 0);
	assert_memory_equal(model_ctx_result_norm(cf), model_ctx_result_norm(cn),
	                    2 * (size_t)E * sizeof(float));
	free(in);
	free(lg);
	model_ctx_free(cf);
	model_ctx_free(cn);
	model_free(full);
	model_free(nh);
}

static void test_model_no_output_head(void **state)
{
	(void)state;
	no_head_case("../shared/refdata/models/syn-llama-Q8_0.gguf", 2);
	no_head_case("../shared/refdata/models/syn-qwen2-F32.gguf", 3);
	no_head_case("../shared/refdata/models/syn-qwen2-F32.gguf", 0);
	if (access("models/stories260K.gguf", R_OK) == 0) {
		no_head_case("models/stories260K.gguf", 3);
		no_head_case("models/stories260K.gguf", 0);
	}
}

int main(void)
{
	const char *env = getenv("MESH_LLM_SHARED");
	snprintf(shared_dir, sizeof(shared_dir), "%s", env ? env : "../shared");
	snprintf(refdata_dir, sizeof(refdata_dir), "%s/refdata", shared_dir);
	ml_log_set_level(ML_LOG_WARN);
	kern_init();
	if (ml_pool_init(&pool, 2) != 0) {
		fprintf(stderr, "cannot start the thread pool\n");
		return 1;
	}

	static char *files[MAX_FILES];
	int nf = 0;
	DIR *d = opendir(refdata_dir);
	if (d == NULL) {
		fprintf(stderr, "cannot open %s (run from the repository root)\n", refdata_dir);
		return 1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL && nf < MAX_FILES) {
		size_t l = strlen(de->d_name);
		if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) {
			files[nf] = malloc(strlen(refdata_dir) + l + 2);
			sprintf(files[nf], "%s/%s", refdata_dir, de->d_name);
			nf++;
		}
	}
	closedir(d);
	qsort(files, (size_t)nf, sizeof(files[0]), cmp_str);

	static struct CMUnitTest tests[MAX_FILES + 8];
	int nt = 0;
	for (int i = 0; i < nf; i++) {
		tests[nt] = (struct CMUnitTest){
			.name = strrchr(files[i], '/') + 1,
			.test_func = test_refdata_file,
			.initial_state = files[i],
		};
		nt++;
	}
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_pipeline);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_multi_seq);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_refusals);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_rope_freqs_and_scaling);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_all_weight_types);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_memory);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_kv_f16);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_model_no_output_head);
	int rc = _cmocka_run_group_tests("model_refdata", tests, (size_t)nt, NULL, NULL);
	for (int i = 0; i < nf; i++)
		free(files[i]);
	ml_pool_free(pool);
	return rc;
}
