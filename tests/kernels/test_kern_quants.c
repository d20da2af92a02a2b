/* Tests for the kernels' per-type code: half/bfloat conversions, quantize/
 * dequantize round trips, SIMD vs scalar ("generic") agreement, and
 * dequantization bit-exact against llama.cpp's (refdata JSON: first8,
 * sum_f64, sha256 of the f32 little-endian bytes). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_cpu.h"
#include "base/ml_dtype.h"
#include "base/ml_rng.h"
#include "gguf/gguf.h"
#include "kernels/kern.h"
#include "kernels/kern_impl.h"

#define REFDATA "../shared/refdata"
static char PATH_BUF[512];

/* Round-trip error bounds: RMS(dequant(quant(x)) - x) / RMS(x) for x ~ N(0,1). */
struct rt_bound {
	enum ml_dtype t;
	double max_rel_rmse;
};
static const struct rt_bound RT_BOUNDS[] = {
	{ML_DTYPE_F32, 0.0},       {ML_DTYPE_F16, 3e-4},      {ML_DTYPE_BF16, 2.5e-3},
	{ML_DTYPE_Q8_0, 8e-3},     {ML_DTYPE_Q8_1, 8e-3},     {ML_DTYPE_Q8_K, 8e-3},
	{ML_DTYPE_Q6_K, 2.5e-2},   {ML_DTYPE_Q5_0, 6e-2},     {ML_DTYPE_Q5_1, 6e-2},
	{ML_DTYPE_Q5_K, 5e-2},     {ML_DTYPE_Q4_0, 1.2e-1},   {ML_DTYPE_Q4_1, 1.2e-1},
	{ML_DTYPE_Q4_K, 1.0e-1},   {ML_DTYPE_Q3_K, 2.2e-1},   {ML_DTYPE_Q2_K, 4.5e-1},
};

/* SIMD vs generic vec_dot: |simd - generic| <= VEC_DOT_REL_TOL * sum|w_i x_i|
 * (different float summation orders only; integer parts must agree). */
#define VEC_DOT_REL_TOL 1e-5
/* Generic vec_dot vs the double dot of the dequantized operands. */
#define DEQUANT_DOT_REL_TOL 1e-4
/* Q8_1 carries its block sum as f16 (ggml's arithmetic), invisible to dequantization. */
#define DEQUANT_DOT_REL_TOL_Q8_1 2e-3
/* Dequantized sums are accumulated in double in ggml order; JSON holds 17 digits. */
#define SUM_F64_REL_TOL 1e-9

static void fill_normal(struct ml_rng *rng, float *x, int64_t n, double scale)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = (float)(ml_rng_normal(rng) * scale);
}

static void test_f16_exhaustive(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = kern_f16_to_f32((kern_f16)h);
		kern_f16 back = kern_f32_to_f16(f);
		if (isnan(f)) {
			assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
			continue;
		}
		assert_int_equal(back, h);
#ifdef __FLT16_MAX__
		_Float16 hf;
		memcpy(&hf, &h, 2);
		assert_true((float)hf == f);
#endif
	}
}

static void test_f16_rounding(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 7);
	for (int i = 0; i < 200000; i++) {
		uint32_t u = (uint32_t)ml_rng_next(&rng);
		/* bias towards the half range: exponents 100..145 */
		u = (u & 0x807fffffu) | ((100u + (uint32_t)(ml_rng_next(&rng) % 46)) << 23);
		float f;
		memcpy(&f, &u, 4);
		kern_f16 h = kern_f32_to_f16(f);
#ifdef __FLT16_MAX__
		_Float16 ref = (_Float16)f;
		uint16_t rb;
		memcpy(&rb, &ref, 2);
		assert_int_equal(h, rb);
#else
		/* nearest: no finite neighbour is strictly closer (below the overflow point) */
		if (fabsf(f) < 65504.f) {
			double e = fabs((double)kern_f16_to_f32(h) - f);
			float up = kern_f16_to_f32((kern_f16)(h + 1));
			float down = kern_f16_to_f32((kern_f16)(h - 1));
			if (isfinite(up))
				assert_true(e <= fabs((double)up - f));
			if (isfinite(down) && (h & 0x7fff) != 0)
				assert_true(e <= fabs((double)down - f));
		}
#endif
	}
	assert_int_equal(kern_f32_to_f16(65520.f), 0x7c00);
	assert_int_equal(kern_f32_to_f16(65519.f), 0x7bff);
	assert_int_equal(kern_f32_to_f16(-0.0f), 0x8000);
	assert_int_equal(kern_f32_to_f16(0x1p-25f), 0);      /* tie to even: 0 */
	assert_int_equal(kern_f32_to_f16(0x1.8p-24f), 2);    /* 1.5 ulp -> 2 */
	/* edge cases, expected values from F16C (vcvtps2ph, round to nearest even) */
	static const uint32_t in[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa5a5a5u, 0x7f800000u,
				      0xff800000u, 0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u,
				      0x387fe000u};
	static const uint16_t want[] = {0x7e00, 0xfe00, 0x7e00, 0x7f2d, 0x7c00, 0xfc00,
					0x7c00, 0x7bff, 0x0000, 0x0001, 0x0400};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		float f;
		memcpy(&f, &in[i], 4);
		assert_int_equal(kern_f32_to_f16(f), want[i]);
	}
}

