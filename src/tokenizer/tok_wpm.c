/* WordPiece encoder (tokenizer.ggml.model = "bert"), as llama.cpp does it
 * for BERT-style vocabularies whose word-initial pieces carry a leading
 * "▁" and whose continuation pieces are stored without "##":
 *  - every code point is reduced to the first code point of its NFD form
 *    (this drops accents: "ü" -> "u") and lowercased;
 *  - whitespace ends a word; NUL, U+FFFD, control/format characters and
 *    combining marks (\p{M}, e.g. a separate U+0301) are dropped;
 *    punctuation, ASCII symbols and CJK ideographs become one-character
 *    words;
 *  - each word, prefixed with "▁", is cut greedily into the longest tokens
 *    from the left; a word with a piece that matches nothing becomes the
 *    unknown token. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"

static bool is_cjk(uint32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
	       (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
	       (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
	       (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Greedy longest-match of "▁" + word (|w|, |n| bytes, starting with ▁). */
static void wpm_word(const struct tok_vocab *v, const char *w, size_t n, struct tok_out *o)
{
	size_t start = o->n;
	size_t i = 0;
	bool ok = true;
	while (i < n) {
		size_t j = n - i > (size_t)v->max_len ? i + (size_t)v->max_len : n;
		int32_t id = -1;
		for (; j > i; j--) {
			id = tok_vocab_lookup(v, w + i, j - i);
			if (id >= 0)
				break;
		}
		if (id < 0) {
			ok = false;
			break;
		}
		tok_out_push(o, id);
		i = j;
	}
	if (!ok || o->n == start) {
		o->n = start;
		if (v->unk >= 0)
			tok_out_push(o, v->unk);
	}
}

int tok_wpm_encode(const struct tok_vocab *v, const char *text, size_t len, struct tok_out *o)
{
	/* each code point lowercases into at most 4 bytes; words are < len + 3 + 4 */
	char *w = malloc(len + 8);
	if (!w)
		return ML_ERR_NOMEM;
	memcpy(w, "\xe2\x96\x81", 3);
	size_t wn = 3;
	const unsigned char *s = (const unsigned char *)text;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		int l = tok_utf8_decode(s + i, len - i, &cp);
		if (l == 0) { /* invalid byte: U+FFFD, which is dropped */
			i++;
			continue;
		}
		i += (size_t)l;
		cp = tok_ucd_nfd_base(cp);
		unsigned f = tok_ucd_flags_of(cp);
		if (f & TOK_UCD_WS) {
			if (wn > 3)
				wpm_word(v, w, wn, o);
			wn = 3;
			continue;
		}
		/* combining marks (\p{M}) are dropped too: llama.cpp strips
		 * accents given as separate code points ("e\u0301" -> "e"), and
		 * Mc/Mn signs of Indic scripts likewise */
		if (cp == 0 || cp == 0xFFFD || (f & (TOK_UCD_CONTROL | TOK_UCD_MARK)))
			continue;
		char buf[4];
		int bl = tok_utf8_encode(tok_ucd_tolower(cp), buf);
		if ((f & TOK_UCD_PUNCT) || (cp < 0x7F && (f & TOK_UCD_SYMBOL)) || is_cjk(cp)) {
			if (wn > 3)
				wpm_word(v, w, wn, o);
			memcpy(w + 3, buf, (size_t)bl);
			wpm_word(v, w, 3 + (size_t)bl, o);
			wn = 3;
		} else {
			/* a lowercase form can be longer than the original (rare) */
			if (wn + (size_t)bl > len + 7) {
				wpm_word(v, w, wn, o);
				wn = 3;
			}
			memcpy(w + wn, buf, (size_t)bl);
			wn += (size_t)bl;
		}
	}
	if (wn > 3)
		wpm_word(v, w, wn, o);
	free(w);
	return 0;
}
