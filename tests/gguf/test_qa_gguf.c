/* QA regressions for the GGUF reader:
 *  - general.alignment below 8 (1, 2, 4) is refused with a message naming
 *    the key: the GGUF spec asks for a multiple of 8, llama.cpp cannot load
 *    such a file, and quantized blocks / floats would sit at misaligned
 *    addresses (UBSan flagged the dequantizers on a file written with
 *    alignment 1 before the reader refused it); 8 and 64 still load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/ml_dtype.h"
#include "base/ml_err.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"

static int write_with_alignment(const char *path, uint32_t alignment)
{
	struct gguf_writer *w = NULL;
	static uint8_t q[18 * 3]; /* three Q4_0 blocks: 18 bytes each, an odd tensor size */
	static float f[4] = {1, 2, 3, 4};
	const uint64_t ne_q[1] = {96}, ne_f[1] = {4};
	assert_int_equal(gguf_writer_init(&w), 0);
	assert_int_equal(gguf_writer_set_alignment(w, alignment), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "q", ML_DTYPE_Q4_0, 1, ne_q, q), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "f", ML_DTYPE_F32, 1, ne_f, f), 0);
	int rc = gguf_writer_write(w, path);
	gguf_writer_free(w);
	return rc;
}

static void test_alignment_below_8_refused(void **state)
{
	(void)state;
	char path[] = "/tmp/test_qa_gguf_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	const uint32_t bad[] = {1, 2, 4};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(write_with_alignment(path, bad[i]), 0);
		struct gguf_file *gf = NULL;
		assert_int_equal(gguf_open(&gf, path), ML_ERR_FORMAT);
		assert_null(gf);
		assert_non_null(strstr(ml_last_error(), "general.alignment"));
	}
	const uint32_t good[] = {8, 64};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(write_with_alignment(path, good[i]), 0);
		struct gguf_file *gf = NULL;
		assert_int_equal(gguf_open(&gf, path), 0);
		assert_int_equal(gguf_alignment(gf), good[i]);
		assert_int_equal(gguf_map(gf, NULL, NULL), 0);
		const struct gguf_tensor *t = gguf_find_tensor(gf, "f");
		assert_non_null(t);
		assert_int_equal((uintptr_t)t->data % 8, 0);
		gguf_close(gf);
	}
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_alignment_below_8_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