static void test_bf16(void **state)
{
	(void)state;
	assert_int_equal(kern_f32_to_bf16(1.0f), 0x3f80);
	float f;
	uint32_t u = 0x3f808000u; /* tie: 1.0 + half an ulp -> even (0x3f80) */
	memcpy(&f, &u, 4);
	assert_int_equal(kern_f32_to_bf16(f), 0x3f80);
	u = 0x3f818000u; /* tie, odd -> up */
	memcpy(&f, &u, 4);
	assert_int_equal(kern_f32_to_bf16(f), 0x3f82);
	assert_true(kern_bf16_to_f32(0x4049) == 3.140625f);
	assert_true(isnan(kern_bf16_to_f32(kern_f32_to_bf16(NAN))));
}

static void test_round_trip(void **state)
{
	(void)state;
	const int64_t n = 4096;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	void *q = malloc(n * 8);
	struct ml_rng rng;
	ml_rng_seed(&rng, 1234);
	fill_normal(&rng, x, n, 1.0);
	for (size_t i = 0; i < sizeof(RT_BOUNDS) / sizeof(RT_BOUNDS[0]); i++) {
		const struct rt_bound *b = &RT_BOUNDS[i];
		for (int generic = 0; generic < 2; generic++) {
			const struct kern_type_traits *tr =
				generic ? kern_type_traits_generic(b->t) : kern_type_traits(b->t);
			assert_non_null(tr);
			assert_non_null(tr->from_f32);
			assert_non_null(tr->to_f32);
			tr->from_f32(x, q, n);
			tr->to_f32(q, y, n);
			double se = 0, sx = 0;
			for (int64_t j = 0; j < n; j++) {
				se += (double)(y[j] - x[j]) * (y[j] - x[j]);
				sx += (double)x[j] * x[j];
			}
			double rel = sqrt(se / sx);
			if (!(rel <= b->max_rel_rmse))
				fail_msg("%s: relative rmse %.4g over bound %.4g", ml_dtype_name(b->t), rel,
					 b->max_rel_rmse);
		}
	}
	/* all-zero input quantizes to zeros without NaN */
	memset(x, 0, n * sizeof(float));
	for (size_t i = 0; i < sizeof(RT_BOUNDS) / sizeof(RT_BOUNDS[0]); i++) {
		const struct kern_type_traits *tr = kern_type_traits(RT_BOUNDS[i].t);
		tr->from_f32(x, q, n);
		tr->to_f32(q, y, n);
		for (int64_t j = 0; j < n; j++)
			assert_true(y[j] == 0.0f);
	}
	free(x);
	free(y);
	free(q);
}

/* Activation converters: the dispatched ones must be bit-identical to the
 * generic ones (the reference logits depend on every int8 value). */
