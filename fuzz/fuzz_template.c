/* libFuzzer target for the chat template interpreter: parses the input as
 * a template and renders it against a fixed conversation. Parsing and
 * rendering must either succeed or return an error code with a message;
 * the output must be bounded and its reported length exact. */
#include "base/ml_err.h"
#include "tokenizer/tok_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct tok_chat_msg conv[] = {
	{"system", "You are {{ helpful }}."},
	{"user", "Hi \xc3\xa9 <think>"},
	{"assistant", "<think>\nhmm\n</think>\n\nHello"},
	{"user", "  bye\n"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *src = malloc(size + 1);
	if (!src)
		return 0;
	memcpy(src, data, size);
	src[size] = 0;
	struct tok_template *t = NULL;
	int rc = tok_template_parse(&t, src);
	if (rc == 0) {
		tok_template_set_date(t, 2024, 7, 26);
		for (int agp = 0; agp < 2; agp++) {
			char *out = NULL;
			size_t n = 0;
			rc = tok_template_render(t, conv, 4, agp, "<s>", "</s>", &out, &n);
			if (rc == 0) {
				if (!out || n > (16u << 20) || out[n] != 0)
					abort();
			} else if (rc > 0 || out || ml_last_error()[0] == 0) {
				abort();
			}
			free(out);
		}
		tok_template_free(t);
	} else if (rc > 0 || t || ml_last_error()[0] == 0) {
		abort();
	}
	free(src);
	return 0;
}
