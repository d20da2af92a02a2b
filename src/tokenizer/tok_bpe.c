/* Byte-level BPE encoder (tokenizer.ggml.model = "gpt2"). The text is cut
 * into words by the pre-tokenizer (tok_pre.c); each word's bytes are
 * spelled with GPT-2's byte-to-unicode characters, start as one symbol per
 * byte, and adjacent symbols are merged by merge rank (lowest first, ties
 * leftmost) until no ranked pair is left. With ignore_merges (llama3-style
 * vocabs) a word that is itself a token is emitted whole. Ranks and merge
 * results are looked up by token-id pair, so merging never builds
 * strings. */
#include "tokenizer/tok_heap.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <stdlib.h>
#include <string.h>

struct bpe_sym {
	int32_t id; /* token of this symbol's bytes, -1 if none */
	size_t n;   /* bytes of the word it covers; 0 once merged away */
	int prev, next;
};

struct bpe_ctx {
	const struct tok_vocab *v;
	struct tok_out *o;
	struct bpe_sym *sy;
	size_t sy_cap;
	char *enc; /* the word spelled with byte-to-unicode characters */
	size_t enc_cap;
	struct tok_heap h;
};

static int add_pair(struct bpe_ctx *c, int l, int r)
{
	if (l < 0 || r < 0)
		return 0;
	int32_t res;
	int32_t rank = tok_merge_lookup(c->v, c->sy[l].id, c->sy[r].id, &res);
	if (rank < 0)
		return 0;
	struct tok_bigram b = {.score = -(double)rank, .left = l, .right = r,
			       .size = c->sy[l].n + c->sy[r].n};
	return tok_heap_push(&c->h, b);
}

static int bpe_word(const char *w, size_t n, void *user)
{
	struct bpe_ctx *c = user;
	const struct tok_vocab *v = c->v;
	if (v->ignore_merges) {
		if (n * 2 > c->enc_cap) {
			char *e = realloc(c->enc, n * 2);
			if (!e)
				return ML_ERR_NOMEM;
			c->enc = e;
			c->enc_cap = n * 2;
		}
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char b = (unsigned char)w[i];
			memcpy(c->enc + k, v->byte_utf8[b], v->byte_utf8_len[b]);
			k += v->byte_utf8_len[b];
		}
		int32_t id = tok_vocab_lookup(v, c->enc, k);
		if (id >= 0) {
			tok_out_push(c->o, id);
			return 0;
		}
	}
	if (n > c->sy_cap) {
		struct bpe_sym *s = realloc(c->sy, n * sizeof(*s));
		if (!s)
			return ML_ERR_NOMEM;
		c->sy = s;
		c->sy_cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		c->sy[i].id = v->byte_tok[(unsigned char)w[i]];
		c->sy[i].n = 1;
		c->sy[i].prev = (int)i - 1;
		c->sy[i].next = i + 1 == n ? -1 : (int)i + 1;
	}
	c->h.n = 0;
	int rc = 0;
	for (size_t i = 1; i < n && rc == 0; i++)
		rc = add_pair(c, (int)i - 1, (int)i);
	while (rc == 0 && c->h.n > 0) {
		struct tok_bigram b = tok_heap_pop(&c->h);
		struct bpe_sym *l = &c->sy[b.left], *r = &c->sy[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		int32_t res = -1;
		tok_merge_lookup(v, l->id, r->id, &res);
		l->id = res;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			c->sy[r->next].prev = b.left;
		rc = add_pair(c, l->prev, b.left);
		if (rc == 0)
			rc = add_pair(c, b.left, l->next);
	}
	if (rc != 0)
		return rc;
	size_t off = 0;
	for (int i = 0; i != -1; i = c->sy[i].next) {
		if (c->sy[i].id >= 0) {
			tok_out_push(c->o, c->sy[i].id);
		} else {
			for (size_t j = 0; j < c->sy[i].n; j++) {
				int32_t b = v->byte_tok[(unsigned char)w[off + j]];
				if (b >= 0)
					tok_out_push(c->o, b);
			}
		}
		off += c->sy[i].n;
	}
	return 0;
}

int tok_bpe_encode(const struct tok_vocab *v, const char *text, size_t len, struct tok_out *o)
{
	struct bpe_ctx c = {.v = v, .o = o};
	int rc = tok_pre_split(v->pre, text, len, bpe_word, &c);
	free(c.sy);
	free(c.enc);
	free(c.h.a);
	return rc;
}