static void test_act_quant_exact(void **state)
{
	(void)state;
	const enum ml_dtype vdts[] = {ML_DTYPE_F32, ML_DTYPE_F16, ML_DTYPE_BF16,
				      ML_DTYPE_Q8_0, ML_DTYPE_Q8_1, ML_DTYPE_Q8_K};
	const int64_t ns[] = {256, 512, 768, 4096, 256 * 11};
	struct ml_rng rng;
	ml_rng_seed(&rng, 99);
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		int64_t n = ns[k];
		float *x = malloc(n * sizeof(float));
		fill_normal(&rng, x, n, k == 0 ? 1e-3 : 3.0);
		x[n / 2] = 0; /* a zero block now and then */
		if (k == 2)
			for (int j = 0; j < 256; j++)
				x[j] = 0;
		for (size_t v = 0; v < sizeof(vdts) / sizeof(vdts[0]); v++) {
			size_t rs = ml_dtype_row_size(vdts[v], n);
			unsigned char *a = malloc(rs), *b = malloc(rs);
			memset(a, 0xAA, rs);
			memset(b, 0x55, rs);
			kern_act_from_f32_generic(vdts[v])(x, a, n);
			kern_act_from_f32(vdts[v])(x, b, n);
			if (memcmp(a, b, rs) != 0)
				fail_msg("activation converter %s differs from generic (n=%lld)",
					 ml_dtype_name(vdts[v]), (long long)n);
			free(a);
			free(b);
		}
		free(x);
	}
}

static const enum ml_dtype WEIGHT_TYPES[] = {
	ML_DTYPE_F32,  ML_DTYPE_F16,  ML_DTYPE_BF16, ML_DTYPE_Q4_0, ML_DTYPE_Q4_1,
	ML_DTYPE_Q5_0, ML_DTYPE_Q5_1, ML_DTYPE_Q8_0, ML_DTYPE_Q2_K, ML_DTYPE_Q3_K,
	ML_DTYPE_Q4_K, ML_DTYPE_Q5_K, ML_DTYPE_Q6_K,
};

/* The tables to check against generic: the dispatched one, plus the AVX2
 * layer alone (the dispatched table may override it with AVX-512). */
static struct kern_dispatch g_avx2_only;
static int n_tables(void)
{
#if defined(__x86_64__)
	const struct ml_cpu_features *f = ml_cpu_features();
	if (f->avx2 && f->fma && f->f16c && strcmp(kern_isa_names(), "generic") != 0) {
		kern_dispatch_generic(&g_avx2_only);
		kern_dispatch_avx2(&g_avx2_only);
		return 2;
	}
#endif
	return 1;
}

static const struct kern_type_traits *table_traits(int table, enum ml_dtype t)
{
	return table == 0 ? kern_type_traits(t) : &g_avx2_only.traits[t];
}

static void test_vec_dot_simd_vs_generic(void **state)
{
	(void)state;
	const int nt = n_tables();
	for (int table = 0; table < nt; table++) {
	struct ml_rng rng;
	ml_rng_seed(&rng, 4242);
	const int64_t ns[] = {256, 512, 768, 1024 + 256, 4096, 256 * 13};
	for (size_t ti = 0; ti < sizeof(WEIGHT_TYPES) / sizeof(WEIGHT_TYPES[0]); ti++) {
		const enum ml_dtype t = WEIGHT_TYPES[ti];
		const struct kern_type_traits *g = kern_type_traits_generic(t);
		const struct kern_type_traits *d = table_traits(table, t);
		assert_true(g->supported && d->supported);
		assert_int_equal(g->vec_dot_type, d->vec_dot_type);
		for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
			for (int rep = 0; rep < 4; rep++) {
				int64_t n = ns[k];
				float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
				float *wd = malloc(n * sizeof(float)), *xd = malloc(n * sizeof(float));
				fill_normal(&rng, w, n, 0.05);
				fill_normal(&rng, x, n, rep == 3 ? 100.0 : 1.0);
				void *wq = malloc(ml_dtype_row_size(t, n));
				void *xq = malloc(ml_dtype_row_size(g->vec_dot_type, n));
				g->from_f32(w, wq, n);
				kern_act_from_f32_generic(g->vec_dot_type)(x, xq, n);
				g->to_f32(wq, wd, n);
				kern_type_traits_generic(g->vec_dot_type)->to_f32(xq, xd, n);
				double mag = 0;
				for (int64_t j = 0; j < n; j++)
					mag += fabs((double)wd[j] * xd[j]);
				float sg = NAN, sd = NAN;
				g->vec_dot(n, &sg, wq, xq);
				d->vec_dot(n, &sd, wq, xq);
				if (!(fabs((double)sg - sd) <= VEC_DOT_REL_TOL * mag + 1e-30))
					fail_msg("%s n=%lld table %d: simd %.9g generic %.9g (mag %.3g)",
						 ml_dtype_name(t), (long long)n, table, sd, sg, mag);
				/* and the generic dot is the dot of the dequantized rows
				 * (Q8_K's float scale makes this approximate) */
				double ref = 0;
				for (int64_t j = 0; j < n; j++)
					ref += (double)wd[j] * xd[j];
				const double tol = g->vec_dot_type == ML_DTYPE_Q8_1
							   ? DEQUANT_DOT_REL_TOL_Q8_1
							   : DEQUANT_DOT_REL_TOL;
				if (!(fabs(ref - sg) <= tol * mag + 1e-30))
					fail_msg("%s n=%lld: generic %.9g vs dequantized dot %.9g",
						 ml_dtype_name(t), (long long)n, sg, ref);
				free(w);
				free(x);
				free(wd);
				free(xd);
				free(wq);
				free(xq);
			}
		}
	}
	}
}

