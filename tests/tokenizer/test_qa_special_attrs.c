/* QA regressions against llama.cpp (node-llama-cpp 3.22.1's build, vocab-only
 * load, llama_tokenize with add_special off) on the vocab files in
 * ../shared/tokenizer, for cases the .inp/.out vectors do not cover:
 *  - Phi-3 (general.name "Phi3"): llama.cpp gives every special token but
 *    <unk>, <s>, <|endoftext|> the RSTRIP attribute, so the whitespace
 *    after <|user|>, <|end|>, </s> ... is swallowed;
 *  - "</s>" is on llama.cpp's end-of-generation list by its text, and a
 *    token found there that is not CONTROL becomes CONTROL: Phi-3's
 *    USER_DEFINED </s> is then not matched with parse_special off, and the
 *    qwen2 vocab's NORMAL </s> (id 128247) is matched with it on.
 *  - WordPiece (bert-bge): combining marks given as separate code points
 *    (\p{M}: "e\u0301", Devanagari vowel signs and virama) are dropped.
 * Expected ids are llama.cpp's output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "gguf/gguf.h"
#include "tokenizer/tok.h"

static const char *shared_dir(void)
{
	static char dir[512];
	const char *env = getenv("MESH_LLM_SHARED");
	const char *cands[] = {env, "../shared", "/work/shared"};
	for (size_t i = 0; i < 3; i++) {
		struct stat st;
		char p[600];
		if (!cands[i])
			continue;
		snprintf(p, sizeof(p), "%s/tokenizer", cands[i]);
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
			snprintf(dir, sizeof(dir), "%s", cands[i]);
			return dir;
		}
	}
	return NULL;
}

struct vocab {
	struct gguf_file *gf;
	struct tok_vocab *v;
};

static int open_vocab(struct vocab *x, const char *name)
{
	const char *d = shared_dir();
	char p[700];
	if (!d)
		return -1;
	snprintf(p, sizeof(p), "%s/tokenizer/%s", d, name);
	if (gguf_open(&x->gf, p) != 0)
		return -1;
	assert_int_equal(tok_vocab_load(&x->v, x->gf), 0);
	return 0;
}

static void close_vocab(struct vocab *x)
{
	tok_vocab_free(x->v);
	gguf_close(x->gf);
}

static void check(const struct tok_vocab *v, const char *text, bool parse_special,
                  const int32_t *want, size_t n_want)
{
	int32_t ids[64];
	size_t n = 0;
	assert_int_equal(tok_encode(v, text, strlen(text), false, parse_special, ids, 64, &n), 0);
	if (n != n_want || memcmp(ids, want, n * sizeof(int32_t)) != 0) {
		fprintf(stderr, "text '%s' parse_special %d: got", text, parse_special);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %d", ids[i]);
		fprintf(stderr, ", llama.cpp gives");
		for (size_t i = 0; i < n_want; i++)
			fprintf(stderr, " %d", want[i]);
		fprintf(stderr, "\n");
		fail();
	}
}

#define CHECK(v, text, ps, ...)                                                                    \
	do {                                                                                       \
		const int32_t w_[] = {__VA_ARGS__};                                                \
		check((v), (text), (ps), w_, sizeof(w_) / sizeof(w_[0]));                          \
	} while (0)

static void test_phi3_rstrip_and_eos_text(void **state)
{
	(void)state;
	struct vocab x;
	if (open_vocab(&x, "ggml-vocab-phi-3.gguf") != 0)
		skip();
	CHECK(x.v, "<|user|>\nhi<|end|>", true, 32010, 7251, 32007);
	CHECK(x.v, "</s>", false, 1533, 29879, 29958);
	CHECK(x.v, "<s> hello </s>", false, 529, 29879, 29958, 22172, 1533, 29879, 29958);
	assert_true(tok_is_eog(x.v, 2));
	close_vocab(&x);
}

static void test_qwen2_normal_eos_text_becomes_control(void **state)
{
	(void)state;
	struct vocab x;
	if (open_vocab(&x, "ggml-vocab-qwen2.gguf") != 0)
		skip();
	CHECK(x.v, "</s>", true, 128247);
	CHECK(x.v, "<s> hello </s>", true, 44047, 29, 23811, 220, 128247);
	CHECK(x.v, "</s>", false, 522, 82, 29);
	close_vocab(&x);
}

static void test_bert_drops_combining_marks(void **state)
{
	(void)state;
	struct vocab x;
	if (open_vocab(&x, "ggml-vocab-bert-bge.gguf") != 0)
		skip();
	CHECK(x.v, "e\xcc\x81 (NFD) vs \xc3\xa9", false, 1041, 1006, 1050, 2546, 2094, 1007, 5443,
	      1041);
	/* "हिन्दी पाठ" */
	CHECK(x.v,
	      "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80 "
	      "\xe0\xa4\xaa\xe0\xa4\xbe\xe0\xa4\xa0",
	      false, 1339, 29863, 29861, 100);
	CHECK(x.v, "n\xcc\x83o", false, 2053);
	close_vocab(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_phi3_rstrip_and_eos_text),
	    cmocka_unit_test(test_qwen2_normal_eos_text_becomes_control),
	    cmocka_unit_test(test_bert_drops_combining_marks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
