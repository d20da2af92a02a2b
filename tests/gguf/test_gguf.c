/* Tests for src/gguf: the reader on real and reference models, the writer
 * round trip (every value type, nested arrays, alignment, v2, split
 * models, streamed tensor data), every truncation of small files, seeded
 * random corruption, and specific malformed files with their messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "base/ml_rng.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"

#define MODELS "../shared/models/"
#define REFDATA "../shared/refdata/models/"

static char tmpdir[64];

static const char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, name);
	return buf[k];
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_gguf.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *p = malloc((size_t)len + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return p;
}

static void spit(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (n > 0)
		assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

/* --------------------------------------------------------- real models */

static bool want_blk2(const struct gguf_tensor *t, void *user)
{
	(void)user;
	return strncmp(t->name, "blk.2.", 6) == 0;
}

static void check_tensor_bytes(const struct gguf_tensor *t, const unsigned char *file)
{
	assert_non_null(t->data);
	assert_memory_equal(t->data, file + t->offset, t->n_bytes);
}

/* Bytes and number of this process's mappings of files named |*name|. */
static size_t maps_of(const char *name, size_t *count)
{
	FILE *f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	char line[1024];
	size_t total = 0;
	*count = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (strstr(line, name) == NULL || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		total += hi - lo;
		(*count)++;
	}
	fclose(f);
	return total;
}

static void test_stories260k(void **state)
{
	(void)state;
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, MODELS "stories260K.gguf"), 0);
	assert_int_equal(gguf_version(gf), 3);
	assert_int_equal(gguf_alignment(gf), 32);
	assert_int_equal(gguf_n_files(gf), 1);
	assert_int_equal(gguf_file_size(gf), 1185376);
	assert_int_equal(gguf_n_kv(gf), 19);
	assert_int_equal(gguf_n_tensors(gf), 48);
	assert_string_equal(gguf_path(gf), MODELS "stories260K.gguf");

	struct gguf_str s;
	assert_int_equal(gguf_get_str(gf, "general.architecture", &s), 0);
	assert_int_equal(s.len, 5);
	assert_string_equal(s.ptr, "llama");
	uint32_t u;
	assert_int_equal(gguf_get_u32(gf, "llama.block_count", &u), 0);
	assert_int_equal(u, 5);
	assert_int_equal(gguf_get_u32(gf, "llama.embedding_length", &u), 0);
	assert_int_equal(u, 64);
	assert_int_equal(gguf_get_u32(gf, "llama.feed_forward_length", &u), 0);
	assert_int_equal(u, 172);
	assert_int_equal(gguf_get_u32(gf, "llama.attention.head_count", &u), 0);
	assert_int_equal(u, 8);
	assert_int_equal(gguf_get_u32(gf, "llama.attention.head_count_kv", &u), 0);
	assert_int_equal(u, 4);
	assert_int_equal(gguf_get_u32(gf, "llama.context_length", &u), 0);
	assert_int_equal(u, 2048);
	assert_int_equal(gguf_get_u32(gf, "tokenizer.ggml.seperator_token_id", &u), 0);
	assert_int_equal(u, 4294967295u);
	int32_t i32 = 7;
	assert_int_equal(gguf_get_i32(gf, "tokenizer.ggml.seperator_token_id", &i32), ML_ERR_RANGE);
	assert_int_equal(i32, 7);
	uint64_t u64;
	assert_int_equal(gguf_get_u64(gf, "tokenizer.ggml.eos_token_id", &u64), 0);
	assert_int_equal(u64, 2);
	float f;
	assert_int_equal(gguf_get_f32(gf, "llama.attention.layer_norm_rms_epsilon", &f), 0);
	assert_true(fabsf(f - 1e-5f) < 1e-10f);
	assert_int_equal(gguf_get_f32(gf, "llama.block_count", &f), 0); /* ints convert */
	assert_true(f == 5.0f);
	u = 99;
	assert_int_equal(gguf_get_u32(gf, "llama.rope.freq_base", &u), ML_ERR_NOT_FOUND);
	assert_int_equal(u, 99);
	assert_null(gguf_find(gf, "tokenizer.ggml.pre"));
	assert_int_equal(gguf_get_u32(gf, "general.name", &u), ML_ERR_FORMAT);
	assert_non_null(strstr(ml_last_error(), "general.name"));
	assert_non_null(strstr(ml_last_error(), "string"));
	bool bl;
	assert_int_equal(gguf_get_bool(gf, "general.name", &bl), ML_ERR_FORMAT);

	const struct gguf_value *tok;
	assert_int_equal(gguf_get_arr(gf, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tok), 0);
	assert_int_equal(tok->arr.n, 512);
	assert_null(tok->arr.raw);
	assert_string_equal(tok->arr.items[0].str.ptr, "<unk>");
	assert_string_equal(tok->arr.items[1].str.ptr, "<s>");
	assert_string_equal(tok->arr.items[258].str.ptr, "<0xFF>");
	assert_int_equal(gguf_get_arr(gf, "tokenizer.ggml.tokens", GGUF_TYPE_INT32, &tok),
			 ML_ERR_FORMAT);
	assert_non_null(strstr(ml_last_error(), "array of string"));
	const struct gguf_value *tt;
	assert_int_equal(gguf_get_arr(gf, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &tt), 0);
	assert_int_equal(tt->arr.n, 512);
	const int32_t *types = tt->arr.raw;
	assert_int_equal(types[0], 2);
	assert_int_equal(types[1], 3);
	assert_int_equal(types[3], 6);
	assert_int_equal(types[300], 1);
	const struct gguf_value *sc;
	assert_int_equal(gguf_get_arr(gf, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &sc), 0);
	assert_int_equal(sc->arr.n, 512);

	const struct gguf_kv *kv0 = gguf_kv_at(gf, 0);
	assert_non_null(kv0);
	assert_string_equal(kv0->key.ptr, "tokenizer.ggml.tokens");
	assert_null(gguf_kv_at(gf, 19));

	const struct gguf_tensor *emb = gguf_find_tensor(gf, "token_embd.weight");
	assert_non_null(emb);
	assert_int_equal(emb->type, ML_DTYPE_F32);
	assert_int_equal(emb->n_dims, 2);
	assert_int_equal(emb->ne[0], 64);
	assert_int_equal(emb->ne[1], 512);
	assert_int_equal(emb->ne[2], 1);
	assert_int_equal(emb->n_elements, 64 * 512);
	assert_int_equal(emb->n_bytes, 64 * 512 * 4);
	assert_int_equal(emb->offset % 32, 0);
	assert_null(emb->data);
	const struct gguf_tensor *down = gguf_find_tensor(gf, "blk.4.ffn_down.weight");
	assert_non_null(down);
	assert_int_equal(down->ne[0], 172);
	assert_int_equal(down->ne[1], 64);
	const struct gguf_tensor *kw = gguf_find_tensor(gf, "blk.0.attn_k.weight");
	assert_int_equal(kw->ne[0], 64);
	assert_int_equal(kw->ne[1], 32);
	assert_int_equal(gguf_find_tensor(gf, "output_norm.weight")->n_dims, 1);
	assert_null(gguf_find_tensor(gf, "blk.5.attn_q.weight"));
	assert_null(gguf_find_tensor(gf, "token_embd.weigh"));
	assert_ptr_equal(gguf_tensor_at(gf, 0), emb);
	assert_null(gguf_tensor_at(gf, 48));

	size_t n;
	unsigned char *file = slurp(MODELS "stories260K.gguf", &n);
	/* selective mapping: only layer 2 */
	assert_int_equal(gguf_map(gf, want_blk2, NULL), 0);
	int mapped = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		if (strncmp(t->name, "blk.2.", 6) == 0) {
			check_tensor_bytes(t, file);
			mapped++;
		} else {
			assert_null(t->data);
		}
	}
	assert_int_equal(mapped, 9);
	/* the contiguous tensors of layer 2 share one mapping of whole pages
	 * around them (~150 KB), not the 1.2 MB file */
	size_t n_maps, map_bytes = maps_of("stories260K.gguf", &n_maps);
	assert_int_equal(n_maps, 1);
	assert_true(map_bytes >= 9 * 256 && map_bytes < 200000);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++)
		check_tensor_bytes(gguf_tensor_at(gf, i), file);
	/* README: output.weight has the same values as token_embd.weight */
	const struct gguf_tensor *out = gguf_find_tensor(gf, "output.weight");
	assert_memory_equal(out->data, emb->data, emb->n_bytes);
	free(file);
	gguf_close(gf);
	gguf_close(NULL);
}