/* Plain types take any length: SIMD body plus scalar tail. */
static void test_vec_dot_plain_tails(void **state)
{
	(void)state;
	struct ml_rng rng;
	ml_rng_seed(&rng, 77);
	const enum ml_dtype plain[] = {ML_DTYPE_F32, ML_DTYPE_F16, ML_DTYPE_BF16};
	const int nt = n_tables();
	for (size_t ti = 0; ti < 3 * (size_t)nt; ti++) {
		const struct kern_type_traits *g = kern_type_traits_generic(plain[ti % 3]);
		const struct kern_type_traits *d = table_traits((int)(ti / 3), plain[ti % 3]);
		for (int64_t n = 1; n <= 300; n += (n < 70 ? 1 : 37)) {
			float w[300], x[300], wd[300], xd[300];
			uint32_t wq[300], xq[300];
			fill_normal(&rng, w, n, 1.0);
			fill_normal(&rng, x, n, 1.0);
			g->from_f32(w, wq, n);
			g->from_f32(x, xq, n);
			/* dispatched converters are bit-identical */
			uint32_t wq2[300];
			memset(wq2, 0, sizeof(wq2));
			d->from_f32(w, wq2, n);
			assert_memory_equal(wq, wq2, ml_dtype_row_size(plain[ti % 3], n));
			d->to_f32(wq, wd, n);
			g->to_f32(xq, xd, n);
			double mag = 0;
			for (int64_t j = 0; j < n; j++)
				mag += fabs((double)wd[j] * xd[j]);
			float sg, sd;
			g->vec_dot(n, &sg, wq, xq);
			d->vec_dot(n, &sd, wq, xq);
			if (!(fabs((double)sg - sd) <= VEC_DOT_REL_TOL * mag + 1e-30))
				fail_msg("%s n=%lld: simd %.9g generic %.9g", ml_dtype_name(plain[ti % 3]),
					 (long long)n, sd, sg);
		}
	}
}

/* On a machine with AVX2 the table must really point at SIMD kernels. */
static void test_dispatch_uses_simd(void **state)
{
	(void)state;
	if (strstr(kern_isa_names(), "avx2") == NULL) {
		print_message("no avx2 here; dispatch check skipped\n");
		return;
	}
	for (size_t ti = 0; ti < sizeof(WEIGHT_TYPES) / sizeof(WEIGHT_TYPES[0]); ti++)
		if (kern_type_traits(WEIGHT_TYPES[ti])->vec_dot ==
		    kern_type_traits_generic(WEIGHT_TYPES[ti])->vec_dot)
			fail_msg("%s: vec_dot not dispatched", ml_dtype_name(WEIGHT_TYPES[ti]));
	assert_true(kern_act_from_f32(ML_DTYPE_Q8_0) != kern_act_from_f32_generic(ML_DTYPE_Q8_0));
	assert_true(kern_act_from_f32(ML_DTYPE_Q8_K) != kern_act_from_f32_generic(ML_DTYPE_Q8_K));
}

static void test_unsupported_types(void **state)
{
	(void)state;
	const uint32_t unsup[] = {ML_DTYPE_IQ2_XXS, ML_DTYPE_IQ4_NL, ML_DTYPE_IQ4_XS,
				  ML_DTYPE_TQ1_0, ML_DTYPE_TQ2_0, ML_DTYPE_MXFP4, ML_DTYPE_I8};
	for (size_t i = 0; i < sizeof(unsup) / sizeof(unsup[0]); i++) {
		const struct kern_type_traits *tr = kern_type_traits(unsup[i]);
		assert_non_null(tr);
		assert_false(tr->supported);
	}
	assert_null(kern_type_traits(4));   /* removed Q4_2 */
	assert_null(kern_type_traits(999));
	assert_non_null(kern_isa_names());
}

