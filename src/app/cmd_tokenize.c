/* `mesh-llm tokenize --model FILE [--no-bos] [--parse-special] [--file F]`:
 * prints the token ids of a text, space-separated on one line.
 *
 * The text is the whole of F, or of stdin when --file is absent, used
 * exactly as given: bytes as-is, nothing trimmed (a trailing newline is
 * part of the text and is tokenized). BOS/EOS are added as the model's
 * metadata says unless --no-bos; --parse-special turns text that spells a
 * control token (e.g. "<|im_start|>") into that token. Only the model's
 * metadata is read, never its weights. Exit codes: 0 ok, 1 bad model or
 * input file, 2 bad usage. */
#include "app/app.h"

#include "base/ml_err.h"
#include "gguf/gguf.h"
#include "tokenizer/tok.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZE_MAX_INPUT ((size_t)1 << 30) /* 1 GiB */

static void usage(FILE *f)
{
	fprintf(f, "usage: mesh-llm tokenize --model FILE [--no-bos] [--parse-special] [--file F]\n\n"
		   "Prints the token ids of the text in F (or of stdin, read to its end),\n"
		   "space-separated on one line. The text is used exactly as given: no\n"
		   "trailing newline is stripped.\n\n"
		   "  --model FILE      GGUF model (only its tokenizer metadata is read)\n"
		   "  --no-bos          do not add BOS/EOS (default: as the model's metadata says)\n"
		   "  --parse-special   text spelling a control token becomes that token\n"
		   "  --file F          read the text from F instead of stdin\n"
		   "  --help            show this help\n");
}

/* Reads all of |f| into a malloc'd buffer. 0 or ML_ERR_IO / ML_ERR_NOMEM /
 * ML_ERR_RANGE. */
static int read_all(FILE *f, char **out, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *b = malloc(cap);
	if (!b)
		return ML_ERR_NOMEM;
	for (;;) {
		if (n == cap) {
			if (cap >= TOKENIZE_MAX_INPUT) {
				free(b);
				return ML_ERR_RANGE;
			}
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return ML_ERR_NOMEM;
			}
			b = nb;
			cap *= 2;
		}
		size_t r = fread(b + n, 1, cap - n, f);
		n += r;
		if (r == 0) {
			if (ferror(f)) {
				free(b);
				return ML_ERR_IO;
			}
			break;
		}
	}
	*out = b;
	*len = n;
	return 0;
}

int app_cmd_tokenize(int argc, char **argv)
{
	const char *model = NULL, *file = NULL;
	bool add_special = true, parse_special = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--no-bos") == 0) {
			add_special = false;
		} else if (strcmp(a, "--parse-special") == 0) {
			parse_special = true;
		} else if (strcmp(a, "--model") == 0 || strcmp(a, "-m") == 0 ||
			   strcmp(a, "--file") == 0 || strcmp(a, "-f") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "mesh-llm tokenize: option '%s' needs a value\n\n", a);
				usage(stderr);
				return 2;
			}
			if (strcmp(a, "--model") == 0 || strcmp(a, "-m") == 0)
				model = argv[++i];
			else
				file = argv[++i];
		} else {
			fprintf(stderr, "mesh-llm tokenize: unknown option '%s'\n\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!model) {
		fprintf(stderr, "mesh-llm tokenize: --model is required\n\n");
		usage(stderr);
		return 2;
	}

	char *text = NULL;
	size_t len = 0;
	FILE *in = stdin;
	if (file) {
		in = fopen(file, "rb");
		if (!in) {
			fprintf(stderr, "mesh-llm tokenize: cannot open '%s': %s\n", file,
				strerror(errno));
			return 1;
		}
	}
	int rc = read_all(in, &text, &len);
	if (file)
		fclose(in);
	if (rc != 0) {
		fprintf(stderr, "mesh-llm tokenize: cannot read %s: %s\n", file ? file : "stdin",
			ml_strerror(rc));
		return 1;
	}

	struct gguf_file *gf = NULL;
	struct tok_vocab *v = NULL;
	int32_t *ids = NULL;
	int ret = 1;
	rc = gguf_open(&gf, model);
	if (rc == 0) {
		rc = tok_vocab_load(&v, gf);
		gguf_close(gf);
	}
	if (rc != 0) {
		const char *msg = ml_last_error();
		fprintf(stderr, "mesh-llm tokenize: %s: %s%s%s\n", model, ml_strerror(rc),
			*msg ? ": " : "", msg);
		goto out;
	}
	size_t cap = len + 16, n = 0;
	ids = malloc(cap * sizeof(int32_t));
	if (!ids)
		goto nomem;
	rc = tok_encode(v, text, len, add_special, parse_special, ids, cap, &n);
	if (rc == ML_ERR_RANGE) {
		free(ids);
		cap = n;
		ids = malloc(cap * sizeof(int32_t));
		if (!ids)
			goto nomem;
		rc = tok_encode(v, text, len, add_special, parse_special, ids, cap, &n);
	}
	if (rc != 0) {
		fprintf(stderr, "mesh-llm tokenize: %s\n", ml_strerror(rc));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		printf(i ? " %d" : "%d", ids[i]);
	printf("\n");
	ret = fflush(stdout) == 0 ? 0 : 1;
	goto out;
nomem:
	fprintf(stderr, "mesh-llm tokenize: out of memory\n");
out:
	free(ids);
	tok_vocab_free(v);
	free(text);
	return ret;
}