/* Resident mode: the same bytes as the file, in read-only memory that is
 * not a file mapping. */
static void test_resident(void **state)
{
	(void)state;
	struct gguf_file *gf;
	size_t n;
	unsigned char *file = slurp(MODELS "stories260K.gguf", &n);
	assert_int_equal(gguf_open(&gf, MODELS "stories260K.gguf"), 0);
	gguf_set_resident(gf, true);
	assert_int_equal(gguf_map(gf, want_blk2, NULL), 0);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++)
		check_tensor_bytes(gguf_tensor_at(gf, i), file);
	size_t n_maps;
	assert_int_equal(maps_of("stories260K.gguf", &n_maps), 0);
	free(file);
	gguf_close(gf);
}

static void test_llama2_tiny(void **state)
{
	(void)state;
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, MODELS "llama-2-tiny-random.gguf"), 0);
	assert_int_equal(gguf_n_tensors(gf), 12);
	struct gguf_str s;
	assert_int_equal(gguf_get_str(gf, "general.name", &s), 0);
	assert_string_equal(s.ptr, "LLaMA v2");
	uint32_t u;
	assert_int_equal(gguf_get_u32(gf, "general.file_type", &u), 0);
	assert_int_equal(u, 1);
	assert_int_equal(gguf_get_u32(gf, "llama.embedding_length", &u), 0);
	assert_int_equal(u, 8);
	assert_int_equal(gguf_get_u32(gf, "llama.context_length", &u), 0);
	assert_int_equal(u, 4096);
	const struct gguf_value *tok;
	assert_int_equal(gguf_get_arr(gf, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tok), 0);
	assert_int_equal(tok->arr.n, 32000);
	int f16 = 0, f32 = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		f16 += t->type == ML_DTYPE_F16;
		f32 += t->type == ML_DTYPE_F32;
	}
	assert_int_equal(f16, 9);
	assert_int_equal(f32, 3);
	const struct gguf_tensor *t = gguf_find_tensor(gf, "token_embd.weight");
	assert_int_equal(t->type, ML_DTYPE_F16);
	assert_int_equal(t->ne[0], 8);
	assert_int_equal(t->ne[1], 32000);
	assert_int_equal(t->n_bytes, 8 * 32000 * 2);
	t = gguf_find_tensor(gf, "blk.0.ffn_down.weight");
	assert_int_equal(t->ne[0], 32);
	assert_int_equal(t->ne[1], 8);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	gguf_close(gf);
}

static void test_refdata_models(void **state)
{
	(void)state;
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, REFDATA "syn-llama-Q4_K_M.gguf"), 0);
	uint32_t u;
	assert_int_equal(gguf_get_u32(gf, "general.file_type", &u), 0);
	assert_int_equal(u, 15);
	assert_int_equal(gguf_get_u32(gf, "llama.embedding_length", &u), 0);
	assert_int_equal(u, 256);
	assert_int_equal(gguf_get_u32(gf, "llama.feed_forward_length", &u), 0);
	assert_int_equal(u, 768);
	bool b;
	assert_int_equal(gguf_get_bool(gf, "tokenizer.ggml.add_bos_token", &b), 0);
	assert_true(b);
	int q6 = 0, q4 = 0, f32 = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		q6 += t->type == ML_DTYPE_Q6_K;
		q4 += t->type == ML_DTYPE_Q4_K;
		f32 += t->type == ML_DTYPE_F32;
	}
	assert_int_equal(q6, 5);
	assert_int_equal(q4, 25);
	assert_int_equal(f32, 9);
	const struct gguf_tensor *t = gguf_find_tensor(gf, "output.weight");
	assert_int_equal(t->type, ML_DTYPE_Q6_K);
	assert_int_equal(t->ne[0], 256);
	assert_int_equal(t->n_bytes, 512 * 210);
	t = gguf_find_tensor(gf, "token_embd.weight");
	assert_int_equal(t->type, ML_DTYPE_Q4_K);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	gguf_close(gf);

	assert_int_equal(gguf_open(&gf, REFDATA "syn-qwen2-Q8_0.gguf"), 0);
	struct gguf_str s;
	assert_int_equal(gguf_get_str(gf, "general.architecture", &s), 0);
	assert_string_equal(s.ptr, "qwen2");
	assert_non_null(gguf_find_tensor(gf, "blk.0.attn_q.bias"));
	gguf_close(gf);

	static const char *const others[] = {
		REFDATA "syn-llama-F32.gguf",  REFDATA "syn-llama-BF16.gguf",
		REFDATA "syn-llama-Q4_0.gguf", REFDATA "syn-llama-Q5_K_M.gguf",
		REFDATA "syn-qwen3-F16.gguf",  "../shared/tokenizer/ggml-vocab-qwen2.gguf",
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		if (gguf_open(&gf, others[i]) != 0)
			fail_msg("%s: %s", others[i], ml_last_error());
		gguf_close(gf);
	}
}

