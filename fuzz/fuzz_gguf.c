/* libFuzzer target for the GGUF reader: the input becomes the contents of a
 * memfd, opened through /proc/self/fd/N like any model file; everything the
 * reader returns is walked, all tensors are mapped and their first and last
 * bytes read. Crashes, sanitizer reports and leaks are the failures. */
#include "base/ml_err.h"
#include "base/ml_log.h"
#include "gguf/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile unsigned sink;

static void walk_value(const struct gguf_value *v)
{
	switch (v->type) {
	case GGUF_TYPE_STRING:
		if (v->str.len > 0)
			sink += (unsigned char)v->str.ptr[0] + (unsigned char)v->str.ptr[v->str.len - 1];
		sink += (unsigned char)v->str.ptr[v->str.len]; /* the NUL after it */
		break;
	case GGUF_TYPE_ARRAY:
		if (v->arr.items != NULL)
			for (uint64_t i = 0; i < v->arr.n; i++)
				walk_value(&v->arr.items[i]);
		else if (v->arr.n > 0)
			sink += ((const unsigned char *)v->arr.raw)[0];
		break;
	default: sink += (unsigned)v->u64; break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		ml_log_set_level(ML_LOG_NONE);
		fd = memfd_create("fuzz_gguf", MFD_CLOEXEC);
		if (fd < 0)
			return 0;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size))
		return 0;

	struct gguf_file *gf;
	if (gguf_open(&gf, path) != 0) {
		if (ml_last_error()[0] == '\0')
			__builtin_trap(); /* every refusal must say why */
		return 0;
	}
	for (uint64_t i = 0; i < gguf_n_kv(gf); i++) {
		const struct gguf_kv *kv = gguf_kv_at(gf, i);
		walk_value(&kv->value);
		if (memchr(kv->key.ptr, '\0', kv->key.len) == NULL && gguf_find(gf, kv->key.ptr) != &kv->value)
			__builtin_trap();
	}
	uint32_t u;
	int32_t s;
	uint64_t u64;
	float f;
	bool b;
	struct gguf_str str;
	const struct gguf_value *arr;
	gguf_get_u32(gf, "general.alignment", &u);
	gguf_get_i32(gf, "llama.block_count", &s);
	gguf_get_u64(gf, "general.file_type", &u64);
	gguf_get_f32(gf, "llama.attention.layer_norm_rms_epsilon", &f);
	gguf_get_bool(gf, "tokenizer.ggml.add_bos_token", &b);
	gguf_get_str(gf, "general.architecture", &str);
	gguf_get_arr(gf, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &arr);
	for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
		const struct gguf_tensor *t = gguf_tensor_at(gf, i);
		if (t->offset > size || t->n_bytes > size - t->offset || gguf_find_tensor(gf, t->name) != t)
			__builtin_trap();
	}
	if (gguf_map(gf, NULL, NULL) == 0) {
		for (uint64_t i = 0; i < gguf_n_tensors(gf); i++) {
			const struct gguf_tensor *t = gguf_tensor_at(gf, i);
			const unsigned char *p = t->data;
			sink += p[0] + p[t->n_bytes - 1];
		}
	}
	gguf_close(gf);
	return 0;
}
