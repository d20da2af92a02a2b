/* SentencePiece-style encoder (tokenizer.ggml.model = "llama"): spaces
 * become U+2581 "▁" (plus one leading "▁" when the caller asks for the
 * space prefix), the text starts as one symbol per UTF-8 character, and
 * adjacent symbols whose concatenation is a token are merged, highest
 * token score first (ties: leftmost). Symbols left that are not tokens
 * fall back to their bytes as <0xNN> tokens. */
#include "tokenizer/tok_heap.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <stdlib.h>
#include <string.h>

struct spm_sym {
	size_t off; /* into the escaped text */
	size_t n;   /* 0 once merged into its left neighbour */
	int prev, next;
};

static int try_bigram(const struct tok_vocab *v, const char *t, const struct spm_sym *sy,
		      struct tok_heap *h, int l, int r)
{
	if (l < 0 || r < 0)
		return 0;
	size_t size = sy[l].n + sy[r].n;
	int32_t id = tok_vocab_lookup(v, t + sy[l].off, size);
	if (id < 0)
		return 0;
	struct tok_bigram b = {.score = v->score[id], .left = l, .right = r, .size = size};
	return tok_heap_push(h, b);
}

int tok_spm_encode(const struct tok_vocab *v, const char *text, size_t len, bool space_prefix,
		   struct tok_out *o)
{
	size_t n_sp = 0;
	for (size_t i = 0; i < len; i++)
		n_sp += text[i] == ' ';
	/* each space becomes the 3-byte "▁"; the prefix adds one more */
	size_t tlen = len + 2 * n_sp + (space_prefix ? 3 : 0);
	char *t = malloc(tlen + 1);
	struct spm_sym *sy = malloc(sizeof(*sy) * (tlen + 1));
	struct tok_heap h = {0};
	int rc = 0;
	if (!t || !sy) {
		rc = ML_ERR_NOMEM;
		goto out;
	}
	size_t k = 0;
	if (space_prefix) {
		memcpy(t, "\xe2\x96\x81", 3);
		k = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(t + k, "\xe2\x96\x81", 3);
			k += 3;
		} else {
			t[k++] = text[i];
		}
	}
	int ns = 0;
	for (size_t off = 0; off < tlen;) {
		size_t l = (size_t)tok_utf8_len((unsigned char)t[off]);
		if (l > tlen - off)
			l = tlen - off;
		sy[ns].off = off;
		sy[ns].n = l;
		sy[ns].prev = ns - 1;
		off += l;
		sy[ns].next = off == tlen ? -1 : ns + 1;
		ns++;
	}
	for (int i = 1; i < ns && rc == 0; i++)
		rc = try_bigram(v, t, sy, &h, i - 1, i);
	while (rc == 0 && h.n > 0) {
		struct tok_bigram b = tok_heap_pop(&h);
		struct spm_sym *l = &sy[b.left], *r = &sy[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			sy[r->next].prev = b.left;
		rc = try_bigram(v, t, sy, &h, l->prev, b.left);
		if (rc == 0)
			rc = try_bigram(v, t, sy, &h, b.left, l->next);
	}
	if (rc != 0 || ns == 0)
		goto out;
	for (int i = 0; i != -1; i = sy[i].next) {
		int32_t id = tok_vocab_lookup(v, t + sy[i].off, sy[i].n);
		if (id >= 0) {
			tok_out_push(o, id);
			continue;
		}
		for (size_t j = 0; j < sy[i].n; j++) {
			int32_t b = v->byte_tok[(unsigned char)t[sy[i].off + j]];
			if (b < 0)
				b = v->unk;
			if (b >= 0)
				tok_out_push(o, b);
		}
	}
out:
	free(h.a);
	free(sy);
	free(t);
	return rc;
}