/* ------------------------------------------------------- writer round trip */

static int fill_rows(void *user, const char *name, uint64_t row0, uint64_t n_rows, void *dst)
{
	uint64_t ne0 = *(const uint64_t *)user;
	float *d = dst;
	(void)name;
	for (uint64_t r = 0; r < n_rows; r++)
		for (uint64_t c = 0; c < ne0; c++)
			d[r * ne0 + c] = (float)((row0 + r) * 3 + c % 7);
	return 0;
}

static void test_writer_roundtrip(void **state)
{
	(void)state;
	struct gguf_writer *w;
	assert_int_equal(gguf_writer_init(&w), 0);
	assert_int_equal(gguf_writer_set_alignment(w, 64), 0);
	assert_int_equal(gguf_writer_add_u8(w, "t.u8", 250), 0);
	assert_int_equal(gguf_writer_add_i8(w, "t.i8", -100), 0);
	assert_int_equal(gguf_writer_add_u16(w, "t.u16", 65000), 0);
	assert_int_equal(gguf_writer_add_i16(w, "t.i16", -32000), 0);
	assert_int_equal(gguf_writer_add_u32(w, "t.u32", 4000000000u), 0);
	assert_int_equal(gguf_writer_add_i32(w, "t.i32", -2000000000), 0);
	assert_int_equal(gguf_writer_add_u64(w, "t.u64", UINT64_MAX - 1), 0);
	assert_int_equal(gguf_writer_add_i64(w, "t.i64", INT64_MIN + 5), 0);
	assert_int_equal(gguf_writer_add_f32(w, "t.f32", 1.5f), 0);
	assert_int_equal(gguf_writer_add_f64(w, "t.f64", -2.25e100), 0);
	assert_int_equal(gguf_writer_add_bool(w, "t.bool", true), 0);
	assert_int_equal(gguf_writer_add_str(w, "t.str", "hello"), 0);
	assert_int_equal(gguf_writer_add_str(w, "t.empty", ""), 0);
	assert_int_equal(gguf_writer_add_strn(w, "t.nul", "a\0b", 3), 0);
	assert_int_equal(gguf_writer_add_u32(w, "t.u32", 1), ML_ERR_INVALID); /* duplicate */
	assert_non_null(strstr(ml_last_error(), "duplicate"));
	assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 64), ML_ERR_INVALID);

	uint8_t a_u8[3] = {1, 2, 255};
	int8_t a_i8[2] = {-1, 5};
	uint16_t a_u16[2] = {1, 65535};
	int16_t a_i16[2] = {-32768, 7};
	uint32_t a_u32[4] = {0, 1, 2, 0xffffffffu};
	int32_t a_i32[2] = {-5, 5};
	uint64_t a_u64[2] = {UINT64_MAX, 3};
	int64_t a_i64[2] = {INT64_MIN, 9};
	float a_f32[3] = {0.5f, -1.0f, 1e30f};
	double a_f64[2] = {1e-300, 2.0};
	uint8_t a_bool[3] = {1, 0, 1};
	assert_int_equal(gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 4), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.empty", GGUF_TYPE_UINT32, NULL, 0), 0);
	const char *strs[3] = {"x", "", "long string here"};
	assert_int_equal(gguf_writer_add_arr_str(w, "a.str", strs, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.bad", GGUF_TYPE_STRING, strs, 3), ML_ERR_INVALID);

	/* nested: [[1,2],[3],[]] of u32, and [[["p","q"]],[]] of strings */
	uint32_t n1[2] = {1, 2}, n2[1] = {3};
	struct gguf_value inner[3] = {
		{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_UINT32, 2, n1, NULL}},
		{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_UINT32, 1, n2, NULL}},
		{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_UINT32, 0, NULL, NULL}},
	};
	struct gguf_value nested = {.type = GGUF_TYPE_ARRAY,
				    .arr = {GGUF_TYPE_ARRAY, 3, NULL, inner}};
	assert_int_equal(gguf_writer_add_value(w, "a.nested", &nested), 0);
	struct gguf_value ss[2] = {{.type = GGUF_TYPE_STRING, .str = {"p", 1}},
				   {.type = GGUF_TYPE_STRING, .str = {"q", 1}}};
	struct gguf_value l2[1] = {{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_STRING, 2, NULL, ss}}};
	struct gguf_value l1[2] = {
		{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 1, NULL, l2}},
		{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 0, NULL, NULL}},
	};
	struct gguf_value deep = {.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 2, NULL, l1}};
	assert_int_equal(gguf_writer_add_value(w, "a.deep", &deep), 0);

	/* tensors: F32 1-D, F16 2-D, Q8_0 3-D, Q4_K 4-D, F32 streamed */
	float t1[5] = {1, 2, 3, 4, 5};
	uint16_t t2[6 * 3];
	for (int i = 0; i < 18; i++)
		t2[i] = (uint16_t)(i * 1000);
	uint64_t ne1[1] = {5}, ne2[2] = {6, 3}, ne3[3] = {64, 2, 2}, ne4[4] = {256, 1, 2, 3};
	unsigned char t3[2 * 34 * 2 * 2], t4[144 * 6];
	for (size_t i = 0; i < sizeof(t3); i++)
		t3[i] = (unsigned char)(i * 7);
	for (size_t i = 0; i < sizeof(t4); i++)
		t4[i] = (unsigned char)(i * 13);
	assert_int_equal(gguf_writer_add_tensor(w, "t.f32", ML_DTYPE_F32, 1, ne1, t1), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "t.f16", ML_DTYPE_F16, 2, ne2, t2), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "t.q8", ML_DTYPE_Q8_0, 3, ne3, t3), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "t.q4k", ML_DTYPE_Q4_K, 4, ne4, t4), 0);
	/* 1024 x 2100 F32 = 8.6 MB: streamed in several chunks */
	static uint64_t big_ne0 = 1024;
	uint64_t ne5[2] = {1024, 2100};
	assert_int_equal(
		gguf_writer_add_tensor_fill(w, "t.big", ML_DTYPE_F32, 2, ne5, fill_rows, &big_ne0), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "t.f32", ML_DTYPE_F32, 1, ne1, t1), ML_ERR_INVALID);
	uint64_t bad[1] = {33};
	assert_int_equal(gguf_writer_add_tensor(w, "t.x", ML_DTYPE_Q8_0, 1, bad, t3), ML_ERR_INVALID);
	assert_int_equal(gguf_writer_n_tensors(w), 5);

	const char *path = tmp_path("roundtrip.gguf");
	assert_int_equal(gguf_writer_write(w, path), 0);
	gguf_writer_free(w);

	struct gguf_file *gf;
	if (gguf_open(&gf, path) != 0)
		fail_msg("%s", ml_last_error());
	assert_int_equal(gguf_version(gf), 3);
	assert_int_equal(gguf_alignment(gf), 64);
	assert_int_equal(gguf_n_kv(gf), 1 + 14 + 13 + 2);
	uint32_t u;
	assert_int_equal(gguf_get_u32(gf, "general.alignment", &u), 0);
	assert_int_equal(u, 64);
	const struct gguf_value *v;
	v = gguf_find(gf, "t.u8");
	assert_int_equal(v->type, GGUF_TYPE_UINT8);
	assert_int_equal(v->u64, 250);
	v = gguf_find(gf, "t.i8");
	assert_int_equal(v->type, GGUF_TYPE_INT8);
	assert_int_equal(v->i64, -100);
	assert_int_equal(gguf_find(gf, "t.u16")->u64, 65000);
	assert_int_equal(gguf_find(gf, "t.i16")->i64, -32000);
	assert_int_equal(gguf_find(gf, "t.u32")->u64, 4000000000u);
	assert_int_equal(gguf_find(gf, "t.i32")->i64, -2000000000);
	assert_true(gguf_find(gf, "t.u64")->u64 == UINT64_MAX - 1);
	assert_true(gguf_find(gf, "t.i64")->i64 == INT64_MIN + 5);
	assert_true(gguf_find(gf, "t.f32")->f64 == 1.5);
	assert_true(gguf_find(gf, "t.f64")->f64 == -2.25e100);
	bool b = false;
	assert_int_equal(gguf_get_bool(gf, "t.bool", &b), 0);
	assert_true(b);
	int32_t i32;
	assert_int_equal(gguf_get_i32(gf, "t.i16", &i32), 0);
	assert_int_equal(i32, -32000);
	assert_int_equal(gguf_get_u32(gf, "t.i8", &u), ML_ERR_RANGE);
	uint64_t u64;
	assert_int_equal(gguf_get_u64(gf, "t.u64", &u64), 0);
	assert_true(u64 == UINT64_MAX - 1);
	assert_int_equal(gguf_get_u64(gf, "t.i64", &u64), ML_ERR_RANGE);
	assert_int_equal(gguf_get_i32(gf, "t.u32", &i32), ML_ERR_RANGE);
	struct gguf_str s;
	assert_int_equal(gguf_get_str(gf, "t.str", &s), 0);
	assert_string_equal(s.ptr, "hello");
	assert_int_equal(gguf_get_str(gf, "t.empty", &s), 0);
	assert_int_equal(s.len, 0);
	assert_string_equal(s.ptr, "");
	assert_int_equal(gguf_get_str(gf, "t.nul", &s), 0);
	assert_int_equal(s.len, 3);
	assert_memory_equal(s.ptr, "a\0b", 4);

	struct {
		const char *key;
		enum gguf_type t;
		const void *data;
		uint64_t n;
		size_t esz;
	} arrs[] = {
		{"a.u8", GGUF_TYPE_UINT8, a_u8, 3, 1},       {"a.i8", GGUF_TYPE_INT8, a_i8, 2, 1},
		{"a.u16", GGUF_TYPE_UINT16, a_u16, 2, 2},    {"a.i16", GGUF_TYPE_INT16, a_i16, 2, 2},
		{"a.u32", GGUF_TYPE_UINT32, a_u32, 4, 4},    {"a.i32", GGUF_TYPE_INT32, a_i32, 2, 4},
		{"a.u64", GGUF_TYPE_UINT64, a_u64, 2, 8},    {"a.i64", GGUF_TYPE_INT64, a_i64, 2, 8},
		{"a.f32", GGUF_TYPE_FLOAT32, a_f32, 3, 4},   {"a.f64", GGUF_TYPE_FLOAT64, a_f64, 2, 8},
		{"a.bool", GGUF_TYPE_BOOL, a_bool, 3, 1},    {"a.empty", GGUF_TYPE_UINT32, NULL, 0, 4},
	};
	for (size_t i = 0; i < sizeof(arrs) / sizeof(arrs[0]); i++) {
		assert_int_equal(gguf_get_arr(gf, arrs[i].key, arrs[i].t, &v), 0);
		assert_int_equal(v->arr.n, arrs[i].n);
		assert_null(v->arr.items);
		if (arrs[i].n)
			assert_memory_equal(v->arr.raw, arrs[i].data, arrs[i].n * arrs[i].esz);
	}
	assert_int_equal(gguf_get_arr(gf, "a.str", GGUF_TYPE_STRING, &v), 0);
	assert_int_equal(v->arr.n, 3);
	assert_string_equal(v->arr.items[0].str.ptr, "x");
	assert_int_equal(v->arr.items[1].str.len, 0);
	assert_string_equal(v->arr.items[2].str.ptr, "long string here");
	assert_int_equal(v->arr.items[2].type, GGUF_TYPE_STRING);

	assert_int_equal(gguf_get_arr(gf, "a.nested", GGUF_TYPE_ARRAY, &v), 0);
	assert_int_equal(v->arr.n, 3);
	assert_int_equal(v->arr.items[0].type, GGUF_TYPE_ARRAY);
	assert_int_equal(v->arr.items[0].arr.elem, GGUF_TYPE_UINT32);
	assert_int_equal(v->arr.items[0].arr.n, 2);
	assert_int_equal(((const uint32_t *)v->arr.items[0].arr.raw)[1], 2);
	assert_int_equal(((const uint32_t *)v->arr.items[1].arr.raw)[0], 3);
	assert_int_equal(v->arr.items[2].arr.n, 0);
	assert_int_equal(gguf_get_arr(gf, "a.deep", GGUF_TYPE_ARRAY, &v), 0);
	assert_int_equal(v->arr.n, 2);
	const struct gguf_value *d1 = &v->arr.items[0];
	assert_int_equal(d1->arr.elem, GGUF_TYPE_ARRAY);
	assert_int_equal(d1->arr.n, 1);
	assert_int_equal(d1->arr.items[0].arr.elem, GGUF_TYPE_STRING);
	assert_string_equal(d1->arr.items[0].arr.items[1].str.ptr, "q");
	assert_int_equal(v->arr.items[1].arr.n, 0);

	assert_int_equal(gguf_n_tensors(gf), 5);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	const struct gguf_tensor *t;
	t = gguf_find_tensor(gf, "t.f32");
	assert_int_equal(t->n_dims, 1);
	assert_memory_equal(t->data, t1, sizeof(t1));
	t = gguf_find_tensor(gf, "t.f16");
	assert_int_equal(t->type, ML_DTYPE_F16);
	assert_int_equal(t->ne[1], 3);
	assert_memory_equal(t->data, t2, sizeof(t2));
	t = gguf_find_tensor(gf, "t.q8");
	assert_int_equal(t->n_dims, 3);
	assert_int_equal(t->n_bytes, sizeof(t3));
	assert_memory_equal(t->data, t3, sizeof(t3));
	t = gguf_find_tensor(gf, "t.q4k");
	assert_int_equal(t->n_dims, 4);
	assert_int_equal(t->ne[3], 3);
	assert_int_equal(t->n_elements, 256 * 6);
	assert_memory_equal(t->data, t4, sizeof(t4));
	t = gguf_find_tensor(gf, "t.big");
	assert_int_equal(t->n_bytes, 1024ull * 2100 * 4);
	const float *fb = t->data;
	for (uint64_t r = 0; r < 2100; r += 7)
		for (uint64_t c = 0; c < 1024; c += 5)
			assert_true(fb[r * 1024 + c] == (float)(r * 3 + c % 7));
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++)
		assert_int_equal(gguf_tensor_at(gf, i)->offset % 64, 0);
	gguf_close(gf);
}

