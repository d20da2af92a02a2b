/* tok_encode: special-token partitioning, then the model's encoder on each
 * piece of plain text, with BOS/EOS added per the vocabulary's rules.
 *
 * Partitioning follows llama.cpp: the special tokens (CONTROL,
 * USER_DEFINED, UNKNOWN) are taken longest text first, and each one claims
 * every occurrence of its text in what is still plain text. CONTROL and
 * UNKNOWN tokens are only matched when parse_special is on; USER_DEFINED
 * tokens always are (as in llama.cpp). A byte trie first finds which
 * special tokens occur at all, so long texts and big special sets stay
 * cheap.
 *
 * Invalid UTF-8 in the text is replaced by U+FFFD for BPE (as llama.cpp
 * does) and dropped by WordPiece; SentencePiece encodes the raw bytes with
 * byte fallback. So tok_encode never fails on invalid UTF-8. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"

struct frag {
	int32_t id; /* special token, or -1 for plain text */
	size_t off, len;
};

struct frags {
	struct frag *a;
	size_t n, cap;
};

static int frag_push(struct frags *f, int32_t id, size_t off, size_t len)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 16;
		struct frag *a = realloc(f->a, cap * sizeof(*a));
		if (!a)
			return ML_ERR_NOMEM;
		f->a = a;
		f->cap = cap;
	}
	f->a[f->n++] = (struct frag){id, off, len};
	return 0;
}

/* C isspace() in the "C" locale, as llama.cpp's strip uses */
static bool is_ascii_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool special_allowed(const struct tok_vocab *v, int32_t id, bool parse_special)
{
	return parse_special || v->type[id] == TOK_TYPE_USER_DEFINED;
}

/* Marks in |seen| (n_specials bytes) the allowed specials whose text
 * occurs in |text|. Returns how many were found. */
static int find_occurring(const struct tok_vocab *v, const char *text, size_t len,
			  bool parse_special, uint8_t *seen)
{
	const unsigned char *s = (const unsigned char *)text;
	const struct tok_trie_node *t = v->trie;
	int found = 0;
	for (size_t i = 0; i < len; i++) {
		int32_t node = 0;
		for (size_t k = i; k < len; k++) {
			int32_t c = t[node].child;
			while (c >= 0 && t[c].byte != s[k])
				c = t[c].sibling;
			if (c < 0)
				break;
			node = c;
			int32_t si = t[node].sidx;
			if (si >= 0 && !seen[si] &&
			    special_allowed(v, v->specials[si], parse_special)) {
				seen[si] = 1;
				found++;
			}
		}
	}
	return found;
}

static int partition(const struct tok_vocab *v, const char *text, size_t len, bool parse_special,
		     struct frags *out)
{
	out->n = 0;
	if (len == 0)
		return 0;
	int rc = frag_push(out, -1, 0, len);
	if (rc != 0 || v->n_specials == 0)
		return rc;
	uint8_t *seen = calloc((size_t)v->n_specials, 1);
	if (!seen)
		return ML_ERR_NOMEM;
	struct frags tmp = {0};
	if (find_occurring(v, text, len, parse_special, seen) == 0)
		goto done;
	for (int si = 0; si < v->n_specials && rc == 0; si++) {
		if (!seen[si])
			continue;
		int32_t id = v->specials[si];
		const char *tt = v->blob + v->off[id];
		size_t tl = v->len[id];
		tmp.n = 0;
		for (size_t f = 0; f < out->n && rc == 0; f++) {
			struct frag fr = out->a[f];
			if (fr.id >= 0) {
				rc = frag_push(&tmp, fr.id, fr.off, fr.len);
				continue;
			}
			size_t pos = fr.off, end = fr.off + fr.len;
			while (rc == 0 && pos < end) {
				const char *hit = memmem(text + pos, end - pos, tt, tl);
				if (!hit)
					break;
				size_t h = (size_t)(hit - text), left = h;
				/* llama.cpp's LSTRIP/RSTRIP attributes (e.g. Phi-3's
				 * specials swallow the whitespace after them) */
				if (v->strip[id] & TOK_STRIP_L)
					while (left > pos && is_ascii_space(text[left - 1]))
						left--;
				if (left > pos)
					rc = frag_push(&tmp, -1, pos, left - pos);
				if (rc == 0)
					rc = frag_push(&tmp, id, h, tl);
				pos = h + tl;
				if (v->strip[id] & TOK_STRIP_R)
					while (pos < end && is_ascii_space(text[pos]))
						pos++;
			}
			if (rc == 0 && pos < end)
				rc = frag_push(&tmp, -1, pos, end - pos);
		}
		struct frags sw = *out;
		*out = tmp;
		tmp = sw;
	}
done:
	free(tmp.a);
	free(seen);
	return rc;
}

