/* Tests for the API's prompt tokenization (src/api/api_backend_eng.c) with
 * the real stories260K vocabulary: BOS is added once, also when a template
 * already wrote it, and special-token text becomes the token. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "gguf/gguf.h"
#include "tokenizer/tok.h"

static struct tok_vocab *load_vocab(void)
{
	struct gguf_file *gf = NULL;
	struct tok_vocab *v = NULL;
	assert_int_equal(gguf_open(&gf, "models/stories260K.gguf"), 0);
	assert_int_equal(tok_vocab_load(&v, gf), 0);
	gguf_close(gf);
	return v;
}

static void test_bos_added_once(void **state)
{
	(void)state;
	struct tok_vocab *v = load_vocab();
	int32_t bos = tok_bos(v);
	assert_true(bos >= 0 && tok_add_bos(v));
	int32_t *a = NULL, *b = NULL, *ref = NULL;
	int na = 0, nb = 0;
	size_t nref = 0;
	const char *text = "Once upon a time";
	assert_int_equal(api_tokenize_prompt(v, text, strlen(text), &a, &na), 0);
	ref = malloc(64 * sizeof(*ref));
	assert_int_equal(tok_encode(v, text, strlen(text), true, true, ref, 64, &nref), 0);
	assert_int_equal(na, (int)nref);
	assert_memory_equal(a, ref, nref * sizeof(*ref));
	assert_int_equal(a[0], bos);

	/* a template that writes the BOS text itself: still one BOS */
	char with_bos[64];
	snprintf(with_bos, sizeof(with_bos), "%s%s", tok_text(v, bos), text);
	assert_int_equal(api_tokenize_prompt(v, with_bos, strlen(with_bos), &b, &nb), 0);
	assert_int_equal(b[0], bos);
	assert_true(nb >= 2 && b[1] != bos);
	free(a);
	free(b);
	free(ref);
	tok_vocab_free(v);
}

static void test_empty_and_long(void **state)
{
	(void)state;
	struct tok_vocab *v = load_vocab();
	int32_t *ids = NULL;
	int n = 0;
	assert_int_equal(api_tokenize_prompt(v, "", 0, &ids, &n), 0);
	assert_int_equal(n, 1); /* just BOS */
	free(ids);
	/* byte-fallback heavy text: more tokens than a naive cap guess */
	size_t len = 5000;
	char *t = malloc(len);
	for (size_t i = 0; i < len; i++)
		t[i] = (char)(0x80 | (i % 0x3f)); /* invalid UTF-8 continuation bytes */
	int rc = api_tokenize_prompt(v, t, len, &ids, &n);
	if (rc == 0) {
		assert_true(n > 0);
		free(ids);
	}
	free(t);
	tok_vocab_free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bos_added_once),
	    cmocka_unit_test(test_empty_and_long),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