static void test_v2_and_empty(void **state)
{
	(void)state;
	struct gguf_writer *w;
	assert_int_equal(gguf_writer_init(&w), 0);
	assert_int_equal(gguf_writer_set_version(w, 1), ML_ERR_INVALID);
	assert_int_equal(gguf_writer_set_version(w, 2), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	float x[32] = {0};
	uint64_t ne[2] = {32, 1};
	assert_int_equal(gguf_writer_add_tensor(w, "w", ML_DTYPE_F32, 2, ne, x), 0);
	const char *path = tmp_path("v2.gguf");
	assert_int_equal(gguf_writer_write(w, path), 0);
	gguf_writer_free(w);
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, path), 0);
	assert_int_equal(gguf_version(gf), 2);
	assert_int_equal(gguf_n_tensors(gf), 1);
	assert_int_equal(gguf_find_tensor(gf, "w")->n_dims, 2);
	gguf_close(gf);

	/* no metadata, no tensors */
	assert_int_equal(gguf_writer_init(&w), 0);
	path = tmp_path("empty.gguf");
	assert_int_equal(gguf_writer_write(w, path), 0);
	gguf_writer_free(w);
	assert_int_equal(gguf_open(&gf, path), 0);
	assert_int_equal(gguf_n_kv(gf), 0);
	assert_int_equal(gguf_n_tensors(gf), 0);
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	gguf_close(gf);
}