/* ---- against llama.cpp's dequantization ---- */

static const char *const REF_FILES[] = {
	"syn-llama-F16",    "syn-llama-BF16",   "syn-llama-Q8_0",   "syn-llama-Q6_K",
	"syn-llama-Q5_K_M", "syn-llama-Q4_K_M", "syn-llama-Q4_0",   "syn-qwen2-F16",
	"syn-qwen2-BF16",   "syn-qwen2-Q8_0",   "syn-qwen2-Q6_K",   "syn-qwen2-Q5_K_M",
	"syn-qwen2-Q4_K_M", "syn-qwen2-Q4_0",   "syn-qwen3-F16",    "syn-qwen3-Q8_0",
};

static void check_ref_file(const char *stem, int use_generic, int *n_checked)
{
	char path[512];
	snprintf(path, sizeof(path), REFDATA "/%s.gguf.json", stem);
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (root == NULL)
		fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
	json_t *tensors = json_object_get(json_object_get(root, "dequantized_tensors"), "tensors");
	assert_non_null(tensors);

	snprintf(path, sizeof(path), REFDATA "/models/%s.gguf", stem);
	struct gguf_file *gf = NULL;
	int rc = gguf_open(&gf, path);
	if (rc != 0)
		fail_msg("gguf_open %s: %d", path, rc);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);

	const char *name;
	json_t *ent;
	json_object_foreach(tensors, name, ent) {
		const struct gguf_tensor *t = gguf_find_tensor(gf, name);
		if (t == NULL)
			fail_msg("%s: tensor %s missing", stem, name);
		const char *tname = json_string_value(json_object_get(ent, "type"));
		assert_string_equal(ml_dtype_name(t->type), tname);
		assert_int_equal(t->n_elements,
				 (uint64_t)json_integer_value(json_object_get(ent, "n_elements")));
		const struct kern_type_traits *tr =
			use_generic ? kern_type_traits_generic(t->type) : kern_type_traits(t->type);
		float *y = malloc(t->n_elements * sizeof(float));
		/* row by row, as the engine does */
		const int64_t row = (int64_t)t->ne[0];
		const size_t row_bytes = ml_dtype_row_size(t->type, row);
		for (uint64_t r = 0; r < t->n_elements / (uint64_t)row; r++)
			tr->to_f32((const char *)t->data + r * row_bytes, y + r * row, row);

		json_t *first8 = json_object_get(ent, "first8");
		for (size_t j = 0; j < json_array_size(first8) && j < t->n_elements; j++) {
			float want = (float)json_real_value(json_array_get(first8, j));
			if (y[j] != want)
				fail_msg("%s %s [%zu]: %.9g want %.9g", stem, name, j, y[j], want);
		}
		double sum = 0;
		for (uint64_t j = 0; j < t->n_elements; j++)
			sum += y[j];
		double want_sum = json_real_value(json_object_get(ent, "sum_f64"));
		if (!(fabs(sum - want_sum) <= SUM_F64_REL_TOL * (fabs(want_sum) + 1.0)))
			fail_msg("%s %s: sum %.17g want %.17g", stem, name, sum, want_sum);

		unsigned char hash[crypto_hash_sha256_BYTES];
		crypto_hash_sha256(hash, (const unsigned char *)y, t->n_elements * sizeof(float));
		char hex[2 * crypto_hash_sha256_BYTES + 1];
		sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
		const char *want_hex = json_string_value(json_object_get(ent, "sha256_f32le"));
		if (strcmp(hex, want_hex) != 0)
			fail_msg("%s %s (%s): sha256 %s want %s", stem, name, tname, hex, want_hex);
		free(y);
		(*n_checked)++;
	}
	gguf_close(gf);
	json_decref(root);
}

static void test_dequant_vs_llama_cpp(void **state)
{
	(void)state;
	assert_true(sodium_init() >= 0);
	int n_checked = 0;
	for (int generic = 0; generic < 2; generic++)
		for (size_t i = 0; i < sizeof(REF_FILES) / sizeof(REF_FILES[0]); i++)
			check_ref_file(REF_FILES[i], generic, &n_checked);
	assert_true(n_checked > 100);
	print_message("dequantized %d tensors bit-exact vs llama.cpp\n", n_checked);
}