/* Copies |text| with every invalid UTF-8 sequence replaced by U+FFFD.
 * *out is NULL when the text was valid (use it as is). */
static int sanitize_utf8(const char *text, size_t len, char **out, size_t *out_len)
{
	*out = NULL;
	if (tok_utf8_valid(text, len))
		return 0;
	char *b = malloc(len * 3 + 1);
	if (!b)
		return ML_ERR_NOMEM;
	const unsigned char *s = (const unsigned char *)text;
	size_t k = 0;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		int l = tok_utf8_decode(s + i, len - i, &cp);
		if (l == 0) {
			memcpy(b + k, "\xef\xbf\xbd", 3);
			k += 3;
			i++;
		} else {
			memcpy(b + k, s + i, (size_t)l);
			k += (size_t)l;
			i += (size_t)l;
		}
	}
	*out = b;
	*out_len = k;
	return 0;
}

static int encode_raw(const struct tok_vocab *v, const char *text, size_t len, bool space_prefix,
		      struct tok_out *o)
{
	switch (v->model) {
	case TOK_MODEL_SPM:
		return tok_spm_encode(v, text, len, space_prefix, o);
	case TOK_MODEL_BPE: {
		char *clean;
		size_t clen = 0;
		int rc = sanitize_utf8(text, len, &clean, &clen);
		if (rc != 0)
			return rc;
		rc = clean ? tok_bpe_encode(v, clean, clen, o) : tok_bpe_encode(v, text, len, o);
		free(clean);
		return rc;
	}
	case TOK_MODEL_WPM:
		return tok_wpm_encode(v, text, len, o);
	}
	return ML_ERR_UNSUPPORTED;
}

int tok_encode(const struct tok_vocab *v, const char *text, size_t len, bool add_special,
	       bool parse_special, int32_t *out, size_t cap, size_t *n_out)
{
	struct tok_out o = {.ids = out, .cap = out ? cap : 0, .n = 0};
	struct frags fr = {0};
	*n_out = 0;
	int rc = partition(v, text, len, parse_special, &fr);
	if (rc != 0)
		goto done;
	if (add_special && v->add_bos)
		tok_out_push(&o, v->bos);
	/* SPM: the space prefix goes before the first piece of text and after
	 * each special token (llama.cpp's "is_prev_special"). */
	bool prev_special = true;
	for (size_t i = 0; i < fr.n && rc == 0; i++) {
		if (fr.a[i].id >= 0) {
			tok_out_push(&o, fr.a[i].id);
			prev_special = true;
			continue;
		}
		rc = encode_raw(v, text + fr.a[i].off, fr.a[i].len,
				v->add_space_prefix && prev_special, &o);
		prev_special = false;
	}
	if (rc != 0)
		goto done;
	if (add_special && v->model == TOK_MODEL_WPM && v->add_sep)
		tok_out_push(&o, v->sep);
	else if (add_special && v->add_eos)
		tok_out_push(&o, v->eos);
	*n_out = o.n;
	if (o.n > o.cap)
		rc = ML_ERR_RANGE;
done:
	free(fr.a);
	return rc;
}