/* ------------------------------------------------------------ split models */

static void test_split(void **state)
{
	(void)state;
	struct gguf_writer *w;
	assert_int_equal(gguf_writer_init(&w), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_u32(w, "llama.block_count", 7), 0);
	static float data[7][64 * 3];
	char names[7][32];
	for (int i = 0; i < 7; i++) {
		for (int j = 0; j < 64 * 3; j++)
			data[i][j] = (float)(i * 1000 + j);
		snprintf(names[i], sizeof(names[i]), "blk.%d.w", i);
		uint64_t ne[2] = {64, 3};
		assert_int_equal(gguf_writer_add_tensor(w, names[i], ML_DTYPE_F32, 2, ne, data[i]), 0);
	}
	assert_int_equal(gguf_writer_write_split(w, tmp_path("sp"), 8), ML_ERR_INVALID);
	assert_int_equal(gguf_writer_write_split(w, tmp_path("sp"), 3), 0);
	gguf_writer_free(w);

	struct gguf_file *gf;
	if (gguf_open(&gf, tmp_path("sp-00001-of-00003.gguf")) != 0)
		fail_msg("%s", ml_last_error());
	assert_int_equal(gguf_n_files(gf), 3);
	assert_int_equal(gguf_n_tensors(gf), 7);
	uint32_t u;
	assert_int_equal(gguf_get_u32(gf, "llama.block_count", &u), 0);
	assert_int_equal(u, 7);
	assert_int_equal(gguf_get_u32(gf, "split.count", &u), 0);
	assert_int_equal(u, 3);
	size_t n0, n1, n2;
	unsigned char *f0 = slurp(tmp_path("sp-00001-of-00003.gguf"), &n0);
	unsigned char *f1 = slurp(tmp_path("sp-00002-of-00003.gguf"), &n1);
	unsigned char *f2 = slurp(tmp_path("sp-00003-of-00003.gguf"), &n2);
	assert_int_equal(gguf_file_size(gf), n0 + n1 + n2);
	/* map only one tensor of part 2, then everything */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 7; i++) {
			const struct gguf_tensor *t = gguf_find_tensor(gf, names[i]);
			assert_non_null(t);
			/* parts hold tensors [7p/3, 7(p+1)/3): 2, 2 and 3 */
			assert_int_equal(t->file, i < 2 ? 0 : i < 4 ? 1 : 2);
			if (pass == 1) {
				const unsigned char *fs[3] = {f0, f1, f2};
				assert_memory_equal(t->data, data[i], sizeof(data[i]));
				assert_memory_equal(t->data, fs[t->file] + t->offset, sizeof(data[i]));
			}
		}
		if (pass == 0) {
			assert_int_equal(gguf_map(gf, NULL, NULL), 0);
		}
	}
	gguf_close(gf);

	/* opening a later part names the first one */
	assert_int_not_equal(gguf_open(&gf, tmp_path("sp-00002-of-00003.gguf")), 0);
	assert_non_null(strstr(ml_last_error(), "first part"));
	/* renamed first part: the file name must say where the others are */
	spit(tmp_path("renamed.gguf"), f0, n0);
	assert_int_not_equal(gguf_open(&gf, tmp_path("renamed.gguf")), 0);
	assert_non_null(strstr(ml_last_error(), "00001-of-00003"));
	/* a missing part */
	assert_int_equal(unlink(tmp_path("sp-00003-of-00003.gguf")), 0);
	assert_int_equal(gguf_open(&gf, tmp_path("sp-00001-of-00003.gguf")), ML_ERR_NOT_FOUND);
	assert_non_null(strstr(ml_last_error(), "sp-00003-of-00003.gguf"));
	/* a part from another split (part 2 where part 3 belongs) */
	spit(tmp_path("sp-00003-of-00003.gguf"), f1, n1);
	assert_int_equal(gguf_open(&gf, tmp_path("sp-00001-of-00003.gguf")), ML_ERR_FORMAT);
	assert_non_null(strstr(ml_last_error(), "split.no"));
	free(f0);
	free(f1);
	free(f2);
}

/* ---------------------------------------------------------- truncation */

