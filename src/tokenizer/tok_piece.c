/* Token -> bytes (tok_piece) and the streaming detokenizer (tok_stream_*).
 *
 * Pieces follow llama.cpp's token_to_piece: CONTROL and UNKNOWN tokens
 * are empty unless |special|, then they give their text as stored, as
 * USER_DEFINED tokens always do; NORMAL tokens are unescaped
 * (SPM/WordPiece: "▁" -> " "; BPE: GPT-2 byte-to-unicode characters back
 * to bytes); SPM BYTE tokens <0xNN> give that byte; UNUSED and UNDEFINED
 * tokens are empty.
 *
 * The stream assembles UTF-8 across pieces: it holds back an incomplete
 * character (at most 3 bytes) until the bytes that finish it arrive, and
 * replaces each invalid sequence (a stray continuation byte, an impossible
 * lead byte, a truncated character) with U+FFFD, one per maximal invalid
 * subpart as the Unicode standard recommends. A piece longer than 512
 * bytes is cut, and output that does not fit |cap| is dropped at a
 * character boundary; with real vocabularies (tokens well under 256
 * bytes) cap >= 256 always suffices, as tok.h promises. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <string.h>

#include "base/ml_err.h"

static const char space_marker[] = "\xe2\x96\x81"; /* U+2581 */

struct sink {
	char *buf;
	size_t cap, n; /* n counts all bytes, even those past cap */
};

static void put(struct sink *s, const char *p, size_t n)
{
	if (s->n < s->cap) {
		size_t k = s->cap - s->n < n ? s->cap - s->n : n;
		memcpy(s->buf + s->n, p, k);
	}
	s->n += n;
}

static int parse_byte_token(const char *t, size_t n)
{
	/* "<0xNN>" */
	if (n != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>')
		return -1;
	int v = 0;
	for (int i = 3; i < 5; i++) {
		char c = t[i];
		int d = (c >= '0' && c <= '9')	 ? c - '0'
			: (c >= 'A' && c <= 'F') ? c - 'A' + 10
			: (c >= 'a' && c <= 'f') ? c - 'a' + 10
						 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

static void piece_to(const struct tok_vocab *v, int32_t id, bool special, struct sink *s)
{
	const char *t = v->blob + v->off[id];
	size_t n = v->len[id];
	switch (v->type[id]) {
	case TOK_TYPE_CONTROL:
	case TOK_TYPE_UNKNOWN:
		if (special)
			put(s, t, n);
		return;
	case TOK_TYPE_USER_DEFINED:
		put(s, t, n);
		return;
	case TOK_TYPE_BYTE: {
		int b = parse_byte_token(t, n);
		if (b >= 0) {
			char c = (char)b;
			put(s, &c, 1);
			return;
		}
		break; /* not <0xNN>: decode like a normal token */
	}
	case TOK_TYPE_NORMAL:
		break;
	default:
		return;
	}
	if (v->model == TOK_MODEL_BPE) {
		const unsigned char *u = (const unsigned char *)t;
		for (size_t i = 0; i < n;) {
			uint32_t cp;
			int l = tok_utf8_decode(u + i, n - i, &cp);
			if (l == 0)
				l = 1;
			else if (cp < 324 && v->cp_byte[cp] >= 0) {
				char c = (char)v->cp_byte[cp];
				put(s, &c, 1);
				i += (size_t)l;
				continue;
			}
			put(s, t + i, (size_t)l);
			i += (size_t)l;
		}
		return;
	}
	/* SPM and WordPiece: "▁" stands for a space */
	size_t start = 0;
	for (size_t i = 0; i + 3 <= n;) {
		if (memcmp(t + i, space_marker, 3) == 0) {
			put(s, t + start, i - start);
			put(s, " ", 1);
			i += 3;
			start = i;
		} else {
			i++;
		}
	}
	put(s, t + start, n - start);
}

int tok_piece(const struct tok_vocab *v, int32_t id, bool special, char *buf, size_t cap)
{
	if (id < 0 || id >= v->n)
		return ML_ERR_INVALID;
	struct sink s = {.buf = buf, .cap = buf ? cap : 0};
	piece_to(v, id, special, &s);
	return s.n > INT32_MAX ? ML_ERR_RANGE : (int)s.n;
}

void tok_stream_init(struct tok_stream *s, const struct tok_vocab *v, bool special)
{
	memset(s, 0, sizeof(*s));
	s->v = v;
	s->special = special;
	s->at_start = true;
}

/* Expected UTF-8 length for a lead byte, 0 if it cannot start a character. */
static int lead_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c >= 0xE0 && c <= 0xEF)
		return 3;
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	return 0;
}

/* May |c| follow the pending bytes? Checks the second-byte ranges that
 * rule out overlong forms, surrogates and code points above U+10FFFF. */
static bool continues(const struct tok_stream *s, unsigned char c)
{
	if ((c & 0xC0) != 0x80)
		return false;
	if (s->n_pending != 1)
		return true;
	switch ((unsigned char)s->pending[0]) {
	case 0xE0:
		return c >= 0xA0;
	case 0xED:
		return c <= 0x9F;
	case 0xF0:
		return c >= 0x90;
	case 0xF4:
		return c <= 0x8F;
	default:
		return true;
	}
}

static void emit_bounded(struct sink *o, const char *p, size_t n)
{
	/* never write a partial character: drop what does not fit */
	if (o->n + n > o->cap)
		return;
	memcpy(o->buf + o->n, p, n);
	o->n += n;
}

static void feed(struct tok_stream *s, const unsigned char *p, size_t n, struct sink *o)
{
	static const char fffd[] = "\xef\xbf\xbd";
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (s->n_pending == 0) {
			int l = lead_len(c);
			if (l == 1)
				emit_bounded(o, (const char *)&c, 1);
			else if (l == 0)
				emit_bounded(o, fffd, 3);
			else
				s->pending[s->n_pending++] = (char)c;
			i++;
			continue;
		}
		if (!continues(s, c)) {
			emit_bounded(o, fffd, 3); /* truncated character; reread c */
			s->n_pending = 0;
			continue;
		}
		s->pending[s->n_pending++] = (char)c;
		i++;
		if (s->n_pending == lead_len((unsigned char)s->pending[0])) {
			emit_bounded(o, s->pending, (size_t)s->n_pending);
			s->n_pending = 0;
		}
	}
}

int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap)
{
	const struct tok_vocab *v = s->v;
	if (id < 0 || id >= v->n)
		return ML_ERR_INVALID;
	char piece[512];
	struct sink ps = {.buf = piece, .cap = sizeof(piece)};
	piece_to(v, id, s->special, &ps);
	size_t n = ps.n < sizeof(piece) ? ps.n : sizeof(piece); /* longer pieces are cut */
	const char *p = piece;
	if (n > 0 && s->at_start && id != v->bos) {
		if (v->add_space_prefix && p[0] == ' ') {
			p++;
			n--;
		}
		s->at_start = false;
	}
	struct sink o = {.buf = out, .cap = cap};
	feed(s, (const unsigned char *)p, n, &o);
	return (int)o.n;
}

int tok_stream_flush(struct tok_stream *s, char *out, size_t cap)
{
	struct sink o = {.buf = out, .cap = cap};
	if (s->n_pending > 0)
		emit_bounded(&o, "\xef\xbf\xbd", 3);
	s->n_pending = 0;
	return (int)o.n;
}