/* ---- against llama.cpp's quantizer ----
 * The quantized refdata files were made from the F32 file by llama-quantize
 * without an importance matrix, i.e. with ggml's quantize_row_*_ref: our
 * from_f32 must reproduce every byte. */
static void check_quantizer(const char *f32_stem, const char *q_stem, int use_generic, int *n_checked)
{
	char path[512];
	struct gguf_file *src = NULL, *dst = NULL;
	snprintf(path, sizeof(path), REFDATA "/models/%s.gguf", f32_stem);
	assert_int_equal(gguf_open(&src, path), 0);
	snprintf(path, sizeof(path), REFDATA "/models/%s.gguf", q_stem);
	assert_int_equal(gguf_open(&dst, path), 0);
	assert_int_equal(gguf_map(src, NULL, NULL), 0);
	assert_int_equal(gguf_map(dst, NULL, NULL), 0);
	for (uint64_t i = 0; i < gguf_n_tensors(dst); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(dst, i);
		if (t->type == ML_DTYPE_F32)
			continue;
		/* the dispatched pass only needs the types whose quantizer is SIMD */
		if (!use_generic &&
		    kern_type_traits(t->type)->from_f32 == kern_type_traits_generic(t->type)->from_f32)
			continue;
		const struct gguf_tensor *s = gguf_find_tensor(src, t->name);
		assert_non_null(s);
		assert_int_equal(s->type, ML_DTYPE_F32);
		assert_int_equal(s->n_elements, t->n_elements);
		const struct kern_type_traits *tr =
			use_generic ? kern_type_traits_generic(t->type) : kern_type_traits(t->type);
		const int64_t row = (int64_t)t->ne[0];
		const size_t rs = ml_dtype_row_size(t->type, row);
		unsigned char *buf = malloc(t->n_bytes);
		for (uint64_t r = 0; r < t->n_elements / (uint64_t)row; r++)
			tr->from_f32((const float *)s->data + r * row, buf + r * rs, row);
		if (memcmp(buf, t->data, t->n_bytes) != 0) {
			size_t k = 0;
			while (buf[k] == ((const unsigned char *)t->data)[k])
				k++;
			fail_msg("%s %s (%s): quantized bytes differ from llama-quantize's at byte %zu",
				 q_stem, t->name, ml_dtype_name(t->type), k);
		}
		free(buf);
		(*n_checked)++;
	}
	gguf_close(src);
	gguf_close(dst);
}

static void test_quantize_vs_llama_cpp(void **state)
{
	(void)state;
	static const char *const archs[] = {"syn-llama", "syn-qwen2", "syn-qwen3"};
	static const char *const kinds[] = {"F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"};
	int n_checked = 0;
	for (int generic = 0; generic < 2; generic++)
		for (size_t a = 0; a < 3; a++)
			for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
				char f32[64], q[64];
				snprintf(f32, sizeof(f32), "%s-F32", archs[a]);
				snprintf(q, sizeof(q), "%s-%s", archs[a], kinds[k]);
				snprintf(PATH_BUF, sizeof(PATH_BUF), REFDATA "/models/%s.gguf", q);
				FILE *f = fopen(PATH_BUF, "rb");
				if (f == NULL)
					continue; /* syn-qwen3 comes in F32, F16, Q8_0 only */
				fclose(f);
				check_quantizer(f32, q, generic, &n_checked);
			}
	assert_true(n_checked > 200);
	print_message("quantized %d tensors byte-identical to llama-quantize\n", n_checked);
}

int main(void)
{
	kern_init();
	print_message("kernels: %s\n", kern_isa_names());
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_f16_exhaustive),
		cmocka_unit_test(test_f16_rounding),
		cmocka_unit_test(test_bf16),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_act_quant_exact),
		cmocka_unit_test(test_vec_dot_simd_vs_generic),
		cmocka_unit_test(test_vec_dot_plain_tails),
		cmocka_unit_test(test_dispatch_uses_simd),
		cmocka_unit_test(test_unsupported_types),
		cmocka_unit_test(test_dequant_vs_llama_cpp),
		cmocka_unit_test(test_quantize_vs_llama_cpp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