/* A small model with several metadata types and tensors. */
static unsigned char *small_model(size_t *n)
{
	struct gguf_writer *w;
	assert_int_equal(gguf_writer_init(&w), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_u32(w, "llama.block_count", 1), 0);
	assert_int_equal(gguf_writer_add_f32(w, "llama.eps", 1e-5f), 0);
	assert_int_equal(gguf_writer_add_bool(w, "b", true), 0);
	const char *toks[4] = {"<unk>", "a", "bc", "def"};
	assert_int_equal(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4), 0);
	int32_t tt[4] = {2, 1, 1, 1};
	assert_int_equal(gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, tt, 4),
			 0);
	uint32_t n1[2] = {1, 2};
	struct gguf_value inner[1] = {{.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_UINT32, 2, n1, NULL}}};
	struct gguf_value nested = {.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 1, NULL, inner}};
	assert_int_equal(gguf_writer_add_value(w, "nested", &nested), 0);
	static unsigned char d[4096];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (unsigned char)(i * 31 + 7);
	uint64_t ne_a[2] = {8, 4}, ne_b[1] = {8}, ne_c[2] = {32, 2}, ne_d[1] = {256};
	assert_int_equal(gguf_writer_add_tensor(w, "a", ML_DTYPE_F32, 2, ne_a, d), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "b", ML_DTYPE_F16, 1, ne_b, d), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "c", ML_DTYPE_Q8_0, 2, ne_c, d), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "d", ML_DTYPE_Q4_K, 1, ne_d, d), 0);
	const char *path = tmp_path("small.gguf");
	assert_int_equal(gguf_writer_write(w, path), 0);
	gguf_writer_free(w);
	return slurp(path, n);
}

static void expect_refused(const char *path, size_t len)
{
	struct gguf_file *gf = (struct gguf_file *)(uintptr_t)1;
	ml_error_clear();
	int rc = gguf_open(&gf, path);
	if (rc == 0)
		fail_msg("truncation at %zu accepted", len);
	assert_null(gf);
	assert_true(strlen(ml_last_error()) > 10);
	assert_non_null(strstr(ml_last_error(), path));
}

static void truncate_all(const char *src_path, size_t header_end, size_t step)
{
	size_t n;
	unsigned char *bytes = slurp(src_path, &n);
	const char *path = tmp_path("trunc.gguf");
	spit(path, bytes, n);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	size_t len = n;
	while (len-- > 0) {
		if (len > header_end && (n - 1 - len) % step != 0 && len % step != 0)
			continue;
		assert_int_equal(ftruncate(fd, (off_t)len), 0);
		expect_refused(path, len);
	}
	close(fd);
	free(bytes);
}

static void test_truncation_small(void **state)
{
	(void)state;
	size_t n;
	unsigned char *b = small_model(&n);
	free(b);
	truncate_all(tmp_path("small.gguf"), n, 1); /* every byte of the file */
}

static void test_truncation_stories(void **state)
{
	(void)state;
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, MODELS "stories260K.gguf"), 0);
	size_t header_end = gguf_tensor_at(gf, 0)->offset; /* data section start */
	gguf_close(gf);
	/* every byte of header, metadata and tensor table, then sample points */
	truncate_all(MODELS "stories260K.gguf", header_end, 4099);
}

/* ------------------------------------------------------- random corruption */

static void check_accepted(struct gguf_file *gf, const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		assert_true(t->offset <= (uint64_t)st.st_size);
		assert_true(t->n_bytes <= (uint64_t)st.st_size - t->offset);
		assert_true(t->n_dims >= 1 && t->n_dims <= 4);
		assert_non_null(ml_dtype_get(t->type));
		assert_ptr_equal(gguf_find_tensor(gf, t->name), t);
	}
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		if (memchr(kv->key.ptr, '\0', kv->key.len) == NULL) /* else not findable by C string */
			assert_ptr_equal(gguf_find(gf, kv->key.ptr), &kv->value);
	}
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	volatile unsigned char sink = 0;
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		const unsigned char *p = t->data;
		sink ^= p[0];
		sink ^= p[t->n_bytes - 1];
	}
	(void)sink;
}

/* Applies |iters| seeded corruptions (a bit flip, a random u64 or a special
 * u64 written at a random position of the first |region| bytes) to a copy of
 * |orig|, one at a time, patching the file in place and restoring it after. */
static void corrupt_many(const unsigned char *orig, size_t n, size_t region, int iters,
			 uint64_t seed)
{
	const char *path = tmp_path("corrupt.gguf");
	spit(path, orig, n);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	struct ml_rng rng;
	ml_rng_seed(&rng, seed);
	int accepted = 0, refused = 0;
	static const uint64_t specials[] = {0, 1, 2, 3, 4, 5, 31, 32, 33, 255, 0x100000000ull,
					    UINT64_MAX, UINT64_MAX - 1, 1ull << 63, 1ull << 62,
					    (1ull << 32) - 1, 1ull << 40, 64 << 20};
	for (int it = 0; it < iters; it++) {
		unsigned char patch[8];
		int kind = (int)(ml_rng_next(&rng) % 3);
		size_t pos = (size_t)(ml_rng_next(&rng) % region);
		size_t k = n - pos < 8 ? n - pos : 8;
		memcpy(patch, orig + pos, k);
		if (kind == 0) {
			patch[0] ^= (unsigned char)(1u << (ml_rng_next(&rng) % 8));
		} else {
			uint64_t v = kind == 1 ? ml_rng_next(&rng)
					       : specials[ml_rng_next(&rng) %
							  (sizeof(specials) / sizeof(specials[0]))];
			memcpy(patch, &v, k);
		}
		assert_int_equal(pwrite(fd, patch, k, (off_t)pos), (ssize_t)k);
		struct gguf_file *gf;
		ml_error_clear();
		if (gguf_open(&gf, path) == 0) {
			check_accepted(gf, path);
			gguf_close(gf);
			accepted++;
		} else {
			if (strlen(ml_last_error()) < 10)
				fail_msg("iteration %d: refused without a message", it);
			refused++;
		}
		assert_int_equal(pwrite(fd, orig + pos, k, (off_t)pos), (ssize_t)k);
	}
	close(fd);
	assert_true(refused > 0);
	print_message("    %d accepted, %d refused\n", accepted, refused);
}

static void test_random_corruption(void **state)
{
	(void)state;
	size_t n;
	unsigned char *b = small_model(&n);
	corrupt_many(b, n, n, 3000, 12345);
	free(b);

	/* stories260K: corrupt only the front (header, vocab, tensor table end at
	 * 14176), keeping the data so that tensors can stay in bounds */
	b = slurp(MODELS "stories260K.gguf", &n);
	corrupt_many(b, n, 14176 + 4096, 1000, 777);
	free(b);
}

/* --------------------------------------------------------- malformed files */

struct bld {
	unsigned char p[8192];
	size_t n;
};

static void b_put(struct bld *b, const void *src, size_t n)
{
	assert_true(b->n + n <= sizeof(b->p));
	memcpy(b->p + b->n, src, n);
	b->n += n;
}
static void b_u32(struct bld *b, uint32_t x) { b_put(b, &x, 4); }
static void b_u64(struct bld *b, uint64_t x) { b_put(b, &x, 8); }
static void b_str(struct bld *b, const char *s)
{
	b_u64(b, strlen(s));
	b_put(b, s, strlen(s));
}
static void b_head(struct bld *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
	b->n = 0;
	b_put(b, "GGUF", 4);
	b_u32(b, version);
	b_u64(b, n_tensors);
	b_u64(b, n_kv);
}
static void b_kv_u32(struct bld *b, const char *key, uint32_t v)
{
	b_str(b, key);
	b_u32(b, GGUF_TYPE_UINT32);
	b_u32(b, v);
}
static void b_tensor(struct bld *b, const char *name, uint32_t n_dims, const uint64_t *ne,
		     uint32_t type, uint64_t offset)
{
	b_str(b, name);
	b_u32(b, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		b_u64(b, ne[i]);
	b_u32(b, type);
	b_u64(b, offset);
}
/* pads to 32 and appends |n| data bytes */
static void b_data(struct bld *b, size_t n)
{
	while (b->n % 32)
		b->p[b->n++] = 0;
	memset(b->p + b->n, 0x5a, n);
	b->n += n;
}

static void expect_msg(const struct bld *b, int code, const char *w1, const char *w2)
{
	const char *path = tmp_path("bad.gguf");
	spit(path, b->p, b->n);
	struct gguf_file *gf;
	ml_error_clear();
	int rc = gguf_open(&gf, path);
	if (rc == 0) {
		gguf_close(gf);
		fail_msg("accepted; expected '%s'", w1);
	}
	if (code != 0)
		assert_int_equal(rc, code);
	if (strstr(ml_last_error(), w1) == NULL || (w2 && strstr(ml_last_error(), w2) == NULL))
		fail_msg("message '%s' lacks '%s' / '%s'", ml_last_error(), w1, w2 ? w2 : "");
}

static void expect_ok(const struct bld *b)
{
	const char *path = tmp_path("good.gguf");
	spit(path, b->p, b->n);
	struct gguf_file *gf;
	if (gguf_open(&gf, path) != 0)
		fail_msg("refused: %s", ml_last_error());
	assert_int_equal(gguf_map(gf, NULL, NULL), 0);
	gguf_close(gf);
}

static void test_malformed(void **state)
{
	(void)state;
	struct bld *b = calloc(1, sizeof(*b));
	uint64_t ne8[1] = {8};

	/* a good baseline first */
	b_head(b, 3, 1, 1);
	b_kv_u32(b, "k", 1);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_ok(b);

	b->n = 0;
	b_put(b, "GGU", 3);
	expect_msg(b, ML_ERR_FORMAT, "magic", NULL);
	b_head(b, 3, 0, 0);
	memcpy(b->p, "GGML", 4);
	expect_msg(b, ML_ERR_FORMAT, "magic", "'GGUF'");
	b_head(b, 1, 0, 0);
	expect_msg(b, ML_ERR_UNSUPPORTED, "version 1", NULL);
	b_head(b, 3u << 24, 0, 0);
	expect_msg(b, ML_ERR_UNSUPPORTED, "big-endian", NULL);
	b_head(b, 4, 0, 0);
	expect_msg(b, ML_ERR_UNSUPPORTED, "version 4", NULL);

	/* counts larger than the file can hold */
	b_head(b, 3, 0, 1ull << 40);
	expect_msg(b, ML_ERR_FORMAT, "metadata count", "bytes left");
	b_head(b, 3, UINT64_MAX, 0);
	expect_msg(b, ML_ERR_FORMAT, "tensor count", NULL);

	/* huge key length / value string length */
	b_head(b, 3, 0, 1);
	b_u64(b, 1ull << 40);
	b_put(b, "abcdefgh", 8);
	expect_msg(b, ML_ERR_FORMAT, "string length", "limit");
	b_head(b, 3, 0, 1);
	b_str(b, "key");
	b_u32(b, GGUF_TYPE_STRING);
	b_u64(b, 1000);
	b_put(b, "short", 5);
	expect_msg(b, ML_ERR_FORMAT, "string length 1000", "left in the file");

	/* huge array count */
	b_head(b, 3, 0, 1);
	b_str(b, "arr");
	b_u32(b, GGUF_TYPE_ARRAY);
	b_u32(b, GGUF_TYPE_UINT32);
	b_u64(b, 1ull << 60);
	b_u32(b, 7);
	expect_msg(b, ML_ERR_FORMAT, "array count", "'arr'");
	b_head(b, 3, 0, 1);
	b_str(b, "arr");
	b_u32(b, GGUF_TYPE_ARRAY);
	b_u32(b, GGUF_TYPE_STRING);
	b_u64(b, 1ull << 33);
	b_str(b, "x");
	expect_msg(b, ML_ERR_FORMAT, "array count", NULL);
	/* unknown element type, unknown value type */
	b_head(b, 3, 0, 1);
	b_str(b, "arr");
	b_u32(b, GGUF_TYPE_ARRAY);
	b_u32(b, 13);
	b_u64(b, 0);
	expect_msg(b, ML_ERR_FORMAT, "unknown array element type 13", NULL);
	b_head(b, 3, 0, 1);
	b_str(b, "v");
	b_u32(b, 77);
	b_u32(b, 0);
	expect_msg(b, ML_ERR_FORMAT, "unknown value type 77", "'v'");
	/* bool not 0/1 */
	b_head(b, 3, 0, 1);
	b_str(b, "flag");
	b_u32(b, GGUF_TYPE_BOOL);
	b_put(b, "\x02", 1);
	expect_msg(b, ML_ERR_FORMAT, "bool", "found 2");
	/* nesting deeper than 8 */
	b_head(b, 3, 0, 1);
	b_str(b, "deep");
	b_u32(b, GGUF_TYPE_ARRAY);
	for (int i = 0; i < 9; i++) {
		b_u32(b, GGUF_TYPE_ARRAY);
		b_u64(b, 1);
	}
	b_u32(b, GGUF_TYPE_UINT8);
	b_u64(b, 0);
	expect_msg(b, ML_ERR_FORMAT, "nested", "limit of 8");
	/* nesting of exactly 8 is fine */
	b_head(b, 3, 0, 1);
	b_str(b, "deep");
	b_u32(b, GGUF_TYPE_ARRAY);
	for (int i = 0; i < 7; i++) {
		b_u32(b, GGUF_TYPE_ARRAY);
		b_u64(b, 1);
	}
	b_u32(b, GGUF_TYPE_UINT8);
	b_u64(b, 0);
	expect_ok(b);

	/* duplicate key */
	b_head(b, 3, 0, 2);
	b_kv_u32(b, "same.key", 1);
	b_kv_u32(b, "same.key", 2);
	expect_msg(b, ML_ERR_FORMAT, "duplicate metadata key", "'same.key'");

	/* alignment: not a power of two, zero, wrong type, fine */
	b_head(b, 3, 0, 1);
	b_kv_u32(b, "general.alignment", 3);
	expect_msg(b, ML_ERR_FORMAT, "alignment", "power of two");
	b_head(b, 3, 0, 1);
	b_kv_u32(b, "general.alignment", 0);
	expect_msg(b, ML_ERR_FORMAT, "alignment", "power of two");
	b_head(b, 3, 0, 1);
	b_str(b, "general.alignment");
	b_u32(b, GGUF_TYPE_FLOAT32);
	b_u32(b, 0x42000000);
	expect_msg(b, ML_ERR_FORMAT, "alignment", "float32");
	/* misaligned tensor offset */
	b_head(b, 3, 2, 1);
	b_kv_u32(b, "general.alignment", 64);
	b_tensor(b, "t0", 1, ne8, ML_DTYPE_F32, 0);
	b_tensor(b, "t1", 1, ne8, ML_DTYPE_F32, 32);
	while (b->n % 64)
		b->p[b->n++] = 0;
	b_data(b, 128);
	expect_msg(b, ML_ERR_FORMAT, "'t1'", "not a multiple of the alignment 64");

	/* n_dims 5 and 0 */
	uint64_t ne5[5] = {1, 1, 1, 1, 1};
	b_head(b, 3, 1, 0);
	b_tensor(b, "five", 5, ne5, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "n_dims 5", "'five'");
	b_head(b, 3, 1, 0);
	b_tensor(b, "zero", 0, ne5, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "n_dims 0", NULL);
	/* ne 0, ne overflow */
	uint64_t ne_zero[2] = {8, 0};
	b_head(b, 3, 1, 0);
	b_tensor(b, "z", 2, ne_zero, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "ne[1] = 0", NULL);
	uint64_t ne_big[3] = {1ull << 32, 1ull << 32, 1ull << 32};
	b_head(b, 3, 1, 0);
	b_tensor(b, "huge", 3, ne_big, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "overflow", "'huge'");
	uint64_t ne_bytes[2] = {1ull << 31, 1ull << 31}; /* 2^62 elements, 2^64 bytes */
	b_head(b, 3, 1, 0);
	b_tensor(b, "huge", 2, ne_bytes, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "overflow", NULL);
	uint64_t ne_neg[1] = {UINT64_MAX};
	b_head(b, 3, 1, 0);
	b_tensor(b, "neg", 1, ne_neg, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "ne[0]", NULL);
	/* unknown type ids (4 was removed from ggml, 40 is past the end) */
	b_head(b, 3, 1, 0);
	b_tensor(b, "q42", 1, ne8, 4, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "unknown tensor type id 4", "'q42'");
	b_head(b, 3, 1, 0);
	b_tensor(b, "t", 1, ne8, 40, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "type id 40", NULL);
	/* row length not a multiple of the block size */
	uint64_t ne33[1] = {33};
	b_head(b, 3, 1, 0);
	b_tensor(b, "q8", 1, ne33, ML_DTYPE_Q8_0, 0);
	b_data(b, 64);
	expect_msg(b, ML_ERR_FORMAT, "block size 32", "'q8'");
	/* data outside the file */
	b_head(b, 3, 1, 0);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, 0);
	b_data(b, 31);
	expect_msg(b, ML_ERR_FORMAT, "outside the file", "'t'");
	b_head(b, 3, 1, 0);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, 1ull << 62);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "outside the file", NULL);
	b_head(b, 3, 1, 0);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, UINT64_MAX - 31);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "", NULL);
	/* duplicate tensor names */
	b_head(b, 3, 2, 0);
	b_tensor(b, "dup", 1, ne8, ML_DTYPE_F32, 0);
	b_tensor(b, "dup", 1, ne8, ML_DTYPE_F32, 32);
	b_data(b, 64);
	expect_msg(b, ML_ERR_FORMAT, "duplicate tensor name", "'dup'");
	/* overlapping data */
	uint64_t ne16[1] = {16};
	b_head(b, 3, 2, 0);
	b_tensor(b, "first", 1, ne16, ML_DTYPE_F32, 0);
	b_tensor(b, "second", 1, ne8, ML_DTYPE_F32, 32);
	b_data(b, 64);
	expect_msg(b, ML_ERR_FORMAT, "overlaps", "'second'");
	/* tensor name with a NUL, over-long name */
	b_head(b, 3, 1, 0);
	b_u64(b, 3);
	b_put(b, "a\0b", 3);
	b_u32(b, 1);
	b_u64(b, 8);
	b_u32(b, ML_DTYPE_F32);
	b_u64(b, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "NUL", NULL);
	b_head(b, 3, 1, 0);
	b_u64(b, 5000);
	b_data(b, 5000);
	expect_msg(b, ML_ERR_FORMAT, "tensor name", "limit");
	/* not a regular file, missing file */
	struct gguf_file *gf;
	assert_int_equal(gguf_open(&gf, tmpdir), ML_ERR_INVALID);
	assert_int_equal(gguf_open(&gf, tmp_path("nope.gguf")), ML_ERR_NOT_FOUND);
	assert_non_null(strstr(ml_last_error(), "nope.gguf"));
	free(b);
}

static void test_split_keys(void **state)
{
	(void)state;
	struct bld *b = calloc(1, sizeof(*b));
	uint64_t ne8[1] = {8};
	/* single file that says it is a 1-part split, with a wrong tensor total */
	b_head(b, 3, 1, 2);
	b_kv_u32(b, "split.count", 1);
	b_kv_u32(b, "split.tensors.count", 5);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_msg(b, ML_ERR_FORMAT, "split.tensors.count", NULL);
	b_head(b, 3, 1, 2);
	b_kv_u32(b, "split.count", 1);
	b_kv_u32(b, "split.tensors.count", 1);
	b_tensor(b, "t", 1, ne8, ML_DTYPE_F32, 0);
	b_data(b, 32);
	expect_ok(b);
	b_head(b, 3, 0, 1);
	b_kv_u32(b, "split.count", 100000);
	expect_msg(b, ML_ERR_FORMAT, "split.count", NULL);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stories260k),
		cmocka_unit_test(test_resident),
		cmocka_unit_test(test_llama2_tiny),
		cmocka_unit_test(test_refdata_models),
		cmocka_unit_test(test_writer_roundtrip),
		cmocka_unit_test(test_v2_and_empty),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_truncation_small),
		cmocka_unit_test(test_truncation_stories),
		cmocka_unit_test(test_random_corruption),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_split_keys),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
