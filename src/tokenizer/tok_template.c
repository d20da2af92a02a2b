/* Chat templates: a small Jinja interpreter (lexer, parser to an AST,
 * tree-walking evaluator) that renders the chat templates models ship in
 * their GGUF files, byte for byte as Hugging Face transformers renders them
 * with Python's jinja2.
 *
 * The environment matched is the one transformers' apply_chat_template
 * builds: an ImmutableSandboxedEnvironment with trim_blocks=True,
 * lstrip_blocks=True, keep_trailing_newline=False, the loopcontrols
 * extension (break/continue), default (lenient) Undefined, and the globals
 * raise_exception() and strftime_now(), plus a tojson filter that is
 * json.dumps(ensure_ascii=False) without HTML escaping. `tools` and
 * `documents` are left undefined.
 *
 * Templates are untrusted (they come from GGUF files), so every resource is
 * bounded: parse nesting, macro recursion, loop iterations, output size and
 * the memory a render may use. Errors unwind with longjmp to the public
 * entry points; all memory of a parse or render lives in one arena, so
 * nothing leaks on the way out.
 *
 * Supported: {{ }}, {% %}, {# #}, whitespace control, raw, if/elif/else,
 * for (else, filters, unpacking, loop.*, break/continue), set (also
 * namespace attributes and set blocks), macro, call and filter blocks, the
 * expression grammar with jinja2's precedence, Python-like values and
 * operators (str % args too), the common filters, tests and str/dict/list
 * methods. The output was checked byte for byte against jinja2 on the real
 * templates in ../shared/templates and on random templates.
 *
 * Known differences from Python: integers are 64-bit (overflow is an
 * error); case mapping is one to one (no 'ß' -> 'SS'); filters jinja2
 * returns as generators (map, select, unique...) are lists; errors that
 * jinja2 folds away at compile time (subscripting a literal number) are
 * errors here; unknown filters and tests are errors when reached, not at
 * parse time; include/extends/import, recursive loops and a few rarely
 * used filters (batch, truncate, urlencode...) are not implemented (an
 * error, never a wrong render). */
#include "tokenizer/tok_template.h"

#include "base/ml_err.h"
#include "tokenizer/tok_unicode.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- limits */

#define TJ_MAX_DEPTH 96                      /* parser nesting (tags and expressions) */
#define TJ_MAX_CALL_DEPTH 64                 /* macro recursion */
#define TJ_MAX_ITERATIONS 1000000            /* loop iterations per render, all loops */
#define TJ_MAX_OUTPUT (16u << 20)            /* bytes of rendered text */
#define TJ_MAX_ARENA ((size_t)256 << 20)     /* bytes of memory for one parse or render */
#define TJ_MAX_RANGE 100000                  /* elements of range() */
#define TJ_MAX_EVAL_DEPTH 1000               /* nested evaluation frames (C stack) */
#define TJ_MAX_WORK 300000000ull             /* bytes and elements scanned per render */

const char tok_template_chatml[] =
	"{%- for message in messages %}"
	"{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
	"{%- endfor %}"
	"{%- if add_generation_prompt %}"
	"{{- '<|im_start|>assistant\\n' }}"
	"{%- endif %}";

/* ----------------------------------------------------------------- arena */

struct tj_block {
	struct tj_block *next;
	size_t used, cap;
	_Alignas(16) char data[];
};

struct tj_arena {
	struct tj_block *head;
	size_t total; /* bytes allocated from malloc */
};

struct tj_ctx {
	struct tj_arena *arena;
	jmp_buf *jb;
	const char *src; /* for line:col of errors */
	size_t src_len;
};

static _Noreturn void tj_fail(struct tj_ctx *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void tj_fail_msg(int code, const char *fmt, va_list ap)
{
	char buf[400];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	ml_error(code, "%s", buf);
}

static _Noreturn void tj_fail(struct tj_ctx *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	tj_fail_msg(code, fmt, ap);
	va_end(ap);
	longjmp(*c->jb, code);
}

static void tj_arena_free(struct tj_arena *a)
{
	struct tj_block *b = a->head;
	while (b) {
		struct tj_block *n = b->next;
		free(b);
		b = n;
	}
	a->head = NULL;
	a->total = 0;
}

static void *tj_alloc(struct tj_ctx *c, size_t n)
{
	struct tj_arena *a = c->arena;
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	if (!a->head || a->head->cap - a->head->used < n) {
		size_t cap = n > 32768 ? n : 32768;
		if (n > TJ_MAX_ARENA || a->total + cap > TJ_MAX_ARENA)
			tj_fail(c, ML_ERR_RANGE, "template: memory limit of %zu bytes exceeded",
				TJ_MAX_ARENA);
		struct tj_block *b = malloc(sizeof(*b) + cap);
		if (!b)
			tj_fail(c, ML_ERR_NOMEM, "template: out of memory");
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
		a->total += cap;
	}
	void *p = a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

static void *tj_zalloc(struct tj_ctx *c, size_t n)
{
	void *p = tj_alloc(c, n);
	memset(p, 0, n);
	return p;
}

static char *tj_strndup(struct tj_ctx *c, const char *s, size_t n)
{
	char *p = tj_alloc(c, n + 1);
	if (n)
		memcpy(p, s, n);
	p[n] = 0;
	return p;
}

/* Grows an arena array of |elem|-byte items to hold at least |need|. */
static void *tj_grow(struct tj_ctx *c, void *p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	size_t ncap = *cap ? *cap * 2 : 4;
	while (ncap < need)
		ncap *= 2;
	if (ncap > TJ_MAX_ARENA / elem)
		tj_fail(c, ML_ERR_RANGE, "template: memory limit of %zu bytes exceeded", TJ_MAX_ARENA);
	void *np = tj_alloc(c, ncap * elem);
	if (*cap)
		memcpy(np, p, *cap * elem);
	*cap = ncap;
	return np;
}

/* String builder in the arena; |limit| bounds its length. */
struct tj_sb {
	char *s;
	size_t n, cap;
};

static void sb_add(struct tj_ctx *c, struct tj_sb *b, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (b->n + n > TJ_MAX_OUTPUT)
		tj_fail(c, ML_ERR_RANGE, "template: output longer than %u bytes", TJ_MAX_OUTPUT);
	b->s = tj_grow(c, b->s, &b->cap, b->n + n + 1, 1);
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = 0;
}

static void sb_adds(struct tj_ctx *c, struct tj_sb *b, const char *s)
{
	sb_add(c, b, s, strlen(s));
}

static void sb_addf(struct tj_ctx *c, struct tj_sb *b, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void sb_addf(struct tj_ctx *c, struct tj_sb *b, const char *fmt, ...)
{
	char buf[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_add(c, b, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* ------------------------------------------------------------ UTF-8 text */

/* Decodes the code point at s[*i]; an invalid byte decodes as 0xDC00+byte
 * (like Python's surrogateescape) so that every input round-trips. */
static uint32_t u8_next(const char *s, size_t n, size_t *i)
{
	const unsigned char *p = (const unsigned char *)s + *i;
	size_t left = n - *i;
	unsigned char b = p[0];
	if (b < 0x80) {
		*i += 1;
		return b;
	}
	int len = b >= 0xF0 && b < 0xF5 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 0;
	if (b >= 0xF5)
		len = 0;
	if (len == 0 || (size_t)len > left)
		goto bad;
	uint32_t cp = b & (0x7F >> len);
	for (int k = 1; k < len; k++) {
		if ((p[k] & 0xC0) != 0x80)
			goto bad;
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		goto bad;
	*i += (size_t)len;
	return cp;
bad:
	*i += 1;
	return 0xDC00 + b;
}

static size_t u8_put(char *out, uint32_t cp)
{
	if (cp >= 0xDC80 && cp <= 0xDCFF) { /* an escaped invalid byte */
		out[0] = (char)(cp - 0xDC00);
		return 1;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Python's str.isspace(). */
static bool u_isspace(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Non-ASCII punctuation and symbols that are common in chat text (an
 * approximation of the Unicode categories P* and S*). */
static bool u_ispunct(uint32_t c)
{
	return (c >= 0xA1 && c <= 0xBF && c != 0xAA && c != 0xB2 && c != 0xB3 && c != 0xB5 && c != 0xB9 &&
		c != 0xBA && !(c >= 0xBC && c <= 0xBE)) ||
	       c == 0xD7 || c == 0xF7 || (c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) ||
	       (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0x1F000 && c <= 0x1FAFF);
}

/* Python's str.isprintable() for the characters chat text carries:
 * separators other than ' ' and format characters are not printable. */
static bool u_isprintable(uint32_t c)
{
	if (c < 0x20 || (c >= 0x7F && c < 0xA0))
		return false;
	if (c == 0xA0 || c == 0xAD || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) ||
	    (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF ||
	    (c >= 0xD800 && c <= 0xF8FF) || (c >= 0xFFF0 && c <= 0xFFFF) || c >= 0xE0000)
		return false;
	return true;
}

static size_t u8_count(const char *s, size_t n)
{
	size_t i = 0, k = 0;
	while (i < n) {
		u8_next(s, n, &i);
		k++;
	}
	return k;
}

/* Python strip family: |set| NULL means whitespace. which: 1 left, 2 right, 3 both. */
static void u8_strip(const char *s, size_t n, const char *set, size_t setn, int which,
		     size_t *out_start, size_t *out_end)
{
	size_t start = 0, end = 0, i = 0;
	bool leading = true;
	while (i < n) {
		uint32_t cp = u8_next(s, n, &i);
		bool strip;
		if (set) {
			strip = false;
			size_t j = 0;
			while (j < setn) {
				if (u8_next(set, setn, &j) == cp) {
					strip = true;
					break;
				}
			}
		} else {
			strip = u_isspace(cp);
		}
		if (leading && strip && (which & 1)) {
			start = i;
			end = i;
			continue;
		}
		leading = false;
		if (!strip || !(which & 2))
			end = i;
	}
	if (!(which & 2))
		end = n;
	if (end < start)
		end = start;
	*out_start = start;
	*out_end = end;
}

/* ----------------------------------------------------------------- lexer */

enum tj_tok_type {
	TK_TEXT,
	TK_VAR_BEGIN,
	TK_VAR_END,
	TK_BLOCK_BEGIN,
	TK_BLOCK_END,
	TK_NAME,
	TK_STRING,
	TK_INT,
	TK_FLOAT,
	TK_OP,
	TK_EOF,
};

struct tj_tok {
	enum tj_tok_type type;
	size_t pos; /* offset in the normalized source */
	const char *s; /* text, name, decoded string or operator */
	size_t n;
	int64_t i;
	double f;
};

struct tj_lexer {
	struct tj_ctx *c;
	const char *src;
	size_t n;
	struct tj_tok *toks;
	size_t ntoks, cap;
};

static void tj_linecol(const char *src, size_t len, size_t pos, int *line, int *col)
{
	int l = 1, co = 1;
	for (size_t i = 0; i < pos && i < len; i++) {
		if (src[i] == '\n') {
			l++;
			co = 1;
		} else if (((unsigned char)src[i] & 0xC0) != 0x80) {
			co++;
		}
	}
	*line = l;
	*col = co;
}

#define TJ_SYNTAX(c, pos, ...) tj_fail_at((c), ML_ERR_FORMAT, (pos), __VA_ARGS__)

static _Noreturn void tj_fail_at(struct tj_ctx *c, int code, size_t pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static _Noreturn void tj_fail_at(struct tj_ctx *c, int code, size_t pos, const char *fmt, ...)
{
	char buf[360];
	int line, col;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	tj_linecol(c->src, c->src_len, pos, &line, &col);
	ml_error(code, "template %d:%d: %s", line, col, buf);
	longjmp(*c->jb, code);
}

static struct tj_tok *lex_push(struct tj_lexer *L, enum tj_tok_type type, size_t pos, const char *s,
			       size_t n)
{
	L->toks = tj_grow(L->c, L->toks, &L->cap, L->ntoks + 1, sizeof(struct tj_tok));
	struct tj_tok *t = &L->toks[L->ntoks++];
	memset(t, 0, sizeof(*t));
	t->type = type;
	t->pos = pos;
	t->s = s;
	t->n = n;
	return t;
}

static bool is_ws_at(const char *s, size_t n, size_t i, size_t *next)
{
	size_t j = i;
	uint32_t cp = u8_next(s, n, &j);
	if (!u_isspace(cp))
		return false;
	*next = j;
	return true;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	size_t j;
	while (i < n && is_ws_at(s, n, i, &j))
		i = j;
	return i;
}

/* Python text.rstrip(): end of |s[0..n)| without trailing whitespace. */
static size_t rstrip_len(const char *s, size_t n)
{
	size_t a, b;
	u8_strip(s, n, NULL, 0, 2, &a, &b);
	return b;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes a string literal body as Python's unicode-escape does. */
static void lex_string(struct tj_lexer *L, size_t start, size_t end, struct tj_tok *t)
{
	const char *s = L->src;
	char *out = tj_alloc(L->c, end - start + 1);
	size_t o = 0;
	for (size_t i = start; i < end;) {
		if (s[i] != '\\' || i + 1 >= end) {
			out[o++] = s[i++];
			continue;
		}
		char e = s[i + 1];
		i += 2;
		switch (e) {
		case '\n': break;
		case '\\': out[o++] = '\\'; break;
		case '\'': out[o++] = '\''; break;
		case '"': out[o++] = '"'; break;
		case 'a': out[o++] = 7; break;
		case 'b': out[o++] = 8; break;
		case 'f': out[o++] = 12; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'v': out[o++] = 11; break;
		case 'x':
		case 'u':
		case 'U': {
			int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
			uint32_t cp = 0;
			for (int k = 0; k < digits; k++) {
				int h = i + (size_t)k < end ? hexval(s[i + (size_t)k]) : -1;
				if (h < 0)
					TJ_SYNTAX(L->c, i - 2, "truncated \\%c escape in string", e);
				cp = cp * 16 + (uint32_t)h;
			}
			i += (size_t)digits;
			if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
				TJ_SYNTAX(L->c, i, "invalid code point U+%X in string", (unsigned)cp);
			o += u8_put(out + o, cp);
			break;
		}
		default:
			if (e >= '0' && e <= '7') {
				uint32_t cp = (uint32_t)(e - '0');
				for (int k = 0; k < 2 && i < end && s[i] >= '0' && s[i] <= '7'; k++)
					cp = cp * 8 + (uint32_t)(s[i++] - '0');
				o += u8_put(out + o, cp);
			} else {
				out[o++] = '\\';
				i -= 1; /* keep the character after the backslash */
			}
		}
	}
	out[o] = 0;
	t->s = out;
	t->n = o;
}

/* Lexes expression tokens of one tag until its end; returns the position
 * after the end marker (and whatever trimming it implies). */
static size_t lex_tag(struct tj_lexer *L, size_t pos, bool block, size_t tag_pos)
{
	const char *s = L->src;
	size_t n = L->n;
	int depth = 0;
	char stack[TJ_MAX_DEPTH];
	for (;;) {
		if (pos >= n)
			TJ_SYNTAX(L->c, tag_pos, "unclosed '%s'", block ? "{%" : "{{");
		if (depth == 0) {
			const char *end = block ? "%}" : "}}";
			if (s[pos] == '-' && pos + 2 < n + 0 && memcmp(s + pos + 1, end, 2) == 0) {
				lex_push(L, block ? TK_BLOCK_END : TK_VAR_END, pos, NULL, 0);
				return skip_ws(s, n, pos + 3);
			}
			if (block && s[pos] == '+' && pos + 2 < n + 0 && memcmp(s + pos + 1, end, 2) == 0) {
				lex_push(L, TK_BLOCK_END, pos, NULL, 0);
				return pos + 3;
			}
			if (pos + 1 < n && memcmp(s + pos, end, 2) == 0) {
				lex_push(L, block ? TK_BLOCK_END : TK_VAR_END, pos, NULL, 0);
				pos += 2;
				if (block && pos < n && s[pos] == '\n') /* trim_blocks */
					pos++;
				return pos;
			}
		}
		size_t nx;
		if (is_ws_at(s, n, pos, &nx)) {
			pos = nx;
			continue;
		}
		char ch = s[pos];
		if (ch >= '0' && ch <= '9') {
			size_t st = pos;
			char buf[64];
			size_t bn = 0;
			bool isfloat = false;
			while (pos < n && ((s[pos] >= '0' && s[pos] <= '9') || s[pos] == '_')) {
				if (s[pos] != '_' && bn < sizeof(buf) - 8)
					buf[bn++] = s[pos];
				pos++;
			}
			bool after_dot = st > 0 && s[st - 1] == '.';
			if (!after_dot && pos + 1 < n && s[pos] == '.' && s[pos + 1] >= '0' && s[pos + 1] <= '9') {
				isfloat = true;
				buf[bn++] = s[pos++];
				while (pos < n && ((s[pos] >= '0' && s[pos] <= '9') || s[pos] == '_')) {
					if (s[pos] != '_' && bn < sizeof(buf) - 8)
						buf[bn++] = s[pos];
					pos++;
				}
			}
			if (!after_dot && pos < n && (s[pos] == 'e' || s[pos] == 'E')) {
				size_t q = pos + 1;
				if (q < n && (s[q] == '+' || s[q] == '-'))
					q++;
				if (q < n && s[q] >= '0' && s[q] <= '9') {
					isfloat = true;
					buf[bn++] = 'e';
					for (size_t k = pos + 1; k < q; k++)
						buf[bn++] = s[k];
					pos = q;
					while (pos < n && ((s[pos] >= '0' && s[pos] <= '9') || s[pos] == '_')) {
						if (s[pos] != '_' && bn < sizeof(buf) - 2)
							buf[bn++] = s[pos];
						pos++;
					}
				}
			}
			buf[bn] = 0;
			struct tj_tok *t = lex_push(L, isfloat ? TK_FLOAT : TK_INT, st, s + st, pos - st);
			if (isfloat) {
				t->f = strtod(buf, NULL);
			} else {
				int64_t v = 0;
				for (size_t k = 0; k < bn; k++) {
					if (v > (INT64_MAX - (buf[k] - '0')) / 10)
						TJ_SYNTAX(L->c, st, "integer literal too large");
					v = v * 10 + (buf[k] - '0');
				}
				t->i = v;
			}
			continue;
		}
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
			size_t st = pos;
			while (pos < n && ((s[pos] >= 'a' && s[pos] <= 'z') || (s[pos] >= 'A' && s[pos] <= 'Z') ||
					   (s[pos] >= '0' && s[pos] <= '9') || s[pos] == '_'))
				pos++;
			lex_push(L, TK_NAME, st, s + st, pos - st);
			continue;
		}
		if (ch == '\'' || ch == '"') {
			size_t st = pos++;
			while (pos < n && s[pos] != ch) {
				if (s[pos] == '\\')
					pos++;
				pos++;
			}
			if (pos >= n)
				TJ_SYNTAX(L->c, st, "unterminated string");
			struct tj_tok *t = lex_push(L, TK_STRING, st, NULL, 0);
			lex_string(L, st + 1, pos, t);
			pos++;
			continue;
		}
		static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
		size_t oplen = 0;
		for (size_t k = 0; k < sizeof(ops2) / sizeof(ops2[0]); k++)
			if (pos + 1 < n && memcmp(s + pos, ops2[k], 2) == 0)
				oplen = 2;
		if (!oplen && strchr("+-/*%~[](){}<>=.:|,;", ch) && ch)
			oplen = 1;
		if (!oplen)
			TJ_SYNTAX(L->c, pos, "unexpected character '%c'", ch);
		if (oplen == 1 && (ch == '(' || ch == '[' || ch == '{')) {
			if (depth >= TJ_MAX_DEPTH)
				TJ_SYNTAX(L->c, pos, "brackets nested deeper than %d", TJ_MAX_DEPTH);
			stack[depth++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
		} else if (oplen == 1 && (ch == ')' || ch == ']' || ch == '}')) {
			if (depth == 0)
				TJ_SYNTAX(L->c, pos, "unexpected '%c'", ch);
			if (stack[depth - 1] != ch)
				TJ_SYNTAX(L->c, pos, "unexpected '%c', expected '%c'", ch, stack[depth - 1]);
			depth--;
		}
		lex_push(L, TK_OP, pos, s + pos, oplen);
		pos += oplen;
	}
}

/* Matches "{%[-+]? raw [-]?%}" at |pos|; returns the position after it or 0. */
static size_t lex_match_word_tag(const char *s, size_t n, size_t pos, const char *word, bool *strip_before,
				 bool *strip_after)
{
	if (pos + 2 > n || s[pos] != '{' || s[pos + 1] != '%')
		return 0;
	size_t p = pos + 2;
	*strip_before = p < n && s[p] == '-';
	if (p < n && (s[p] == '-' || s[p] == '+'))
		p++;
	p = skip_ws(s, n, p);
	size_t wl = strlen(word);
	if (p + wl > n || memcmp(s + p, word, wl) != 0)
		return 0;
	p = skip_ws(s, n, p + wl);
	*strip_after = false;
	if (p + 3 <= n && s[p] == '-' && s[p + 1] == '%' && s[p + 2] == '}') {
		*strip_after = true;
		return skip_ws(s, n, p + 3);
	}
	if (p + 2 <= n && s[p] == '%' && s[p + 1] == '}')
		return p + 2;
	return 0;
}

static void lex_all(struct tj_lexer *L)
{
	const char *s = L->src;
	size_t n = L->n, pos = 0;
	bool line_starting = true;
	while (pos < n) {
		size_t t = pos;
		while (t + 1 < n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
			t++;
		if (t + 1 >= n) {
			lex_push(L, TK_TEXT, pos, s + pos, n - pos);
			break;
		}
		char kind = s[t + 1];
		char sign = t + 2 < n ? s[t + 2] : 0;
		if (sign != '-' && sign != '+')
			sign = 0;
		size_t text_end = t;
		if (sign == '-') {
			text_end = pos + rstrip_len(s + pos, t - pos);
		} else if (sign != '+' && kind != '{') { /* lstrip_blocks */
			size_t l = t;
			while (l > pos && s[l - 1] != '\n')
				l--;
			if ((l > pos || line_starting) && l < t && skip_ws(s, t, l) == t)
				text_end = l;
		}
		if (text_end > pos)
			lex_push(L, TK_TEXT, pos, s + pos, text_end - pos);
		size_t after = t + 2 + (sign ? 1 : 0);
		bool sb, sa;
		size_t raw_end = kind == '%' ? lex_match_word_tag(s, n, t, "raw", &sb, &sa) : 0;
		if (raw_end) {
			size_t q = raw_end;
			for (;; q++) {
				if (q >= n)
					TJ_SYNTAX(L->c, t, "unclosed raw block");
				size_t e = lex_match_word_tag(s, n, q, "endraw", &sb, &sa);
				if (e) {
					size_t body_end = sb ? raw_end + rstrip_len(s + raw_end, q - raw_end) : q;
					if (body_end > raw_end)
						lex_push(L, TK_TEXT, raw_end, s + raw_end, body_end - raw_end);
					if (!sa && e < n && s[e] == '\n')
						e++;
					pos = e;
					break;
				}
			}
			line_starting = pos > 0 && s[pos - 1] == '\n';
			continue;
		}
		if (kind == '#') {
			size_t q = after;
			while (q + 1 < n && !(s[q] == '#' && s[q + 1] == '}'))
				q++;
			if (q + 1 >= n)
				TJ_SYNTAX(L->c, t, "missing end of comment tag");
			size_t e = q + 2;
			if (q > after && s[q - 1] == '-')
				e = skip_ws(s, n, e);
			else if (!(q > after && s[q - 1] == '+') && e < n && s[e] == '\n')
				e++;
			pos = e;
		} else {
			lex_push(L, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, t, NULL, 0);
			pos = lex_tag(L, after, kind == '%', t);
		}
		line_starting = pos > 0 && s[pos - 1] == '\n';
	}
	lex_push(L, TK_EOF, n, NULL, 0);
}

/* ---------------------------------------------------------------- values */

enum tv_type {
	TV_UNDEF, /* s: the message an error about it shows, or NULL */
	TV_NONE,
	TV_BOOL,
	TV_INT,
	TV_FLOAT,
	TV_STR,
	TV_LIST, /* also tuples (flag) */
	TV_DICT,
	TV_NS,     /* namespace(): a mutable dict */
	TV_MACRO,
	TV_FUNC,   /* builtin global function */
	TV_METHOD, /* bound method of a str, dict or loop */
	TV_LOOP,
};

struct tlist;
struct tdict;
struct tnode;
struct tloop;

struct tval {
	uint8_t t;
	uint8_t tuple;
	union {
		bool b;
		int64_t i;
		double f;
		struct {
			const char *s;
			size_t n;
		} s;
		struct tlist *l;
		struct tdict *d;
		struct {
			const struct tnode *node;
			struct frame *closure; /* the scope it was defined in */
		} mac;
		int fn;
		struct {
			struct tval *recv;
			const char *name;
		} meth;
		struct tloop *loop;
	} u;
};

struct tlist {
	size_t n, cap;
	struct tval *v;
};

struct tdict {
	size_t n, cap;
	struct tval *k, *v;
};

struct tloop {
	struct tlist *items;
	size_t idx;
	int depth;
};

static const struct tval V_UNDEF = {.t = TV_UNDEF};
static const struct tval V_NONE = {.t = TV_NONE};

static struct tval v_bool(bool b)
{
	struct tval v = {.t = TV_BOOL};
	v.u.b = b;
	return v;
}

static struct tval v_int(int64_t i)
{
	struct tval v = {.t = TV_INT};
	v.u.i = i;
	return v;
}

static struct tval v_float(double f)
{
	struct tval v = {.t = TV_FLOAT};
	v.u.f = f;
	return v;
}

static struct tval v_str(const char *s, size_t n)
{
	struct tval v = {.t = TV_STR};
	v.u.s.s = s;
	v.u.s.n = n;
	return v;
}

static struct tval v_undef(const char *why)
{
	struct tval v = {.t = TV_UNDEF};
	v.u.s.s = why;
	return v;
}

static struct tval v_list(struct tj_ctx *c, size_t reserve)
{
	struct tval v = {.t = TV_LIST};
	v.u.l = tj_zalloc(c, sizeof(struct tlist));
	if (reserve)
		v.u.l->v = tj_grow(c, NULL, &v.u.l->cap, reserve, sizeof(struct tval));
	return v;
}

static void list_push(struct tj_ctx *c, struct tlist *l, struct tval x)
{
	l->v = tj_grow(c, l->v, &l->cap, l->n + 1, sizeof(struct tval));
	l->v[l->n++] = x;
}

static struct tval v_dict(struct tj_ctx *c)
{
	struct tval v = {.t = TV_DICT};
	v.u.d = tj_zalloc(c, sizeof(struct tdict));
	return v;
}


/* ---------------------------------------------------------------- parser */

enum tn_kind {
	N_TEXT,
	N_OUTPUT,
	N_IF,        /* a cond, args body, kw else body */
	N_FOR,       /* names targets, a iterable, b filter, args body, kw else */
	N_SET,       /* names targets (or names[0].s), a value */
	N_SETBLOCK,  /* names[0], args body */
	N_MACRO,     /* s name, names params, kw defaults, args body */
	N_BREAK,
	N_CONTINUE,
	E_LIT,
	E_NAME,
	E_LIST,      /* args items (tuple when op != 0) */
	E_DICT,      /* args keys, kw values */
	E_ATTR,      /* a object, s name */
	E_ITEM,      /* a object, b key */
	E_SLICE,     /* a object, b start, c stop, d step */
	E_CALL,      /* a callee, args, kw + kwn */
	E_FILTER,    /* a value, s name, args, kw + kwn */
	E_TEST,      /* a value, s name, args, op 1 when negated */
	E_NEG,
	E_POS,
	E_NOT,
	E_BIN,       /* op, a, b */
	E_AND,
	E_OR,
	E_CMP,       /* args operands, ops[] */
	E_COND,      /* a cond, b then, c else (NULL: undefined) */
	E_BLOCKVAL,  /* the body text of the enclosing filter block */
	N_FILTERBLOCK, /* a filter chain over E_BLOCKVAL, args body */
	N_CALLBLOCK,   /* a the call (E_CALL), b the caller macro (N_MACRO) */
};

enum tn_op {
	OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CONCAT,
	OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE, OP_IN, OP_NOTIN,
};

struct tnode {
	enum tn_kind kind;
	int op;
	size_t pos;
	const char *s;
	size_t n;
	struct tval lit;
	struct tnode *a, *b, *c, *d;
	struct tnode **args;
	size_t nargs;
	struct tnode **kw;
	const char **kwn;
	size_t nkw;
	const char **names;
	size_t nnames;
	int *ops;
};

struct tok_template {
	struct tj_arena arena;
	struct tnode **body;
	size_t nbody;
	char *src;
	size_t src_len;
	bool have_date;
	int year, month, day;
};

struct tj_parser {
	struct tj_ctx *c;
	struct tj_tok *t;
	size_t i;
	int depth;
	int loops; /* enclosing for loops, for break/continue */
};

struct nvec {
	struct tnode **v;
	size_t n, cap;
};

static void nv_push(struct tj_ctx *c, struct nvec *v, struct tnode *x)
{
	v->v = tj_grow(c, v->v, &v->cap, v->n + 1, sizeof(*v->v));
	v->v[v->n++] = x;
}

struct svec {
	const char **v;
	size_t n, cap;
};

static void sv_push(struct tj_ctx *c, struct svec *v, const char *x)
{
	v->v = tj_grow(c, v->v, &v->cap, v->n + 1, sizeof(*v->v));
	v->v[v->n++] = x;
}

static struct tnode *nnew(struct tj_parser *P, enum tn_kind k, size_t pos)
{
	struct tnode *n = tj_zalloc(P->c, sizeof(*n));
	n->kind = k;
	n->pos = pos;
	return n;
}

static struct tj_tok *cur(struct tj_parser *P)
{
	return &P->t[P->i];
}

static bool is_op(struct tj_parser *P, const char *op)
{
	struct tj_tok *t = cur(P);
	return t->type == TK_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

static bool is_name(struct tj_parser *P, const char *name)
{
	struct tj_tok *t = cur(P);
	return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static bool next_is_name(struct tj_parser *P, const char *name)
{
	struct tj_tok *t = cur(P);
	if (t->type == TK_EOF)
		return false;
	t++;
	return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}

static const char *tok_desc(struct tj_tok *t, char *buf, size_t bn)
{
	switch (t->type) {
	case TK_TEXT: return "template data";
	case TK_VAR_BEGIN: return "'{{'";
	case TK_VAR_END: return "end of print statement";
	case TK_BLOCK_BEGIN: return "'{%'";
	case TK_BLOCK_END: return "end of statement block";
	case TK_EOF: return "end of template";
	case TK_STRING: return "string";
	default:
		snprintf(buf, bn, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
		return buf;
	}
}

static _Noreturn void unexpected(struct tj_parser *P, const char *wanted)
{
	char buf[64];
	struct tj_tok *t = cur(P);
	if (wanted)
		TJ_SYNTAX(P->c, t->pos, "expected %s, got %s", wanted, tok_desc(t, buf, sizeof(buf)));
	TJ_SYNTAX(P->c, t->pos, "unexpected %s", tok_desc(t, buf, sizeof(buf)));
}

static void expect_op(struct tj_parser *P, const char *op)
{
	if (!is_op(P, op)) {
		char w[16];
		snprintf(w, sizeof(w), "'%s'", op);
		unexpected(P, w);
	}
	P->i++;
}

static const char *expect_name(struct tj_parser *P)
{
	struct tj_tok *t = cur(P);
	if (t->type != TK_NAME)
		unexpected(P, "a name");
	P->i++;
	return tj_strndup(P->c, t->s, t->n);
}

static void expect_type(struct tj_parser *P, enum tj_tok_type type, const char *wanted)
{
	if (cur(P)->type != type)
		unexpected(P, wanted);
	P->i++;
}

static void enter(struct tj_parser *P)
{
	if (++P->depth > TJ_MAX_DEPTH)
		TJ_SYNTAX(P->c, cur(P)->pos, "template nested deeper than %d levels", TJ_MAX_DEPTH);
}

static struct tnode *parse_expr(struct tj_parser *P, bool condexpr);
static struct tnode *parse_unary(struct tj_parser *P, bool with_filter);
static struct tnode *parse_primary(struct tj_parser *P);
static struct tnode *parse_postfix(struct tj_parser *P, struct tnode *n);

/* Comma-separated expressions; a tuple when there is a comma (or when
 * |paren| and empty). */
static struct tnode *parse_tuple(struct tj_parser *P, bool condexpr, bool paren)
{
	size_t pos = cur(P)->pos;
	struct nvec items = {0};
	bool comma = false;
	for (;;) {
		if (items.n) {
			if (!is_op(P, ","))
				break;
			P->i++;
			comma = true;
		}
		struct tj_tok *t = cur(P);
		if ((paren && is_op(P, ")")) || t->type == TK_VAR_END || t->type == TK_BLOCK_END ||
		    (!paren && items.n && is_op(P, ")")))
			break;
		if (!paren && t->type == TK_NAME && items.n &&
		    (is_name(P, "if") || is_name(P, "recursive")))
			break;
		nv_push(P->c, &items, parse_expr(P, condexpr));
	}
	if (items.n == 1 && !comma)
		return items.v[0];
	if (items.n == 0 && !paren)
		unexpected(P, "an expression");
	struct tnode *n = nnew(P, E_LIST, pos);
	n->op = 1;
	n->args = items.v;
	n->nargs = items.n;
	return n;
}

static void parse_call_args(struct tj_parser *P, struct tnode *n)
{
	struct nvec args = {0}, kw = {0};
	struct svec kwn = {0};
	expect_op(P, "(");
	while (!is_op(P, ")")) {
		if (args.n || kw.n)
			expect_op(P, ",");
		if (is_op(P, ")"))
			break;
		struct tj_tok *t = cur(P);
		if (t->type == TK_NAME && t[1].type == TK_OP && t[1].n == 1 && t[1].s[0] == '=') {
			sv_push(P->c, &kwn, tj_strndup(P->c, t->s, t->n));
			P->i += 2;
			nv_push(P->c, &kw, parse_expr(P, true));
		} else {
			if (kw.n)
				TJ_SYNTAX(P->c, t->pos, "positional argument after keyword argument");
			nv_push(P->c, &args, parse_expr(P, true));
		}
	}
	P->i++;
	n->args = args.v;
	n->nargs = args.n;
	n->kw = kw.v;
	n->kwn = kwn.v;
	n->nkw = kw.n;
}

static const char *parse_dotted_name(struct tj_parser *P)
{
	const char *name = expect_name(P);
	while (is_op(P, ".") && cur(P)[1].type == TK_NAME) {
		P->i++;
		const char *more = expect_name(P);
		size_t a = strlen(name), b = strlen(more);
		char *s = tj_alloc(P->c, a + b + 2);
		memcpy(s, name, a);
		s[a] = '.';
		memcpy(s + a + 1, more, b + 1);
		name = s;
	}
	return name;
}

static struct tnode *parse_filter_expr(struct tj_parser *P, struct tnode *n)
{
	for (;;) {
		size_t pos = cur(P)->pos;
		if (is_op(P, "|")) {
			P->i++;
			struct tnode *f = nnew(P, E_FILTER, pos);
			f->a = n;
			f->s = parse_dotted_name(P);
			if (is_op(P, "("))
				parse_call_args(P, f);
			n = f;
		} else if (is_name(P, "is")) {
			P->i++;
			struct tnode *f = nnew(P, E_TEST, pos);
			f->a = n;
			if (is_name(P, "not")) {
				P->i++;
				f->op = 1;
			}
			f->s = parse_dotted_name(P);
			struct tj_tok *t = cur(P);
			if (is_op(P, "(")) {
				parse_call_args(P, f);
			} else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
				    t->type == TK_FLOAT || is_op(P, "[") || is_op(P, "{")) &&
				   !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
				if (is_name(P, "is"))
					TJ_SYNTAX(P->c, t->pos, "cannot chain multiple tests with is");
				struct tnode *arg = parse_postfix(P, parse_primary(P));
				f->args = tj_alloc(P->c, sizeof(*f->args));
				f->args[0] = arg;
				f->nargs = 1;
			}
			n = f;
		} else if (is_op(P, "(")) {
			struct tnode *f = nnew(P, E_CALL, pos);
			f->a = n;
			parse_call_args(P, f);
			n = f;
		} else {
			return n;
		}
	}
}

static struct tnode *parse_postfix(struct tj_parser *P, struct tnode *n)
{
	for (;;) {
		size_t pos = cur(P)->pos;
		if (is_op(P, ".")) {
			P->i++;
			struct tj_tok *t = cur(P);
			if (t->type == TK_NAME) {
				struct tnode *a = nnew(P, E_ATTR, pos);
				a->a = n;
				a->s = expect_name(P);
				n = a;
			} else if (t->type == TK_INT) {
				struct tnode *a = nnew(P, E_ITEM, pos);
				a->a = n;
				a->b = nnew(P, E_LIT, t->pos);
				a->b->lit = v_int(t->i);
				P->i++;
				n = a;
			} else {
				unexpected(P, "an attribute name");
			}
		} else if (is_op(P, "[")) {
			P->i++;
			struct tnode *parts[3] = {NULL, NULL, NULL};
			int np = 0;
			bool slice = false;
			for (;;) {
				if (is_op(P, ":")) {
					slice = true;
					if (++np > 2)
						unexpected(P, "']'");
					P->i++;
					continue;
				}
				if (is_op(P, "]"))
					break;
				if (parts[np])
					unexpected(P, "']'");
				parts[np] = parse_expr(P, true);
				if (!slice && is_op(P, ",")) {
					/* a tuple subscript */
					P->i++;
					struct tnode *tup = nnew(P, E_LIST, parts[0]->pos);
					struct nvec items = {0};
					nv_push(P->c, &items, parts[0]);
					while (!is_op(P, "]")) {
						nv_push(P->c, &items, parse_expr(P, true));
						if (!is_op(P, ","))
							break;
						P->i++;
					}
					tup->op = 1;
					tup->args = items.v;
					tup->nargs = items.n;
					parts[0] = tup;
				}
			}
			expect_op(P, "]");
			if (!slice && !parts[0])
				unexpected(P, "an expression");
			struct tnode *a = nnew(P, slice ? E_SLICE : E_ITEM, pos);
			a->a = n;
			a->b = parts[0];
			a->c = parts[1];
			a->d = parts[2];
			n = a;
		} else if (is_op(P, "(")) {
			struct tnode *f = nnew(P, E_CALL, pos);
			f->a = n;
			parse_call_args(P, f);
			n = f;
		} else {
			return n;
		}
	}
}

static struct tnode *parse_primary(struct tj_parser *P)
{
	struct tj_tok *t = cur(P);
	struct tnode *n;
	enter(P);
	if (t->type == TK_NAME) {
		P->i++;
		n = nnew(P, E_LIT, t->pos);
		if ((t->n == 4 && (!memcmp(t->s, "true", 4) || !memcmp(t->s, "True", 4))))
			n->lit = v_bool(true);
		else if (t->n == 5 && (!memcmp(t->s, "false", 5) || !memcmp(t->s, "False", 5)))
			n->lit = v_bool(false);
		else if (t->n == 4 && (!memcmp(t->s, "none", 4) || !memcmp(t->s, "None", 4)))
			n->lit = V_NONE;
		else {
			n->kind = E_NAME;
			n->s = tj_strndup(P->c, t->s, t->n);
		}
	} else if (t->type == TK_STRING) {
		struct tj_sb sb = {0};
		while (cur(P)->type == TK_STRING) {
			sb_add(P->c, &sb, cur(P)->s, cur(P)->n);
			P->i++;
		}
		n = nnew(P, E_LIT, t->pos);
		n->lit = v_str(sb.s ? sb.s : "", sb.n);
	} else if (t->type == TK_INT || t->type == TK_FLOAT) {
		P->i++;
		n = nnew(P, E_LIT, t->pos);
		n->lit = t->type == TK_INT ? v_int(t->i) : v_float(t->f);
	} else if (is_op(P, "(")) {
		P->i++;
		n = parse_tuple(P, true, true);
		expect_op(P, ")");
	} else if (is_op(P, "[")) {
		P->i++;
		n = nnew(P, E_LIST, t->pos);
		struct nvec items = {0};
		while (!is_op(P, "]")) {
			if (items.n)
				expect_op(P, ",");
			if (is_op(P, "]"))
				break;
			nv_push(P->c, &items, parse_expr(P, true));
		}
		P->i++;
		n->args = items.v;
		n->nargs = items.n;
	} else if (is_op(P, "{")) {
		P->i++;
		n = nnew(P, E_DICT, t->pos);
		struct nvec keys = {0}, vals = {0};
		while (!is_op(P, "}")) {
			if (keys.n)
				expect_op(P, ",");
			if (is_op(P, "}"))
				break;
			nv_push(P->c, &keys, parse_expr(P, true));
			expect_op(P, ":");
			nv_push(P->c, &vals, parse_expr(P, true));
		}
		P->i++;
		n->args = keys.v;
		n->nargs = keys.n;
		n->kw = vals.v;
		n->nkw = vals.n;
	} else {
		unexpected(P, NULL);
	}
	P->depth--;
	return n;
}

static struct tnode *parse_unary(struct tj_parser *P, bool with_filter)
{
	struct tnode *n;
	size_t pos = cur(P)->pos;
	enter(P);
	if (is_op(P, "-") || is_op(P, "+")) {
		bool neg = is_op(P, "-");
		P->i++;
		n = nnew(P, neg ? E_NEG : E_POS, pos);
		n->a = parse_unary(P, false);
	} else {
		n = parse_primary(P);
	}
	n = parse_postfix(P, n);
	if (with_filter)
		n = parse_filter_expr(P, n);
	P->depth--;
	return n;
}

static struct tnode *bin(struct tj_parser *P, int op, size_t pos, struct tnode *a, struct tnode *b)
{
	struct tnode *n = nnew(P, E_BIN, pos);
	n->op = op;
	n->a = a;
	n->b = b;
	return n;
}

static struct tnode *parse_pow(struct tj_parser *P)
{
	struct tnode *n = parse_unary(P, true);
	while (is_op(P, "**")) {
		size_t pos = cur(P)->pos;
		P->i++;
		n = bin(P, OP_POW, pos, n, parse_unary(P, true));
	}
	return n;
}

static struct tnode *parse_math2(struct tj_parser *P)
{
	struct tnode *n = parse_pow(P);
	for (;;) {
		int op = is_op(P, "*") ? OP_MUL : is_op(P, "/") ? OP_DIV : is_op(P, "//") ? OP_FDIV
		       : is_op(P, "%") ? OP_MOD : 0;
		if (!op)
			return n;
		size_t pos = cur(P)->pos;
		P->i++;
		n = bin(P, op, pos, n, parse_pow(P));
	}
}

static struct tnode *parse_concat(struct tj_parser *P)
{
	struct tnode *n = parse_math2(P);
	while (is_op(P, "~")) {
		size_t pos = cur(P)->pos;
		P->i++;
		n = bin(P, OP_CONCAT, pos, n, parse_math2(P));
	}
	return n;
}

static struct tnode *parse_math1(struct tj_parser *P)
{
	struct tnode *n = parse_concat(P);
	for (;;) {
		int op = is_op(P, "+") ? OP_ADD : is_op(P, "-") ? OP_SUB : 0;
		if (!op)
			return n;
		size_t pos = cur(P)->pos;
		P->i++;
		n = bin(P, op, pos, n, parse_concat(P));
	}
}

static struct tnode *parse_compare(struct tj_parser *P)
{
	size_t pos = cur(P)->pos;
	struct tnode *first = parse_math1(P);
	struct nvec operands = {0};
	int *ops = NULL;
	size_t opcap = 0;
	for (;;) {
		int op = is_op(P, "==") ? OP_EQ : is_op(P, "!=") ? OP_NE : is_op(P, "<") ? OP_LT
		       : is_op(P, ">") ? OP_GT : is_op(P, "<=") ? OP_LE : is_op(P, ">=") ? OP_GE
		       : is_name(P, "in") ? OP_IN : 0;
		if (!op && is_name(P, "not") && next_is_name(P, "in")) {
			op = OP_NOTIN;
			P->i++;
		}
		if (!op)
			break;
		P->i++;
		if (!operands.n)
			nv_push(P->c, &operands, first);
		ops = tj_grow(P->c, ops, &opcap, operands.n, sizeof(int));
		ops[operands.n - 1] = op;
		nv_push(P->c, &operands, parse_math1(P));
	}
	if (!operands.n)
		return first;
	struct tnode *n = nnew(P, E_CMP, pos);
	n->args = operands.v;
	n->nargs = operands.n;
	n->ops = ops;
	return n;
}

static struct tnode *parse_not(struct tj_parser *P)
{
	if (is_name(P, "not")) {
		size_t pos = cur(P)->pos;
		P->i++;
		enter(P);
		struct tnode *n = nnew(P, E_NOT, pos);
		n->a = parse_not(P);
		P->depth--;
		return n;
	}
	return parse_compare(P);
}

static struct tnode *parse_and(struct tj_parser *P)
{
	struct tnode *n = parse_not(P);
	while (is_name(P, "and")) {
		struct tnode *a = nnew(P, E_AND, cur(P)->pos);
		P->i++;
		a->a = n;
		a->b = parse_not(P);
		n = a;
	}
	return n;
}

static struct tnode *parse_or(struct tj_parser *P)
{
	struct tnode *n = parse_and(P);
	while (is_name(P, "or")) {
		struct tnode *a = nnew(P, E_OR, cur(P)->pos);
		P->i++;
		a->a = n;
		a->b = parse_and(P);
		n = a;
	}
	return n;
}

static struct tnode *parse_expr(struct tj_parser *P, bool condexpr)
{
	enter(P);
	struct tnode *n = parse_or(P);
	while (condexpr && is_name(P, "if")) {
		struct tnode *c = nnew(P, E_COND, cur(P)->pos);
		P->i++;
		c->a = parse_or(P);
		c->b = n;
		if (is_name(P, "else")) {
			P->i++;
			c->c = parse_expr(P, true);
		}
		n = c;
	}
	P->depth--;
	return n;
}

/* Statements until a block tag named in |ends| (left unconsumed: the cursor
 * is on its name) or, when |ends| is NULL, the end of the template. */
static void parse_body(struct tj_parser *P, const char *const *ends, struct nvec *out);

static void block_end(struct tj_parser *P)
{
	expect_type(P, TK_BLOCK_END, "end of statement block");
}

static void parse_targets(struct tj_parser *P, struct svec *names)
{
	bool paren = is_op(P, "(");
	if (paren)
		P->i++;
	for (;;) {
		sv_push(P->c, names, expect_name(P));
		if (!is_op(P, ","))
			break;
		P->i++;
	}
	if (paren)
		expect_op(P, ")");
}

static struct tnode *parse_if(struct tj_parser *P, size_t pos)
{
	static const char *const ends[] = {"elif", "else", "endif", NULL};
	struct tnode *n = nnew(P, N_IF, pos);
	n->a = parse_tuple(P, false, false);
	block_end(P);
	struct nvec body = {0};
	parse_body(P, ends, &body);
	n->args = body.v;
	n->nargs = body.n;
	size_t tpos = cur(P)->pos;
	if (is_name(P, "elif")) {
		P->i++;
		n->kw = tj_alloc(P->c, sizeof(*n->kw));
		n->kw[0] = parse_if(P, tpos);
		n->nkw = 1;
		return n;
	}
	if (is_name(P, "else")) {
		static const char *const ends2[] = {"endif", NULL};
		P->i++;
		block_end(P);
		struct nvec els = {0};
		parse_body(P, ends2, &els);
		n->kw = els.v;
		n->nkw = els.n;
	}
	P->i++; /* endif */
	block_end(P);
	return n;
}

static struct tnode *parse_for(struct tj_parser *P, size_t pos)
{
	static const char *const ends[] = {"else", "endfor", NULL};
	static const char *const ends2[] = {"endfor", NULL};
	struct tnode *n = nnew(P, N_FOR, pos);
	struct svec names = {0};
	parse_targets(P, &names);
	n->names = names.v;
	n->nnames = names.n;
	if (!is_name(P, "in"))
		unexpected(P, "'in'");
	P->i++;
	n->a = parse_tuple(P, false, false);
	if (is_name(P, "if")) {
		P->i++;
		n->b = parse_expr(P, true);
	}
	if (is_name(P, "recursive"))
		TJ_SYNTAX(P->c, cur(P)->pos, "recursive loops are not supported");
	block_end(P);
	struct nvec body = {0}, els = {0};
	P->loops++;
	parse_body(P, ends, &body);
	P->loops--;
	if (is_name(P, "else")) {
		P->i++;
		block_end(P);
		parse_body(P, ends2, &els);
	}
	P->i++;
	block_end(P);
	n->args = body.v;
	n->nargs = body.n;
	n->kw = els.v;
	n->nkw = els.n;
	return n;
}

static struct tnode *parse_set(struct tj_parser *P, size_t pos)
{
	struct tnode *n = nnew(P, N_SET, pos);
	struct svec names = {0};
	const char *first = expect_name(P);
	sv_push(P->c, &names, first);
	if (is_op(P, ".")) {
		P->i++;
		n->s = expect_name(P);
	} else {
		while (is_op(P, ",")) {
			P->i++;
			sv_push(P->c, &names, expect_name(P));
		}
	}
	n->names = names.v;
	n->nnames = names.n;
	if (is_op(P, "=")) {
		P->i++;
		n->a = parse_tuple(P, true, false);
		block_end(P);
		return n;
	}
	if (n->s || names.n != 1)
		unexpected(P, "'='");
	static const char *const ends[] = {"endset", NULL};
	block_end(P);
	n->kind = N_SETBLOCK;
	struct nvec body = {0};
	parse_body(P, ends, &body);
	P->i++;
	block_end(P);
	n->args = body.v;
	n->nargs = body.n;
	return n;
}

/* The body of a macro (or of a call block's anonymous "caller" macro), up
 * to and including its end tag, and the parameters parsed before it. A
 * macro body is outside any enclosing loop: break/continue may not cross it. */
static void macro_body(struct tj_parser *P, const char *const *ends, struct tnode *m,
		       const struct svec *params, const struct nvec *defs)
{
	int loops = P->loops;
	P->loops = 0;
	struct nvec body = {0};
	parse_body(P, ends, &body);
	P->loops = loops;
	P->i++;
	block_end(P);
	m->names = params->v;
	m->nnames = params->n;
	m->kw = defs->v;
	m->nkw = defs->n;
	m->args = body.v;
	m->nargs = body.n;
}

static struct tnode *parse_macro(struct tj_parser *P, size_t pos)
{
	static const char *const ends[] = {"endmacro", NULL};
	struct tnode *n = nnew(P, N_MACRO, pos);
	struct svec params = {0};
	struct nvec defs = {0};
	n->s = expect_name(P);
	expect_op(P, "(");
	while (!is_op(P, ")")) {
		if (params.n)
			expect_op(P, ",");
		sv_push(P->c, &params, expect_name(P));
		if (is_op(P, "=")) {
			P->i++;
			nv_push(P->c, &defs, parse_expr(P, true));
		} else {
			if (defs.n && defs.v[defs.n - 1])
				TJ_SYNTAX(P->c, cur(P)->pos, "non-default argument follows default argument");
			nv_push(P->c, &defs, NULL);
		}
	}
	P->i++;
	block_end(P);
	macro_body(P, ends, n, &params, &defs);
	return n;
}

static void parse_body(struct tj_parser *P, const char *const *ends, struct nvec *out)
{
	enter(P);
	for (;;) {
		struct tj_tok *t = cur(P);
		if (t->type == TK_EOF) {
			if (ends)
			{
				size_t last = 0;
				while (ends[last + 1])
					last++;
				TJ_SYNTAX(P->c, t->pos, "unexpected end of template, expected '%s'", ends[last]);
			}
			break;
		}
		if (t->type == TK_TEXT) {
			struct tnode *n = nnew(P, N_TEXT, t->pos);
			n->s = t->s;
			n->n = t->n;
			nv_push(P->c, out, n);
			P->i++;
			continue;
		}
		if (t->type == TK_VAR_BEGIN) {
			P->i++;
			struct tnode *n = nnew(P, N_OUTPUT, t->pos);
			n->a = parse_tuple(P, true, false);
			expect_type(P, TK_VAR_END, "end of print statement");
			nv_push(P->c, out, n);
			continue;
		}
		if (t->type != TK_BLOCK_BEGIN)
			unexpected(P, NULL);
		P->i++;
		struct tj_tok *nt = cur(P);
		if (nt->type != TK_NAME)
			unexpected(P, "a tag name");
		for (size_t k = 0; ends && ends[k]; k++)
			if (is_name(P, ends[k])) {
				P->depth--;
				return;
			}
		size_t pos = t->pos;
		char name[24];
		snprintf(name, sizeof(name), "%.*s", (int)(nt->n > 20 ? 20 : nt->n), nt->s);
		P->i++;
		struct tnode *n = NULL;
		if (!strcmp(name, "if")) {
			n = parse_if(P, pos);
		} else if (!strcmp(name, "for")) {
			n = parse_for(P, pos);
		} else if (!strcmp(name, "set")) {
			n = parse_set(P, pos);
		} else if (!strcmp(name, "macro")) {
			n = parse_macro(P, pos);
		} else if (!strcmp(name, "call")) {
			static const char *const ends[] = {"endcall", NULL};
			n = nnew(P, N_CALLBLOCK, pos);
			struct tnode *m = nnew(P, N_MACRO, pos);
			struct svec params = {0};
			struct nvec defs = {0};
			m->s = "caller";
			if (is_op(P, "(")) {
				P->i++;
				while (!is_op(P, ")")) {
					if (params.n)
						expect_op(P, ",");
					sv_push(P->c, &params, expect_name(P));
					nv_push(P->c, &defs, NULL);
					if (is_op(P, "=")) {
						P->i++;
						defs.v[defs.n - 1] = parse_expr(P, true);
					}
				}
				P->i++;
			}
			n->a = parse_expr(P, true);
			if (n->a->kind != E_CALL)
				TJ_SYNTAX(P->c, n->a->pos, "expected a macro call after 'call'");
			block_end(P);
			macro_body(P, ends, m, &params, &defs);
			n->b = m;
		} else if (!strcmp(name, "filter")) {
			static const char *const ends[] = {"endfilter", NULL};
			n = nnew(P, N_FILTERBLOCK, pos);
			struct tnode *val = nnew(P, E_BLOCKVAL, pos);
			struct tnode *f = nnew(P, E_FILTER, cur(P)->pos);
			f->a = val;
			f->s = parse_dotted_name(P);
			if (is_op(P, "("))
				parse_call_args(P, f);
			n->a = parse_filter_expr(P, f);
			block_end(P);
			struct nvec body = {0};
			parse_body(P, ends, &body);
			P->i++;
			block_end(P);
			n->args = body.v;
			n->nargs = body.n;
		} else if (!strcmp(name, "break") || !strcmp(name, "continue")) {
			if (!P->loops)
				TJ_SYNTAX(P->c, pos, "'%s' outside of a loop", name);
			n = nnew(P, name[0] == 'b' ? N_BREAK : N_CONTINUE, pos);
			block_end(P);
		} else if (!strncmp(name, "end", 3) || !strcmp(name, "else") || !strcmp(name, "elif")) {
			TJ_SYNTAX(P->c, nt->pos, "unexpected '%s'%s", name,
				  ends ? "" : " with no matching opening tag");
		} else {
			TJ_SYNTAX(P->c, nt->pos, "unknown or unsupported tag '%s'", name);
		}
		nv_push(P->c, out, n);
	}
	P->depth--;
}

/* ------------------------------------------------------------- evaluator */

struct frame {
	struct frame *parent;
	struct tdict vars;
};

struct tj_render {
	struct tj_ctx c;
	struct frame *root;
	struct tj_sb *out;
	long iterations;
	int call_depth;
	int eval_depth; /* statement and expression frames, to bound the C stack */
	uint64_t work;  /* bytes and elements scanned (what allocation does not bound) */
	struct tval blockval;
	int year, month, day, wday, yday, hour, min, sec;
};

enum builtin_fn { FN_RAISE = 1, FN_STRFTIME, FN_NAMESPACE, FN_RANGE, FN_DICT };

static _Noreturn void rt_fail(struct tj_render *R, const struct tnode *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static _Noreturn void rt_fail(struct tj_render *R, const struct tnode *at, const char *fmt, ...)
{
	char buf[360];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	tj_fail_at(&R->c, ML_ERR_INVALID, at ? at->pos : 0, "%s", buf);
}

static _Noreturn void undef_fail(struct tj_render *R, const struct tnode *at, struct tval v)
{
	rt_fail(R, at, "%s", v.u.s.s ? v.u.s.s : "undefined value");
}

/* Scanning a big string or list over and over in a loop would take
 * unbounded time without allocating, so scans are charged to a budget. */
static void charge(struct tj_render *R, const struct tnode *at, uint64_t units)
{
	R->work += units;
	if (R->work > TJ_MAX_WORK)
		tj_fail_at(&R->c, ML_ERR_RANGE, at ? at->pos : 0, "render needs more than %llu steps of work",
			   (unsigned long long)TJ_MAX_WORK);
}

static const char *type_name(struct tval v)
{
	switch (v.t) {
	case TV_UNDEF: return "Undefined";
	case TV_NONE: return "NoneType";
	case TV_BOOL: return "bool";
	case TV_INT: return "int";
	case TV_FLOAT: return "float";
	case TV_STR: return "str";
	case TV_LIST: return v.tuple ? "tuple" : "list";
	case TV_DICT: return "dict";
	case TV_NS: return "Namespace";
	case TV_MACRO: return "Macro";
	case TV_FUNC: return "function";
	case TV_METHOD: return "method";
	case TV_LOOP: return "LoopContext";
	}
	return "object";
}

static bool truthy(struct tval v)
{
	switch (v.t) {
	case TV_UNDEF:
	case TV_NONE: return false;
	case TV_BOOL: return v.u.b;
	case TV_INT: return v.u.i != 0;
	case TV_FLOAT: return v.u.f != 0.0;
	case TV_STR: return v.u.s.n != 0;
	case TV_LIST: return v.u.l->n != 0;
	case TV_DICT: return v.u.d->n != 0;
	default: return true;
	}
}

static bool is_num(struct tval v)
{
	return v.t == TV_INT || v.t == TV_FLOAT || v.t == TV_BOOL;
}

static double num_f(struct tval v)
{
	return v.t == TV_FLOAT ? v.u.f : v.t == TV_INT ? (double)v.u.i : v.u.b ? 1.0 : 0.0;
}

static int64_t num_i(struct tval v)
{
	return v.t == TV_INT ? v.u.i : v.t == TV_BOOL ? (int64_t)v.u.b : (int64_t)v.u.f;
}

static bool str_eq(struct tval a, const char *s)
{
	size_t n = strlen(s);
	return a.t == TV_STR && a.u.s.n == n && memcmp(a.u.s.s, s, n) == 0;
}

static bool v_equal(struct tval a, struct tval b, int depth);

static struct tval *dict_find(struct tdict *d, struct tval k)
{
	for (size_t i = 0; i < d->n; i++)
		if (v_equal(d->k[i], k, 0))
			return &d->v[i];
	return NULL;
}

static struct tval *dict_find_s(struct tdict *d, const char *k)
{
	for (size_t i = 0; i < d->n; i++)
		if (str_eq(d->k[i], k))
			return &d->v[i];
	return NULL;
}

static __attribute__((noinline)) void dict_set(struct tj_ctx *c, struct tdict *d, struct tval k, struct tval v)
{
	struct tval *p = dict_find(d, k);
	if (p) {
		*p = v;
		return;
	}
	size_t cap = d->cap;
	d->k = tj_grow(c, d->k, &cap, d->n + 1, sizeof(struct tval));
	d->v = tj_grow(c, d->v, &d->cap, d->n + 1, sizeof(struct tval));
	d->k[d->n] = k;
	d->v[d->n] = v;
	d->n++;
}

static void dict_set_s(struct tj_ctx *c, struct tdict *d, const char *k, struct tval v)
{
	dict_set(c, d, v_str(k, strlen(k)), v);
}

static bool v_equal(struct tval a, struct tval b, int depth)
{
	if (depth > TJ_MAX_DEPTH)
		return false;
	if (is_num(a) && is_num(b)) {
		if (a.t == TV_FLOAT || b.t == TV_FLOAT)
			return num_f(a) == num_f(b);
		return num_i(a) == num_i(b);
	}
	if (a.t != b.t)
		return false;
	switch (a.t) {
	case TV_UNDEF:
	case TV_NONE: return true;
	case TV_STR:
		return a.u.s.n == b.u.s.n && (a.u.s.s == b.u.s.s || memcmp(a.u.s.s, b.u.s.s, a.u.s.n) == 0);
	case TV_LIST:
		if (a.tuple != b.tuple || a.u.l->n != b.u.l->n)
			return false;
		if (a.u.l == b.u.l)
			return true;
		for (size_t i = 0; i < a.u.l->n; i++)
			if (!v_equal(a.u.l->v[i], b.u.l->v[i], depth + 1))
				return false;
		return true;
	case TV_DICT:
		if (a.u.d->n != b.u.d->n)
			return false;
		if (a.u.d == b.u.d)
			return true;
		for (size_t i = 0; i < a.u.d->n; i++) {
			struct tval *o = dict_find(b.u.d, a.u.d->k[i]);
			if (!o || !v_equal(a.u.d->v[i], *o, depth + 1))
				return false;
		}
		return true;
	case TV_NS: return a.u.d == b.u.d;
	case TV_MACRO: return a.u.mac.node == b.u.mac.node;
	case TV_FUNC: return a.u.fn == b.u.fn;
	case TV_LOOP: return a.u.loop == b.u.loop;
	default: return false;
	}
}

/* Python repr() of a float. */
static void fmt_float(char *buf, size_t bn, double f)
{
	if (isnan(f)) {
		snprintf(buf, bn, "nan");
		return;
	}
	if (isinf(f)) {
		snprintf(buf, bn, f < 0 ? "-inf" : "inf");
		return;
	}
	char e[40];
	int prec;
	for (prec = 1; prec <= 17; prec++) {
		snprintf(e, sizeof(e), "%.*e", prec - 1, f);
		if (strtod(e, NULL) == f)
			break;
	}
	/* e is d[.ddd]e[+-]XX: split into digits and exponent */
	char digits[24];
	size_t nd = 0;
	const char *p = e;
	bool neg = *p == '-';
	if (neg)
		p++;
	for (; *p && *p != 'e'; p++)
		if (*p >= '0' && *p <= '9')
			digits[nd++] = *p;
	int exp = atoi(p + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	char *o = buf;
	size_t left = bn;
#define PUT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
	if (neg)
		PUT("-");
	if (exp >= -5 + 1 && exp < 16) {
		if (exp < 0) {
			PUT("0.");
			for (int k = -1; k > exp; k--)
				PUT("0");
			PUT("%s", digits);
		} else {
			for (int k = 0; k <= exp; k++)
				PUT("%c", (size_t)k < nd ? digits[k] : '0');
			PUT(".");
			if ((size_t)exp + 1 < nd)
				PUT("%s", digits + exp + 1);
			else
				PUT("0");
		}
	} else {
		PUT("%c", digits[0]);
		if (nd > 1)
			PUT(".%s", digits + 1);
		PUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
	}
#undef PUT
}

static __attribute__((noinline)) void to_str(struct tj_render *R, struct tval v, struct tj_sb *sb, int depth);

static void repr_str(struct tj_render *R, struct tval v, struct tj_sb *sb)
{
	bool sq = memchr(v.u.s.s, '\'', v.u.s.n) != NULL, dq = memchr(v.u.s.s, '"', v.u.s.n) != NULL;
	char q = sq && !dq ? '"' : '\'';
	sb_add(&R->c, sb, &q, 1);
	size_t i = 0;
	while (i < v.u.s.n) {
		size_t at = i;
		uint32_t cp = u8_next(v.u.s.s, v.u.s.n, &i);
		if (cp == (uint32_t)q || cp == '\\')
			sb_addf(&R->c, sb, "\\%c", (char)cp);
		else if (cp == '\n')
			sb_adds(&R->c, sb, "\\n");
		else if (cp == '\r')
			sb_adds(&R->c, sb, "\\r");
		else if (cp == '\t')
			sb_adds(&R->c, sb, "\\t");
		else if (cp < 0x100 && !u_isprintable(cp))
			sb_addf(&R->c, sb, "\\x%02x", (unsigned)cp);
		else if (cp < 0x10000 && !u_isprintable(cp))
			sb_addf(&R->c, sb, "\\u%04x", (unsigned)cp);
		else if (!u_isprintable(cp))
			sb_addf(&R->c, sb, "\\U%08x", (unsigned)cp);
		else
			sb_add(&R->c, sb, v.u.s.s + at, i - at);
	}
	sb_add(&R->c, sb, &q, 1);
}

static void repr(struct tj_render *R, struct tval v, struct tj_sb *sb, int depth)
{
	if (depth > TJ_MAX_DEPTH)
		rt_fail(R, NULL, "value nested too deeply to print");
	if (v.t == TV_STR) {
		repr_str(R, v, sb);
	} else if (v.t == TV_LIST) {
		sb_adds(&R->c, sb, v.tuple ? "(" : "[");
		for (size_t i = 0; i < v.u.l->n; i++) {
			if (i)
				sb_adds(&R->c, sb, ", ");
			repr(R, v.u.l->v[i], sb, depth + 1);
		}
		if (v.tuple && v.u.l->n == 1)
			sb_adds(&R->c, sb, ",");
		sb_adds(&R->c, sb, v.tuple ? ")" : "]");
	} else if (v.t == TV_DICT) {
		sb_adds(&R->c, sb, "{");
		for (size_t i = 0; i < v.u.d->n; i++) {
			if (i)
				sb_adds(&R->c, sb, ", ");
			repr(R, v.u.d->k[i], sb, depth + 1);
			sb_adds(&R->c, sb, ": ");
			repr(R, v.u.d->v[i], sb, depth + 1);
		}
		sb_adds(&R->c, sb, "}");
	} else {
		to_str(R, v, sb, depth + 1);
	}
}

static void to_str(struct tj_render *R, struct tval v, struct tj_sb *sb, int depth)
{
	char buf[64];
	switch (v.t) {
	case TV_UNDEF:
		if (depth > 0) /* inside a list or dict: repr(Undefined) */
			sb_adds(&R->c, sb, "Undefined");
		return;
	case TV_NONE: sb_adds(&R->c, sb, "None"); return;
	case TV_BOOL: sb_adds(&R->c, sb, v.u.b ? "True" : "False"); return;
	case TV_INT: sb_addf(&R->c, sb, "%lld", (long long)v.u.i); return;
	case TV_FLOAT: fmt_float(buf, sizeof(buf), v.u.f); sb_adds(&R->c, sb, buf); return;
	case TV_STR: sb_add(&R->c, sb, v.u.s.s, v.u.s.n); return;
	case TV_LIST:
	case TV_DICT: repr(R, v, sb, depth); return;
	case TV_NS: {
		sb_adds(&R->c, sb, "<Namespace ");
		struct tval d = v;
		d.t = TV_DICT;
		repr(R, d, sb, depth + 1);
		sb_adds(&R->c, sb, ">");
		return;
	}
	case TV_MACRO: sb_addf(&R->c, sb, "<Macro '%s'>", v.u.mac.node->s); return;
	case TV_FUNC: sb_adds(&R->c, sb, "<function>"); return;
	case TV_METHOD: sb_addf(&R->c, sb, "<built-in method %s>", v.u.meth.name); return;
	case TV_LOOP: sb_adds(&R->c, sb, "<LoopContext>"); return;
	}
}

static struct tval v_tostr(struct tj_render *R, struct tval v)
{
	if (v.t == TV_STR)
		return v;
	struct tj_sb sb = {0};
	to_str(R, v, &sb, 0);
	return v_str(sb.s ? sb.s : "", sb.n);
}

struct json_opts {
	int indent; /* < 0: none */
	bool ensure_ascii, sort_keys;
	const char *item_sep, *key_sep;
};

static void json_str(struct tj_render *R, const char *s, size_t n, struct tj_sb *sb, bool ascii)
{
	sb_adds(&R->c, sb, "\"");
	size_t i = 0;
	while (i < n) {
		size_t at = i;
		uint32_t cp = u8_next(s, n, &i);
		switch (cp) {
		case '"': sb_adds(&R->c, sb, "\\\""); continue;
		case '\\': sb_adds(&R->c, sb, "\\\\"); continue;
		case '\n': sb_adds(&R->c, sb, "\\n"); continue;
		case '\r': sb_adds(&R->c, sb, "\\r"); continue;
		case '\t': sb_adds(&R->c, sb, "\\t"); continue;
		case '\b': sb_adds(&R->c, sb, "\\b"); continue;
		case '\f': sb_adds(&R->c, sb, "\\f"); continue;
		}
		if (cp < 0x20 || (ascii && cp > 0x7E)) {
			if (cp >= 0x10000 && !(cp >= 0xDC80 && cp <= 0xDCFF)) {
				uint32_t x = cp - 0x10000;
				sb_addf(&R->c, sb, "\\u%04x\\u%04x", 0xD800 + (x >> 10), 0xDC00 + (x & 0x3FF));
			} else {
				sb_addf(&R->c, sb, "\\u%04x", (unsigned)cp);
			}
		} else {
			sb_add(&R->c, sb, s + at, i - at);
		}
	}
	sb_adds(&R->c, sb, "\"");
}

static void json_nl(struct tj_render *R, struct tj_sb *sb, const struct json_opts *o, int level)
{
	sb_adds(&R->c, sb, "\n");
	for (int k = 0; k < o->indent * level; k++)
		sb_adds(&R->c, sb, " ");
}

static int cmp_str_keys(const void *a, const void *b)
{
	const struct tval *x = *(const struct tval *const *)a, *y = *(const struct tval *const *)b;
	size_t n = x->u.s.n < y->u.s.n ? x->u.s.n : y->u.s.n;
	int r = memcmp(x->u.s.s, y->u.s.s, n);
	return r ? r : x->u.s.n < y->u.s.n ? -1 : x->u.s.n > y->u.s.n;
}

static void json(struct tj_render *R, const struct tnode *at, struct tval v, struct tj_sb *sb,
		 const struct json_opts *o, int level)
{
	char buf[64];
	if (level > TJ_MAX_DEPTH)
		rt_fail(R, at, "value nested too deeply for tojson");
	switch (v.t) {
	case TV_NONE: sb_adds(&R->c, sb, "null"); return;
	case TV_BOOL: sb_adds(&R->c, sb, v.u.b ? "true" : "false"); return;
	case TV_INT: sb_addf(&R->c, sb, "%lld", (long long)v.u.i); return;
	case TV_FLOAT:
		if (isnan(v.u.f))
			sb_adds(&R->c, sb, "NaN");
		else if (isinf(v.u.f))
			sb_adds(&R->c, sb, v.u.f < 0 ? "-Infinity" : "Infinity");
		else {
			fmt_float(buf, sizeof(buf), v.u.f);
			sb_adds(&R->c, sb, buf);
		}
		return;
	case TV_STR: json_str(R, v.u.s.s, v.u.s.n, sb, o->ensure_ascii); return;
	case TV_LIST:
		if (v.u.l->n == 0) {
			sb_adds(&R->c, sb, "[]");
			return;
		}
		sb_adds(&R->c, sb, "[");
		for (size_t i = 0; i < v.u.l->n; i++) {
			if (i)
				sb_adds(&R->c, sb, o->item_sep);
			if (o->indent >= 0)
				json_nl(R, sb, o, level + 1);
			json(R, at, v.u.l->v[i], sb, o, level + 1);
		}
		if (o->indent >= 0)
			json_nl(R, sb, o, level);
		sb_adds(&R->c, sb, "]");
		return;
	case TV_DICT: {
		struct tdict *d = v.u.d;
		if (d->n == 0) {
			sb_adds(&R->c, sb, "{}");
			return;
		}
		size_t *order = tj_alloc(&R->c, d->n * sizeof(size_t));
		for (size_t i = 0; i < d->n; i++)
			order[i] = i;
		if (o->sort_keys) {
			const struct tval **keys = tj_alloc(&R->c, d->n * sizeof(*keys));
			for (size_t i = 0; i < d->n; i++) {
				if (d->k[i].t != TV_STR)
					rt_fail(R, at, "tojson: sort_keys needs string keys");
				keys[i] = &d->k[i];
			}
			qsort(keys, d->n, sizeof(*keys), cmp_str_keys);
			for (size_t i = 0; i < d->n; i++)
				order[i] = (size_t)(keys[i] - d->k);
		}
		sb_adds(&R->c, sb, "{");
		for (size_t j = 0; j < d->n; j++) {
			size_t i = order[j];
			if (j)
				sb_adds(&R->c, sb, o->item_sep);
			if (o->indent >= 0)
				json_nl(R, sb, o, level + 1);
			struct tval k = d->k[i];
			if (k.t == TV_STR) {
				json_str(R, k.u.s.s, k.u.s.n, sb, o->ensure_ascii);
			} else if (k.t == TV_INT || k.t == TV_FLOAT || k.t == TV_BOOL || k.t == TV_NONE) {
				struct tj_sb ks = {0};
				json(R, at, k, &ks, o, level + 1);
				json_str(R, ks.s, ks.n, sb, o->ensure_ascii);
			} else {
				rt_fail(R, at, "keys must be str, int, float, bool or None, not %s", type_name(k));
			}
			sb_adds(&R->c, sb, o->key_sep);
			json(R, at, d->v[i], sb, o, level + 1);
		}
		if (o->indent >= 0)
			json_nl(R, sb, o, level);
		sb_adds(&R->c, sb, "}");
		return;
	}
	default: rt_fail(R, at, "Object of type %s is not JSON serializable", type_name(v));
	}
}

/* ---- scopes ---- */

static struct frame *frame_new(struct tj_render *R, struct frame *parent)
{
	struct frame *f = tj_zalloc(&R->c, sizeof(*f));
	f->parent = parent;
	return f;
}

static __attribute__((noinline)) void frame_set(struct tj_render *R, struct frame *f, const char *name, struct tval v)
{
	dict_set_s(&R->c, &f->vars, name, v);
}

static __attribute__((noinline)) struct tval lookup(struct tj_render *R, struct frame *f, const char *name)
{
	for (; f; f = f->parent) {
		struct tval *p = dict_find_s(&f->vars, name);
		if (p)
			return *p;
	}
	static const struct {
		const char *name;
		int fn;
	} fns[] = {{"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME},
		   {"namespace", FN_NAMESPACE}, {"range", FN_RANGE}, {"dict", FN_DICT}};
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		if (!strcmp(name, fns[i].name)) {
			struct tval v = {.t = TV_FUNC};
			v.u.fn = fns[i].fn;
			return v;
		}
	size_t n = strlen(name);
	char *msg = tj_alloc(&R->c, n + 20);
	snprintf(msg, n + 20, "'%s' is undefined", name);
	return v_undef(msg);
}

/* ---- attribute and item access ---- */

static const char *const str_methods[] = {
	"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
	"title", "capitalize", "replace", "find", "rfind", "count", "join", "format", "isdigit",
	"isalpha", "isalnum", "isspace", "islower", "isupper", "splitlines", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const list_methods[] = {"count", "index", NULL};

static bool in_names(const char *const *names, const char *s, size_t n)
{
	for (; *names; names++)
		if (strlen(*names) == n && memcmp(*names, s, n) == 0)
			return true;
	return false;
}

static struct tval no_attr(struct tj_render *R, struct tval obj, const char *name, size_t n)
{
	size_t cap = n + 64;
	char *msg = tj_alloc(&R->c, cap);
	if (obj.t == TV_NONE)
		snprintf(msg, cap, "'None' has no attribute '%.*s'", (int)n, name);
	else
		snprintf(msg, cap, "'%s object' has no attribute '%.*s'", type_name(obj), (int)n, name);
	return v_undef(msg);
}

static struct tval method(struct tj_render *R, struct tval obj, const char *name, size_t n)
{
	struct tval m = {.t = TV_METHOD};
	m.u.meth.recv = tj_alloc(&R->c, sizeof(struct tval));
	*m.u.meth.recv = obj;
	m.u.meth.name = tj_strndup(&R->c, name, n);
	return m;
}

static struct tval loop_attr(struct tj_render *R, struct tloop *lp, const char *name)
{
	size_t len = lp->items->n, i = lp->idx;
	if (!strcmp(name, "index"))
		return v_int((int64_t)i + 1);
	if (!strcmp(name, "index0"))
		return v_int((int64_t)i);
	if (!strcmp(name, "revindex"))
		return v_int((int64_t)(len - i));
	if (!strcmp(name, "revindex0"))
		return v_int((int64_t)(len - i - 1));
	if (!strcmp(name, "first"))
		return v_bool(i == 0);
	if (!strcmp(name, "last"))
		return v_bool(i + 1 == len);
	if (!strcmp(name, "length"))
		return v_int((int64_t)len);
	if (!strcmp(name, "depth"))
		return v_int(lp->depth);
	if (!strcmp(name, "depth0"))
		return v_int(lp->depth - 1);
	if (!strcmp(name, "previtem"))
		return i > 0 ? lp->items->v[i - 1] : v_undef("there is no previous item");
	if (!strcmp(name, "nextitem"))
		return i + 1 < len ? lp->items->v[i + 1] : v_undef("there is no next item");
	if (!strcmp(name, "cycle")) {
		struct tval l = {.t = TV_LOOP};
		l.u.loop = lp;
		return method(R, l, "cycle", 5);
	}
	struct tval l = {.t = TV_LOOP};
	l.u.loop = lp;
	return no_attr(R, l, name, strlen(name));
}

/* jinja's getattr: attribute first, then item. */
static __attribute__((noinline)) struct tval get_attr(struct tj_render *R, const struct tnode *at, struct tval obj, const char *name)
{
	size_t n = strlen(name);
	switch (obj.t) {
	case TV_UNDEF: undef_fail(R, at, obj);
	case TV_DICT:
		if (in_names(dict_methods, name, n))
			return method(R, obj, name, n);
		/* fall through */
	case TV_NS: {
		struct tval *p = dict_find_s(obj.u.d, name);
		if (p)
			return *p;
		return no_attr(R, obj, name, n);
	}
	case TV_STR:
		if (in_names(str_methods, name, n))
			return method(R, obj, name, n);
		return no_attr(R, obj, name, n);
	case TV_LOOP: return loop_attr(R, obj.u.loop, name);
	case TV_LIST:
		if (in_names(list_methods, name, n))
			return method(R, obj, name, n);
		return no_attr(R, obj, name, n);
	default: return no_attr(R, obj, name, n);
	}
}

static bool norm_index(int64_t i, size_t len, size_t *out)
{
	if (i < 0)
		i += (int64_t)len;
	if (i < 0 || (uint64_t)i >= len)
		return false;
	*out = (size_t)i;
	return true;
}

/* Byte offset of code point |k| of a string (k <= count). */
static size_t u8_offset(const char *s, size_t n, size_t k)
{
	size_t i = 0;
	while (k-- && i < n)
		u8_next(s, n, &i);
	return i;
}

/* jinja's getitem: item first, then attribute. */
static __attribute__((noinline)) struct tval get_item(struct tj_render *R, const struct tnode *at, struct tval obj, struct tval key)
{
	if (obj.t == TV_UNDEF)
		undef_fail(R, at, obj);
	if ((obj.t == TV_LIST || obj.t == TV_STR) && (key.t == TV_INT || key.t == TV_BOOL)) {
		if (obj.t == TV_STR)
			charge(R, at, obj.u.s.n);
		size_t len = obj.t == TV_LIST ? obj.u.l->n : u8_count(obj.u.s.s, obj.u.s.n), idx;
		if (norm_index(num_i(key), len, &idx)) {
			if (obj.t == TV_LIST)
				return obj.u.l->v[idx];
			size_t a = u8_offset(obj.u.s.s, obj.u.s.n, idx), b = a;
			u8_next(obj.u.s.s, obj.u.s.n, &b);
			return v_str(obj.u.s.s + a, b - a);
		}
		char *msg = tj_alloc(&R->c, 80);
		snprintf(msg, 80, "%s object has no element %lld", type_name(obj), (long long)num_i(key));
		return v_undef(msg);
	}
	if (obj.t == TV_DICT || obj.t == TV_NS) {
		struct tval *p = dict_find(obj.u.d, key);
		if (p)
			return *p;
	}
	if (key.t == TV_STR) {
		if (obj.t == TV_DICT && in_names(dict_methods, key.u.s.s, key.u.s.n))
			return method(R, obj, key.u.s.s, key.u.s.n);
		if (obj.t == TV_STR && in_names(str_methods, key.u.s.s, key.u.s.n))
			return method(R, obj, key.u.s.s, key.u.s.n);
		if (obj.t == TV_LOOP)
			return loop_attr(R, obj.u.loop, tj_strndup(&R->c, key.u.s.s, key.u.s.n));
		return no_attr(R, obj, key.u.s.s, key.u.s.n);
	}
	char *msg = tj_alloc(&R->c, 80);
	snprintf(msg, 80, "'%s object' has no attribute", type_name(obj));
	return v_undef(msg);
}

static __attribute__((noinline)) struct tval slice(struct tj_render *R, const struct tnode *at, struct tval obj, struct tval *st,
			 struct tval *sp, struct tval *step)
{
	if (obj.t == TV_UNDEF)
		undef_fail(R, at, obj);
	if (obj.t != TV_LIST && obj.t != TV_STR)
		rt_fail(R, at, "'%s' object is not subscriptable", type_name(obj));
	for (int k = 0; k < 3; k++) {
		struct tval *x = k == 0 ? st : k == 1 ? sp : step;
		if (x && x->t != TV_INT && x->t != TV_BOOL && x->t != TV_NONE)
			rt_fail(R, at, "slice indices must be integers or None");
	}
	charge(R, at, obj.t == TV_LIST ? obj.u.l->n : obj.u.s.n);
	int64_t len = (int64_t)(obj.t == TV_LIST ? obj.u.l->n : u8_count(obj.u.s.s, obj.u.s.n));
	int64_t stp = step && step->t != TV_NONE ? num_i(*step) : 1;
	if (stp == 0)
		rt_fail(R, at, "slice step cannot be zero");
	int64_t lo, hi;
	if (stp > 0) {
		lo = st && st->t != TV_NONE ? num_i(*st) : 0;
		hi = sp && sp->t != TV_NONE ? num_i(*sp) : len;
		if (lo < 0) lo += len;
		if (hi < 0) hi += len;
		lo = lo < 0 ? 0 : lo > len ? len : lo;
		hi = hi < 0 ? 0 : hi > len ? len : hi;
	} else {
		lo = st && st->t != TV_NONE ? num_i(*st) : len - 1;
		hi = sp && sp->t != TV_NONE ? num_i(*sp) : -len - 1;
		if (lo < 0) lo += len;
		if (hi < 0) hi += len;
		lo = lo < -1 ? -1 : lo > len - 1 ? len - 1 : lo;
		hi = hi < -1 ? -1 : hi > len - 1 ? len - 1 : hi;
	}
	if (obj.t == TV_LIST) {
		struct tval r = v_list(&R->c, 0);
		r.tuple = obj.tuple;
		for (int64_t i = lo; stp > 0 ? i < hi : i > hi; i += stp)
			list_push(&R->c, r.u.l, obj.u.l->v[i]);
		return r;
	}
	/* strings: code point offsets */
	size_t *offs = tj_alloc(&R->c, ((size_t)len + 1) * sizeof(size_t));
	size_t i = 0, k = 0;
	while (i < obj.u.s.n) {
		offs[k++] = i;
		u8_next(obj.u.s.s, obj.u.s.n, &i);
	}
	offs[k] = obj.u.s.n;
	struct tj_sb sb = {0};
	for (int64_t j = lo; stp > 0 ? j < hi : j > hi; j += stp)
		sb_add(&R->c, &sb, obj.u.s.s + offs[j], offs[j + 1] - offs[j]);
	return v_str(sb.s ? sb.s : "", sb.n);
}

/* Items a for loop (or list()) sees. */
static __attribute__((noinline)) struct tlist *iter_list(struct tj_render *R, const struct tnode *at, struct tval v)
{
	struct tval r;
	switch (v.t) {
	case TV_UNDEF: return v_list(&R->c, 0).u.l;
	case TV_LIST: charge(R, at, v.u.l->n); return v.u.l;
	case TV_DICT:
		r = v_list(&R->c, v.u.d->n);
		for (size_t i = 0; i < v.u.d->n; i++)
			list_push(&R->c, r.u.l, v.u.d->k[i]);
		return r.u.l;
	case TV_STR: {
		r = v_list(&R->c, 0);
		size_t i = 0;
		while (i < v.u.s.n) {
			size_t a = i;
			u8_next(v.u.s.s, v.u.s.n, &i);
			list_push(&R->c, r.u.l, v_str(v.u.s.s + a, i - a));
		}
		return r.u.l;
	}
	default: rt_fail(R, at, "'%s' object is not iterable", type_name(v));
	}
}

/* ---- calls ---- */

struct args {
	const struct tnode *at;
	struct tval *pos;
	size_t npos;
	const char **kwn;
	struct tval *kw;
	size_t nkw;
};

/* Argument |i| (positional) or |name| (keyword), or |def|. */
static struct tval arg(struct args *a, size_t i, const char *name, struct tval def)
{
	if (i < a->npos)
		return a->pos[i];
	for (size_t k = 0; name && k < a->nkw; k++)
		if (!strcmp(a->kwn[k], name))
			return a->kw[k];
	return def;
}

static struct tval need_str(struct tj_render *R, struct args *a, struct tval v, const char *what)
{
	if (v.t == TV_UNDEF)
		undef_fail(R, a->at, v);
	if (v.t != TV_STR)
		rt_fail(R, a->at, "%s must be a string, not %s", what, type_name(v));
	return v;
}

static struct tval eval(struct tj_render *R, struct frame *F, const struct tnode *n);
static int exec_body(struct tj_render *R, struct frame *F, struct tnode *const *b, size_t n);
static struct tval apply_filter(struct tj_render *R, const char *name, struct tval v, struct args *a);
static bool apply_test(struct tj_render *R, const char *name, struct tval v, struct args *a);

static bool starts_with(struct tval s, struct tval p)
{
	return p.u.s.n <= s.u.s.n && memcmp(s.u.s.s, p.u.s.s, p.u.s.n) == 0;
}

static bool ends_with(struct tval s, struct tval p)
{
	return p.u.s.n <= s.u.s.n && memcmp(s.u.s.s + s.u.s.n - p.u.s.n, p.u.s.s, p.u.s.n) == 0;
}

static const char *mem_find(const char *h, size_t hn, const char *nd, size_t nn)
{
	if (nn == 0)
		return h;
	if (nn > hn)
		return NULL;
	return memmem(h, hn, nd, nn);
}

static struct tval str_replace(struct tj_render *R, struct tval s, struct tval old, struct tval new,
			       int64_t count)
{
	struct tj_sb sb = {0};
	charge(R, NULL, s.u.s.n);
	if (old.u.s.n == 0) { /* Python inserts |new| around every character */
		size_t i = 0;
		int64_t done = 0;
		while (count < 0 || done < count) {
			sb_add(&R->c, &sb, new.u.s.s, new.u.s.n);
			done++;
			if (i >= s.u.s.n)
				break;
			size_t a = i;
			u8_next(s.u.s.s, s.u.s.n, &i);
			sb_add(&R->c, &sb, s.u.s.s + a, i - a);
		}
		sb_add(&R->c, &sb, s.u.s.s + i, s.u.s.n - i);
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	const char *p = s.u.s.s, *end = s.u.s.s + s.u.s.n;
	int64_t done = 0;
	for (;;) {
		const char *q = (count < 0 || done < count) ? mem_find(p, (size_t)(end - p), old.u.s.s, old.u.s.n) : NULL;
		if (!q) {
			sb_add(&R->c, &sb, p, (size_t)(end - p));
			break;
		}
		sb_add(&R->c, &sb, p, (size_t)(q - p));
		sb_add(&R->c, &sb, new.u.s.s, new.u.s.n);
		p = q + old.u.s.n;
		done++;
	}
	return v_str(sb.s ? sb.s : "", sb.n);
}

static struct tval str_split(struct tj_render *R, struct args *a, struct tval s, struct tval sep,
			     int64_t maxsplit)
{
	struct tval r = v_list(&R->c, 0);
	const char *p = s.u.s.s, *end = s.u.s.s + s.u.s.n;
	charge(R, a->at, s.u.s.n);
	if (sep.t == TV_NONE || sep.t == TV_UNDEF) {
		size_t i = 0, n = s.u.s.n;
		int64_t done = 0;
		for (;;) {
			size_t j;
			while (i < n && is_ws_at(p, n, i, &j))
				i = j;
			if (i >= n)
				break;
			if (maxsplit >= 0 && done >= maxsplit) { /* the rest, as it is */
				list_push(&R->c, r.u.l, v_str(p + i, n - i));
				break;
			}
			size_t st = i;
			while (i < n && !is_ws_at(p, n, i, &j))
				u8_next(p, n, &i);
			list_push(&R->c, r.u.l, v_str(p + st, i - st));
			done++;
		}
		return r;
	}
	need_str(R, a, sep, "separator");
	if (sep.u.s.n == 0)
		rt_fail(R, a->at, "empty separator");
	int64_t done = 0;
	for (;;) {
		const char *q = (maxsplit < 0 || done < maxsplit) ? mem_find(p, (size_t)(end - p), sep.u.s.s, sep.u.s.n) : NULL;
		if (!q) {
			list_push(&R->c, r.u.l, v_str(p, (size_t)(end - p)));
			return r;
		}
		list_push(&R->c, r.u.l, v_str(p, (size_t)(q - p)));
		p = q + sep.u.s.n;
		done++;
	}
}

/* Simple (one to one) case mapping from the tokenizer's Unicode tables;
 * uppercase is found as the code point whose lowercase is |c|, at the
 * offsets the cased scripts use. */
static uint32_t u_lower(uint32_t c)
{
	return tok_ucd_tolower(c);
}

static uint32_t u_upper(uint32_t c)
{
	if (c < 0x80)
		return c >= 'a' && c <= 'z' ? c - 32 : c;
	static const int32_t delta[] = {32, 1, 80, 48, 40, 37, 38, 63, 64, -121, 8, 74, 86, 100, 112, 126, 128};
	for (size_t k = 0; k < sizeof(delta) / sizeof(delta[0]); k++) {
		int64_t u = (int64_t)c - delta[k];
		if (u > 0 && u <= 0x10FFFF && u_lower((uint32_t)u) == c && (uint32_t)u != c)
			return (uint32_t)u;
	}
	return c;
}

static bool u_cased(uint32_t c)
{
	return u_lower(c) != c || u_upper(c) != c;
}

/* mode 0 upper, 1 lower, 2 str.title(), 3 str.capitalize() */
static struct tval case_map(struct tj_render *R, struct tval s, int mode)
{
	charge(R, NULL, s.u.s.n);
	char *o = tj_alloc(&R->c, s.u.s.n * 2 + 4);
	size_t i = 0, on = 0;
	bool prev_cased = false, first = true;
	while (i < s.u.s.n) {
		uint32_t c = u8_next(s.u.s.s, s.u.s.n, &i);
		bool up = mode == 0 || (mode == 2 && !prev_cased) || (mode == 3 && first);
		uint32_t m = up ? u_upper(c) : u_lower(c);
		prev_cased = u_cased(c);
		first = false;
		on += u8_put(o + on, m);
	}
	o[on] = 0;
	return v_str(o, on);
}

static struct tval str_format(struct tj_render *R, struct args *a, struct tval fmt)
{
	struct tj_sb sb = {0};
	size_t auto_idx = 0;
	const char *s = fmt.u.s.s;
	size_t n = fmt.u.s.n;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '{' && i + 1 < n && s[i + 1] == '{') {
			sb_adds(&R->c, &sb, "{");
			i++;
		} else if (s[i] == '}' && i + 1 < n && s[i + 1] == '}') {
			sb_adds(&R->c, &sb, "}");
			i++;
		} else if (s[i] == '{') {
			size_t j = i + 1;
			while (j < n && s[j] != '}')
				j++;
			if (j >= n)
				rt_fail(R, a->at, "format: single '{' encountered in format string");
			struct tval v;
			if (j == i + 1) {
				v = arg(a, auto_idx++, NULL, V_UNDEF);
			} else if (s[i + 1] >= '0' && s[i + 1] <= '9') {
				v = arg(a, (size_t)atoi(s + i + 1), NULL, V_UNDEF);
			} else {
				char *name = tj_strndup(&R->c, s + i + 1, j - i - 1);
				v = arg(a, SIZE_MAX, name, V_UNDEF);
			}
			if (v.t == TV_UNDEF)
				rt_fail(R, a->at, "format: missing argument for '%.*s'", (int)(j - i + 1), s + i);
			to_str(R, v, &sb, 0);
			i = j;
		} else {
			sb_add(&R->c, &sb, s + i, 1);
		}
	}
	return v_str(sb.s ? sb.s : "", sb.n);
}

/* Python's str.splitlines(); |extra_newline| splits s + "\n" (jinja's
 * indent filter does, so that a trailing newline survives). */
static struct tlist *splitlines(struct tj_render *R, struct tval s, bool extra_newline)
{
	struct tval r = v_list(&R->c, 0);
	size_t st = 0, i = 0, n = s.u.s.n;
	charge(R, NULL, n);
	while (i < n) {
		size_t at = i;
		uint32_t cp = u8_next(s.u.s.s, n, &i);
		if (cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) ||
		    cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
			list_push(&R->c, r.u.l, v_str(s.u.s.s + st, at - st));
			if (cp == '\r' && i < n && s.u.s.s[i] == '\n')
				i++;
			st = i;
		}
	}
	if (st < n || extra_newline)
		list_push(&R->c, r.u.l, v_str(s.u.s.s + st, n - st));
	return r.u.l;
}

/* ASCII whitespace only: scanning backwards byte by byte must not take a
 * UTF-8 continuation byte (0x85, 0xA0) for a space. */
static bool rs_space(char c)
{
	return (unsigned char)c < 0x80 && u_isspace((unsigned char)c);
}

/* str.rsplit with a maxsplit: the splits are taken from the right. */
static struct tval str_rsplit(struct tj_render *R, struct args *a, struct tval s, struct tval sep,
			      int64_t maxsplit)
{
	struct tval r = v_list(&R->c, 0);
	const char *p = s.u.s.s;
	size_t end = s.u.s.n;
	int64_t done = 0;
	charge(R, a->at, (uint64_t)s.u.s.n * (sep.t == TV_STR ? sep.u.s.n + 1 : 1));
	if (sep.t == TV_NONE || sep.t == TV_UNDEF) {
		for (;;) {
			while (end > 0 && rs_space(p[end - 1]))
				end--;
			if (end == 0)
				break;
			if (done >= maxsplit) { /* the rest, as it is */
				list_push(&R->c, r.u.l, v_str(p, end));
				break;
			}
			size_t st = end;
			while (st > 0 && !rs_space(p[st - 1]))
				st--;
			list_push(&R->c, r.u.l, v_str(p + st, end - st));
			end = st;
			done++;
		}
	} else {
		need_str(R, a, sep, "separator");
		if (sep.u.s.n == 0)
			rt_fail(R, a->at, "empty separator");
		for (;;) {
			const char *q = NULL;
			for (size_t k = end; done < maxsplit && k >= sep.u.s.n; k--)
				if (memcmp(p + k - sep.u.s.n, sep.u.s.s, sep.u.s.n) == 0) {
					q = p + k - sep.u.s.n;
					break;
				}
			if (!q) {
				list_push(&R->c, r.u.l, v_str(p, end));
				break;
			}
			list_push(&R->c, r.u.l, v_str(q + sep.u.s.n, end - (size_t)(q - p) - sep.u.s.n));
			end = (size_t)(q - p);
			done++;
		}
	}
	for (size_t i = 0, j = r.u.l->n; i + 1 < j; i++, j--) { /* collected right to left */
		struct tval t = r.u.l->v[i];
		r.u.l->v[i] = r.u.l->v[j - 1];
		r.u.l->v[j - 1] = t;
	}
	return r;
}

static struct tval call_str_method(struct tj_render *R, struct tval s, const char *m, struct args *a)
{
	if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
		struct tval chars = arg(a, 0, "chars", V_NONE);
		int which = m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3;
		size_t st, en;
		if (chars.t != TV_NONE)
			need_str(R, a, chars, "strip chars");
		charge(R, a->at, (uint64_t)s.u.s.n * (chars.t == TV_STR ? chars.u.s.n + 1 : 1));
		u8_strip(s.u.s.s, s.u.s.n, chars.t == TV_STR ? chars.u.s.s : NULL,
			 chars.t == TV_STR ? chars.u.s.n : 0, which, &st, &en);
		return v_str(s.u.s.s + st, en - st);
	}
	if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
		struct tval mx = arg(a, 1, "maxsplit", v_int(-1)), sep = arg(a, 0, "sep", V_NONE);
		int64_t maxsplit = is_num(mx) ? num_i(mx) : -1;
		if (m[0] == 's' || maxsplit < 0)
			return str_split(R, a, s, sep, maxsplit);
		return str_rsplit(R, a, s, sep, maxsplit);
	}
	if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
		struct tval p = arg(a, 0, NULL, V_UNDEF);
		bool ends = m[0] == 'e';
		charge(R, a->at, p.t == TV_STR ? p.u.s.n : 0);
		if (p.t == TV_LIST) {
			for (size_t i = 0; i < p.u.l->n; i++) {
				struct tval x = need_str(R, a, p.u.l->v[i], "prefix");
				if (ends ? ends_with(s, x) : starts_with(s, x))
					return v_bool(true);
			}
			return v_bool(false);
		}
		need_str(R, a, p, "prefix");
		return v_bool(ends ? ends_with(s, p) : starts_with(s, p));
	}
	if (!strcmp(m, "upper"))
		return case_map(R, s, 0);
	if (!strcmp(m, "lower"))
		return case_map(R, s, 1);
	if (!strcmp(m, "title"))
		return case_map(R, s, 2);
	if (!strcmp(m, "capitalize"))
		return case_map(R, s, 3);
	if (!strcmp(m, "replace")) {
		struct tval old = need_str(R, a, arg(a, 0, NULL, V_UNDEF), "replace() argument");
		struct tval new = need_str(R, a, arg(a, 1, NULL, V_UNDEF), "replace() argument");
		struct tval cnt = arg(a, 2, "count", v_int(-1));
		return str_replace(R, s, old, new, is_num(cnt) ? num_i(cnt) : -1);
	}
	if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "count")) {
		struct tval sub = need_str(R, a, arg(a, 0, NULL, V_UNDEF), "substring");
		int64_t cnt = 0, found = -1;
		charge(R, a->at, s.u.s.n * 2);
		const char *p = s.u.s.s, *end = s.u.s.s + s.u.s.n;
		for (;;) {
			const char *q = mem_find(p, (size_t)(end - p), sub.u.s.s, sub.u.s.n);
			if (!q)
				break;
			cnt++;
			found = (int64_t)u8_count(s.u.s.s, (size_t)(q - s.u.s.s));
			if (m[0] == 'f')
				return v_int(found);
			if (q == end)
				break;
			p = q + (sub.u.s.n ? sub.u.s.n : 1);
			if (p > end)
				break;
		}
		return v_int(m[0] == 'c' ? cnt : found);
	}
	if (!strcmp(m, "join")) {
		struct tlist *l = iter_list(R, a->at, arg(a, 0, NULL, V_UNDEF));
		struct tj_sb sb = {0};
		for (size_t i = 0; i < l->n; i++) {
			if (i)
				sb_add(&R->c, &sb, s.u.s.s, s.u.s.n);
			sb_add(&R->c, &sb, need_str(R, a, l->v[i], "join item").u.s.s, l->v[i].u.s.n);
		}
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	if (!strcmp(m, "format"))
		return str_format(R, a, s);
	if (!strncmp(m, "is", 2)) {
		bool ok = s.u.s.n > 0, cased = false;
		for (size_t i = 0; i < s.u.s.n; i++) {
			unsigned char ch = (unsigned char)s.u.s.s[i];
			bool dig = ch >= '0' && ch <= '9', lo = ch >= 'a' && ch <= 'z', up = ch >= 'A' && ch <= 'Z';
			bool sp = ch == ' ' || (ch >= 9 && ch <= 13);
			cased |= lo || up;
			if ((!strcmp(m, "isdigit") && !dig) || (!strcmp(m, "isalpha") && !(lo || up)) ||
			    (!strcmp(m, "isalnum") && !(lo || up || dig)) || (!strcmp(m, "isspace") && !sp) ||
			    (!strcmp(m, "islower") && up) || (!strcmp(m, "isupper") && lo))
				ok = false;
		}
		if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
			ok = ok && cased;
		return v_bool(ok);
	}
	if (!strcmp(m, "splitlines"))
		return (struct tval){.t = TV_LIST, .u.l = splitlines(R, s, false)};
	rt_fail(R, a->at, "str.%s() is not supported", m);
}

static struct tval call_method(struct tj_render *R, struct tval m, struct args *a)
{
	struct tval recv = *m.u.meth.recv;
	const char *name = m.u.meth.name;
	if (recv.t == TV_STR)
		return call_str_method(R, recv, name, a);
	if (recv.t == TV_DICT) {
		struct tdict *d = recv.u.d;
		if (!strcmp(name, "get")) {
			struct tval *p = dict_find(d, arg(a, 0, NULL, V_UNDEF));
			return p ? *p : arg(a, 1, NULL, V_NONE);
		}
		struct tval r = v_list(&R->c, d->n);
		for (size_t i = 0; i < d->n; i++) {
			if (!strcmp(name, "keys")) {
				list_push(&R->c, r.u.l, d->k[i]);
			} else if (!strcmp(name, "values")) {
				list_push(&R->c, r.u.l, d->v[i]);
			} else {
				struct tval t = v_list(&R->c, 2);
				t.tuple = 1;
				list_push(&R->c, t.u.l, d->k[i]);
				list_push(&R->c, t.u.l, d->v[i]);
				list_push(&R->c, r.u.l, t);
			}
		}
		return r;
	}
	if (recv.t == TV_LIST) { /* count(x), index(x) */
		struct tval x = arg(a, 0, NULL, V_UNDEF);
		int64_t cnt = 0;
		for (size_t i = 0; i < recv.u.l->n; i++) {
			if (!v_equal(recv.u.l->v[i], x, 0))
				continue;
			if (name[0] == 'i')
				return v_int((int64_t)i);
			cnt++;
		}
		if (name[0] == 'i')
			rt_fail(R, a->at, "list.index(x): x not in list");
		return v_int(cnt);
	}
	if (recv.t == TV_LOOP) { /* loop.cycle(a, b, ...) */
		if (a->npos == 0)
			rt_fail(R, a->at, "no items for cycling given");
		return a->pos[recv.u.loop->idx % a->npos];
	}
	rt_fail(R, a->at, "unsupported method %s", name);
}

static int64_t days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static struct tval strftime_now(struct tj_render *R, struct args *a)
{
	static const char *const mon[] = {"January", "February", "March", "April", "May", "June", "July",
					  "August", "September", "October", "November", "December"};
	static const char *const wd[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday",
					 "Friday", "Saturday"};
	struct tval f = need_str(R, a, arg(a, 0, NULL, V_UNDEF), "strftime_now format");
	struct tj_sb sb = {0};
	for (size_t i = 0; i < f.u.s.n; i++) {
		char ch = f.u.s.s[i];
		if (ch != '%' || i + 1 >= f.u.s.n) {
			sb_add(&R->c, &sb, &ch, 1);
			continue;
		}
		char k = f.u.s.s[++i];
		bool nopad = false;
		if (k == '-' && i + 1 < f.u.s.n) {
			nopad = true;
			k = f.u.s.s[++i];
		}
		const char *two = nopad ? "%d" : "%02d";
		switch (k) {
		case 'Y': sb_addf(&R->c, &sb, "%d", R->year); break;
		case 'y': sb_addf(&R->c, &sb, "%02d", R->year % 100); break;
		case 'm': sb_addf(&R->c, &sb, two, R->month); break;
		case 'd': sb_addf(&R->c, &sb, two, R->day); break;
		case 'e': sb_addf(&R->c, &sb, "%2d", R->day); break;
		case 'H': sb_addf(&R->c, &sb, two, R->hour); break;
		case 'I': sb_addf(&R->c, &sb, two, R->hour % 12 ? R->hour % 12 : 12); break;
		case 'M': sb_addf(&R->c, &sb, two, R->min); break;
		case 'S': sb_addf(&R->c, &sb, two, R->sec); break;
		case 'p': sb_adds(&R->c, &sb, R->hour < 12 ? "AM" : "PM"); break;
		case 'j': sb_addf(&R->c, &sb, nopad ? "%d" : "%03d", R->yday + 1); break;
		case 'b': sb_addf(&R->c, &sb, "%.3s", mon[R->month - 1]); break;
		case 'B': sb_adds(&R->c, &sb, mon[R->month - 1]); break;
		case 'a': sb_addf(&R->c, &sb, "%.3s", wd[R->wday]); break;
		case 'A': sb_adds(&R->c, &sb, wd[R->wday]); break;
		case 'F': sb_addf(&R->c, &sb, "%d-%02d-%02d", R->year, R->month, R->day); break;
		case '%': sb_adds(&R->c, &sb, "%"); break;
		default: sb_addf(&R->c, &sb, "%%%s%c", nopad ? "-" : "", k);
		}
	}
	return v_str(sb.s ? sb.s : "", sb.n);
}

static struct tval call_macro(struct tj_render *R, struct tval mv, struct args *a)
{
	const struct tnode *m = mv.u.mac.node;
	if (R->call_depth >= TJ_MAX_CALL_DEPTH)
		tj_fail_at(&R->c, ML_ERR_RANGE, a->at->pos, "macro calls nested deeper than %d",
			   TJ_MAX_CALL_DEPTH);
	if (a->npos > m->nnames)
		rt_fail(R, a->at, "macro '%s' takes not more than %zu argument(s)", m->s, m->nnames);
	struct frame *F = frame_new(R, mv.u.mac.closure);
	for (size_t k = 0; k < a->nkw; k++) {
		bool known = !strcmp(a->kwn[k], "caller");
		for (size_t i = 0; i < m->nnames; i++)
			known |= !strcmp(m->names[i], a->kwn[k]);
		if (!known)
			rt_fail(R, a->at, "macro '%s' takes no keyword argument '%s'", m->s, a->kwn[k]);
	}
	for (size_t i = 0; i < m->nnames; i++) {
		struct tval v = arg(a, i, m->names[i], V_UNDEF);
		if (v.t == TV_UNDEF && i >= a->npos) {
			if (m->kw[i]) {
				v = eval(R, F, m->kw[i]);
			} else {
				size_t cap = strlen(m->names[i]) + 40;
				char *msg = tj_alloc(&R->c, cap);
				snprintf(msg, cap, "parameter '%s' was not provided", m->names[i]);
				v = v_undef(msg);
			}
		}
		frame_set(R, F, m->names[i], v);
	}
	struct tval caller = arg(a, SIZE_MAX, "caller", V_UNDEF);
	if (caller.t != TV_UNDEF)
		frame_set(R, F, "caller", caller);
	struct tj_sb sb = {0}, *saved = R->out;
	R->out = &sb;
	R->call_depth++;
	exec_body(R, F, m->args, m->nargs);
	R->call_depth--;
	R->out = saved;
	return v_str(sb.s ? sb.s : "", sb.n);
}

static struct tval call(struct tj_render *R, struct tval fn, struct args *a)
{
	switch (fn.t) {
	case TV_UNDEF: undef_fail(R, a->at, fn);
	case TV_MACRO: return call_macro(R, fn, a);
	case TV_METHOD: return call_method(R, fn, a);
	case TV_FUNC:
		switch (fn.u.fn) {
		case FN_RAISE: {
			struct tval msg = v_tostr(R, arg(a, 0, NULL, V_UNDEF));
			ml_error(ML_ERR_INVALID, "%.*s", (int)(msg.u.s.n > 480 ? 480 : msg.u.s.n), msg.u.s.s);
			longjmp(*R->c.jb, ML_ERR_INVALID);
		}
		case FN_STRFTIME: return strftime_now(R, a);
		case FN_NAMESPACE:
		case FN_DICT: {
			struct tval d = v_dict(&R->c);
			struct tval first = arg(a, 0, NULL, V_UNDEF);
			if (first.t == TV_DICT || first.t == TV_NS)
				for (size_t i = 0; i < first.u.d->n; i++)
					dict_set(&R->c, d.u.d, first.u.d->k[i], first.u.d->v[i]);
			for (size_t i = 0; i < a->nkw; i++)
				dict_set_s(&R->c, d.u.d, a->kwn[i], a->kw[i]);
			if (fn.u.fn == FN_NAMESPACE)
				d.t = TV_NS;
			return d;
		}
		case FN_RANGE: {
			int64_t lo = 0, hi, step = 1;
			for (size_t i = 0; i < a->npos; i++)
				if (a->pos[i].t != TV_INT && a->pos[i].t != TV_BOOL)
					rt_fail(R, a->at, "range() arguments must be integers");
			if (a->npos == 1) {
				hi = num_i(a->pos[0]);
			} else if (a->npos == 2 || a->npos == 3) {
				lo = num_i(a->pos[0]);
				hi = num_i(a->pos[1]);
				if (a->npos == 3)
					step = num_i(a->pos[2]);
			} else {
				rt_fail(R, a->at, "range expected 1 to 3 arguments");
			}
			if (step == 0)
				rt_fail(R, a->at, "range() arg 3 must not be zero");
			struct tval r = v_list(&R->c, 0);
			for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
				if (r.u.l->n >= TJ_MAX_RANGE)
					tj_fail_at(&R->c, ML_ERR_RANGE, a->at->pos,
						   "range() longer than %d", TJ_MAX_RANGE);
				list_push(&R->c, r.u.l, v_int(i));
				if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step))
					break;
			}
			return r;
		}
		}
		/* fall through */
	default: rt_fail(R, a->at, "'%s' object is not callable", type_name(fn));
	}
}

/* ---- filters and tests ---- */

/* Python-style ordering; |ci| compares strings case-insensitively (ASCII). */
static __attribute__((noinline)) int v_compare(struct tj_render *R, const struct tnode *at, struct tval a, struct tval b, bool ci)
{
	if (is_num(a) && is_num(b)) {
		if (a.t != TV_FLOAT && b.t != TV_FLOAT)
			return num_i(a) < num_i(b) ? -1 : num_i(a) > num_i(b);
		double x = num_f(a), y = num_f(b);
		return x < y ? -1 : x > y;
	}
	if (a.t == TV_STR && b.t == TV_STR) {
		size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
		for (size_t i = 0; i < n; i++) {
			unsigned char x = (unsigned char)a.u.s.s[i], y = (unsigned char)b.u.s.s[i];
			if (ci) {
				x = x >= 'A' && x <= 'Z' ? (unsigned char)(x + 32) : x;
				y = y >= 'A' && y <= 'Z' ? (unsigned char)(y + 32) : y;
			}
			if (x != y)
				return x < y ? -1 : 1;
		}
		return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
	}
	if (a.t == TV_LIST && b.t == TV_LIST) {
		size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
		for (size_t i = 0; i < n; i++) {
			if (v_equal(a.u.l->v[i], b.u.l->v[i], 0))
				continue;
			return v_compare(R, at, a.u.l->v[i], b.u.l->v[i], ci);
		}
		return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
	}
	if (a.t == TV_UNDEF)
		undef_fail(R, at, a);
	if (b.t == TV_UNDEF)
		undef_fail(R, at, b);
	rt_fail(R, at, "'<' not supported between instances of '%s' and '%s'", type_name(a), type_name(b));
}

static __attribute__((noinline)) size_t v_length(struct tj_render *R, const struct tnode *at, struct tval v)
{
	switch (v.t) {
	case TV_UNDEF: return 0;
	case TV_STR: charge(R, at, v.u.s.n); return u8_count(v.u.s.s, v.u.s.n);
	case TV_LIST: return v.u.l->n;
	case TV_DICT:
	case TV_NS: return v.u.d->n;
	default: rt_fail(R, at, "object of type '%s' has no len()", type_name(v));
	}
}

static __attribute__((noinline)) bool v_contains(struct tj_render *R, const struct tnode *at, struct tval hay, struct tval x)
{
	switch (hay.t) {
	case TV_UNDEF: return false;
	case TV_STR:
		if (x.t != TV_STR)
			rt_fail(R, at, "'in <string>' requires string as left operand, not %s", type_name(x));
		charge(R, at, hay.u.s.n + x.u.s.n);
		return mem_find(hay.u.s.s, hay.u.s.n, x.u.s.s, x.u.s.n) != NULL;
	case TV_LIST:
		charge(R, at, hay.u.l->n);
		for (size_t i = 0; i < hay.u.l->n; i++)
			if (v_equal(hay.u.l->v[i], x, 0))
				return true;
		return false;
	case TV_DICT:
	case TV_NS: return dict_find(hay.u.d, x) != NULL;
	default: rt_fail(R, at, "argument of type '%s' is not iterable", type_name(hay));
	}
}

/* selectattr/rejectattr/select/reject: |attr| when filtering on an attribute. */
static struct tval filter_select(struct tj_render *R, struct tval seq, struct args *a, bool attr, bool keep)
{
	if (!truthy(seq)) /* jinja2 skips a false sequence without iterating it */
		return v_list(&R->c, 0);
	struct tlist *l = iter_list(R, a->at, seq);
	struct tval r = v_list(&R->c, 0);
	size_t first = attr ? 1 : 0;
	struct tval test = arg(a, first, NULL, V_UNDEF);
	struct args ta = *a;
	ta.pos = a->npos > first + 1 ? a->pos + first + 1 : NULL;
	ta.npos = a->npos > first + 1 ? a->npos - first - 1 : 0;
	ta.nkw = 0;
	if (test.t != TV_UNDEF)
		need_str(R, a, test, "test name");
	const char *tname = test.t == TV_STR ? tj_strndup(&R->c, test.u.s.s, test.u.s.n) : NULL;
	const char *aname = NULL;
	if (attr) {
		struct tval an = need_str(R, a, arg(a, 0, NULL, V_UNDEF), "attribute name");
		aname = tj_strndup(&R->c, an.u.s.s, an.u.s.n);
	}
	for (size_t i = 0; i < l->n; i++) {
		struct tval x = l->v[i];
		if (aname)
			x = get_attr(R, a->at, x, aname);
		bool ok = tname ? apply_test(R, tname, x, &ta) : truthy(x);
		if (ok == keep)
			list_push(&R->c, r.u.l, l->v[i]);
	}
	return r;
}

static struct tval attr_path(struct tj_render *R, const struct tnode *at, struct tval v, struct tval path)
{
	if (path.t == TV_INT)
		return get_item(R, at, v, path);
	const char *s = path.u.s.s, *end = s + path.u.s.n;
	while (s < end) {
		const char *dot = memchr(s, '.', (size_t)(end - s));
		size_t n = dot ? (size_t)(dot - s) : (size_t)(end - s);
		bool digits = n > 0;
		for (size_t i = 0; i < n; i++)
			digits &= s[i] >= '0' && s[i] <= '9';
		if (digits)
			v = get_item(R, at, v, v_int(atoll(tj_strndup(&R->c, s, n))));
		else
			v = get_attr(R, at, v, tj_strndup(&R->c, s, n));
		s += n + (dot ? 1 : 0);
	}
	return v;
}

static struct tval apply_filter(struct tj_render *R, const char *f, struct tval v, struct args *a)
{
	const struct tnode *at = a->at;
	if (!strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape") || !strcmp(f, "forceescape"))
		return v_tostr(R, v); /* Markup(str(v)); autoescape is off as in transformers */
	if (!strcmp(f, "default") || !strcmp(f, "d")) {
		bool boolean = truthy(arg(a, 1, "boolean", v_bool(false)));
		if (v.t == TV_UNDEF || (boolean && !truthy(v)))
			return arg(a, 0, "default_value", v_str("", 0));
		return v;
	}
	if (!strcmp(f, "length") || !strcmp(f, "count"))
		return v_int((int64_t)v_length(R, at, v));
	if (!strcmp(f, "string"))
		return v_tostr(R, v);
	if (!strcmp(f, "trim")) {
		struct tval s = v_tostr(R, v), chars = arg(a, 0, "chars", V_NONE);
		size_t st, en;
		if (chars.t != TV_NONE)
			need_str(R, a, chars, "trim chars");
		charge(R, at, (uint64_t)s.u.s.n * (chars.t == TV_STR ? chars.u.s.n + 1 : 1));
		u8_strip(s.u.s.s, s.u.s.n, chars.t == TV_STR ? chars.u.s.s : NULL,
			 chars.t == TV_STR ? chars.u.s.n : 0, 3, &st, &en);
		return v_str(s.u.s.s + st, en - st);
	}
	if (!strcmp(f, "title")) {
		/* words start after runs of whitespace, '-', '(', '{', '[' or '<' */
		struct tval s = v_tostr(R, v);
		char *o = tj_alloc(&R->c, s.u.s.n * 2 + 4);
		size_t i = 0, on = 0;
		bool start = true;
		while (i < s.u.s.n) {
			size_t at = i, nx;
			char ch = s.u.s.s[i];
			bool sep = strchr("-({[<", ch) != NULL && ch;
			if (!sep && is_ws_at(s.u.s.s, s.u.s.n, i, &nx)) {
				sep = true;
				i = nx;
			} else {
				u8_next(s.u.s.s, s.u.s.n, &i);
			}
			if (sep) {
				memcpy(o + on, s.u.s.s + at, i - at);
				on += i - at;
			} else {
				size_t j = at;
				uint32_t c = u8_next(s.u.s.s, s.u.s.n, &j);
				on += u8_put(o + on, start ? u_upper(c) : u_lower(c));
			}
			start = sep;
		}
		o[on] = 0;
		return v_str(o, on);
	}
	if (!strcmp(f, "center")) {
		struct tval s = v_tostr(R, v), w = arg(a, 0, "width", v_int(80));
		charge(R, at, s.u.s.n);
		int64_t width = is_num(w) ? num_i(w) : 80, len = (int64_t)u8_count(s.u.s.s, s.u.s.n);
		if (width > 4096)
			width = 4096;
		if (width <= len)
			return s;
		int64_t marg = width - len, left = marg / 2 + (marg & width & 1); /* as CPython */
		struct tj_sb sb = {0};
		for (int64_t i = 0; i < left; i++)
			sb_adds(&R->c, &sb, " ");
		sb_add(&R->c, &sb, s.u.s.s, s.u.s.n);
		for (int64_t i = 0; i < marg - left; i++)
			sb_adds(&R->c, &sb, " ");
		return v_str(sb.s, sb.n);
	}
	if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize")) {
		int mode = f[0] == 'u' ? 0 : f[0] == 'l' ? 1 : 3;
		return case_map(R, v_tostr(R, v), mode);
	}
	if (!strcmp(f, "first") || !strcmp(f, "last")) {
		struct tlist *l = iter_list(R, at, v);
		if (l->n == 0)
			return v_undef(f[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty.");
		return f[0] == 'f' ? l->v[0] : l->v[l->n - 1];
	}
	if (!strcmp(f, "join")) {
		struct tlist *l = iter_list(R, at, v);
		struct tval sep = v_tostr(R, arg(a, 0, "d", v_str("", 0)));
		struct tval attr = arg(a, 1, "attribute", V_NONE);
		struct tj_sb sb = {0};
		for (size_t i = 0; i < l->n; i++) {
			if (i)
				sb_add(&R->c, &sb, sep.u.s.s, sep.u.s.n);
			to_str(R, attr.t == TV_NONE ? l->v[i] : attr_path(R, at, l->v[i], attr), &sb, 0);
		}
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	if (!strcmp(f, "replace")) {
		struct tval s = v_tostr(R, v);
		struct tval old = v_tostr(R, arg(a, 0, "old", V_UNDEF));
		struct tval new = v_tostr(R, arg(a, 1, "new", V_UNDEF));
		struct tval cnt = arg(a, 2, "count", V_NONE);
		return str_replace(R, s, old, new, is_num(cnt) ? num_i(cnt) : -1);
	}
	if (!strcmp(f, "tojson")) {
		struct json_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
		struct tval ind = arg(a, 0, "indent", V_NONE), sep = arg(a, 2, "separators", V_NONE);
		if (ind.t == TV_INT)
			o.indent = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : (int)ind.u.i;
		if (o.indent >= 0)
			o.item_sep = ",";
		o.ensure_ascii = truthy(arg(a, 1, "ensure_ascii", v_bool(false)));
		o.sort_keys = truthy(arg(a, 3, "sort_keys", v_bool(false)));
		if (sep.t == TV_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == TV_STR && sep.u.l->v[1].t == TV_STR) {
			o.item_sep = v_tostr(R, sep.u.l->v[0]).u.s.s;
			o.key_sep = v_tostr(R, sep.u.l->v[1]).u.s.s;
		}
		struct tj_sb sb = {0};
		json(R, at, v, &sb, &o, 0);
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	if (!strcmp(f, "int") || !strcmp(f, "float")) {
		bool isint = f[0] == 'i';
		struct tval def = arg(a, 0, "default", isint ? v_int(0) : v_float(0.0));
		if (v.t == TV_UNDEF) /* int(Undefined) raises in jinja2 */
			undef_fail(R, at, v);
		if (is_num(v))
			return isint ? v_int(num_i(v)) : v_float(num_f(v));
		if (v.t == TV_STR) {
			char *s = tj_strndup(&R->c, v.u.s.s, v.u.s.n), *e;
			while (*s == ' ' || *s == '\t' || *s == '\n')
				s++;
			if (isint) {
				long long x = strtoll(s, &e, 10);
				if (e != s && (*e == 0 || *e == ' ' || *e == '\n'))
					return v_int(x);
				double d = strtod(s, &e);
				if (e != s && *e == 0 && isfinite(d) && fabs(d) < 9e18)
					return v_int((int64_t)d);
			} else {
				double d = strtod(s, &e);
				if (e != s && (*e == 0 || *e == ' ' || *e == '\n'))
					return v_float(d);
			}
		}
		return def;
	}
	if (!strcmp(f, "list"))
		return (struct tval){.t = TV_LIST, .u.l = iter_list(R, at, v)};
	if (!strcmp(f, "items")) {
		if (v.t == TV_UNDEF)
			return v_list(&R->c, 0);
		if (v.t != TV_DICT && v.t != TV_NS)
			rt_fail(R, at, "Can only get item pairs from a mapping.");
		struct tval m = method(R, v, "items", 5);
		m.u.meth.recv->t = TV_DICT;
		struct args none = {.at = at};
		return call_method(R, m, &none);
	}
	if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr"))
		return filter_select(R, v, a, true, f[0] == 's');
	if (!strcmp(f, "select") || !strcmp(f, "reject"))
		return filter_select(R, v, a, false, f[0] == 's');
	if (!strcmp(f, "map")) {
		struct tlist *l = truthy(v) ? iter_list(R, at, v) : v_list(&R->c, 0).u.l;
		struct tval r = v_list(&R->c, l->n);
		struct tval attr = arg(a, SIZE_MAX, "attribute", V_UNDEF);
		if (attr.t != TV_UNDEF) {
			struct tval def = arg(a, SIZE_MAX, "default", V_UNDEF);
			for (size_t i = 0; i < l->n; i++) {
				struct tval x = attr_path(R, at, l->v[i], attr);
				list_push(&R->c, r.u.l, x.t == TV_UNDEF && def.t != TV_UNDEF ? def : x);
			}
			return r;
		}
		struct tval fname = need_str(R, a, arg(a, 0, NULL, V_UNDEF), "filter name");
		const char *fn = tj_strndup(&R->c, fname.u.s.s, fname.u.s.n);
		struct args fa = *a;
		fa.pos = a->npos > 1 ? a->pos + 1 : NULL;
		fa.npos = a->npos > 1 ? a->npos - 1 : 0;
		for (size_t i = 0; i < l->n; i++)
			list_push(&R->c, r.u.l, apply_filter(R, fn, l->v[i], &fa));
		return r;
	}
	if (!strcmp(f, "indent")) {
		if (v.t == TV_UNDEF)
			undef_fail(R, at, v);
		if (v.t != TV_STR) /* jinja2 appends "\n" to the value itself */
			rt_fail(R, at, "unsupported operand type(s) for +=: '%s' and 'str'", type_name(v));
		struct tval s = v;
		struct tval w = arg(a, 0, "width", v_int(4));
		bool first = truthy(arg(a, 1, "first", v_bool(false)));
		bool blank = truthy(arg(a, 2, "blank", v_bool(false)));
		struct tval pad = w.t == TV_STR ? w : v_str("", 0);
		if (w.t != TV_STR) {
			int64_t k = is_num(w) ? num_i(w) : 4;
			k = k < 0 ? 0 : k > 256 ? 256 : k;
			char *p = tj_alloc(&R->c, (size_t)k + 1);
			memset(p, ' ', (size_t)k);
			pad = v_str(p, (size_t)k);
		}
		struct tj_sb sb = {0};
		struct tlist *lines = splitlines(R, v_str(s.u.s.s, s.u.s.n), true);
		if (first)
			sb_add(&R->c, &sb, pad.u.s.s, pad.u.s.n);
		for (size_t i = 0; i < lines->n; i++) {
			struct tval ln = lines->v[i];
			if (i) {
				sb_adds(&R->c, &sb, "\n");
				if (blank || ln.u.s.n)
					sb_add(&R->c, &sb, pad.u.s.s, pad.u.s.n);
			}
			sb_add(&R->c, &sb, ln.u.s.s, ln.u.s.n);
		}
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	if (!strcmp(f, "round")) {
		struct tval p = arg(a, 0, "precision", v_int(0));
		struct tval m = arg(a, 1, "method", v_str("common", 6));
		if (!is_num(v))
			rt_fail(R, at, "round needs a number, not %s", type_name(v));
		int64_t prec = is_num(p) ? num_i(p) : 0;
		prec = prec < -300 ? -300 : prec > 300 ? 300 : prec;
		double x = num_f(v), scale = pow(10.0, (double)prec);
		if (str_eq(m, "floor")) {
			x = floor(x * scale) / scale;
		} else if (str_eq(m, "ceil")) {
			x = ceil(x * scale) / scale;
		} else if (prec >= 0 && isfinite(x)) {
			/* Python's round() rounds the exact binary value half to
			 * even, as printf does */
			char buf[400];
			snprintf(buf, sizeof(buf), "%.*f", (int)prec, x);
			x = strtod(buf, NULL);
		} else {
			x = nearbyint(x * scale) / scale;
		}
		return v_float(x);
	}
	if (!strcmp(f, "abs")) {
		if (v.t == TV_INT || v.t == TV_BOOL)
			return v_int(num_i(v) < 0 && num_i(v) != INT64_MIN ? -num_i(v) : num_i(v));
		if (is_num(v))
			return v_float(fabs(num_f(v)));
		rt_fail(R, at, "bad operand type for abs(): '%s'", type_name(v));
	}
	if (!strcmp(f, "reverse")) {
		if (v.t == TV_STR) {
			struct tval st = v_int(0), sp = V_NONE, step = v_int(-1);
			st = V_NONE;
			return slice(R, at, v, &st, &sp, &step);
		}
		struct tlist *l = iter_list(R, at, v);
		struct tval r = v_list(&R->c, l->n);
		for (size_t i = l->n; i-- > 0;)
			list_push(&R->c, r.u.l, l->v[i]);
		return r;
	}
	if (!strcmp(f, "unique") || !strcmp(f, "sort") || !strcmp(f, "min") || !strcmp(f, "max")) {
		struct tlist *l = iter_list(R, at, v);
		bool is_sort = f[0] == 's';
		bool cs = truthy(arg(a, is_sort ? 1 : 0, "case_sensitive", v_bool(false)));
		struct tval attr = arg(a, is_sort ? 2 : 1, "attribute", V_NONE);
		struct tval r = v_list(&R->c, l->n);
		for (size_t i = 0; i < l->n; i++) {
			struct tval key = attr.t == TV_NONE ? l->v[i] : attr_path(R, at, l->v[i], attr);
			bool dup = false;
			if (f[0] == 'u')
				charge(R, at, r.u.l->n);
			for (size_t j = 0; f[0] == 'u' && j < r.u.l->n && !dup; j++) {
				struct tval kj = attr.t == TV_NONE ? r.u.l->v[j] : attr_path(R, at, r.u.l->v[j], attr);
				dup = key.t == TV_STR && kj.t == TV_STR ? v_compare(R, at, key, kj, !cs) == 0 : v_equal(key, kj, 0);
			}
			if (!dup)
				list_push(&R->c, r.u.l, l->v[i]);
		}
		if (f[0] == 'u')
			return r;
		bool rev = is_sort && truthy(arg(a, 0, "reverse", v_bool(false)));
		/* merge sort: stable, like Python's; equal keys keep their order
		 * also when reversed */
		size_t cnt = r.u.l->n;
		struct tval *src = r.u.l->v, *dst = cnt ? tj_alloc(&R->c, cnt * sizeof(*dst)) : NULL;
		for (size_t width = 1; width < cnt; width *= 2) {
			charge(R, at, cnt);
			for (size_t lo = 0; lo < cnt; lo += 2 * width) {
				size_t mid = lo + width < cnt ? lo + width : cnt;
				size_t hi = lo + 2 * width < cnt ? lo + 2 * width : cnt;
				size_t i = lo, j = mid, o = lo;
				while (i < mid && j < hi) {
					struct tval ki = attr.t == TV_NONE ? src[i] : attr_path(R, at, src[i], attr);
					struct tval kj = attr.t == TV_NONE ? src[j] : attr_path(R, at, src[j], attr);
					int c = v_compare(R, at, ki, kj, !cs);
					dst[o++] = (rev ? c >= 0 : c <= 0) ? src[i++] : src[j++];
				}
				while (i < mid)
					dst[o++] = src[i++];
				while (j < hi)
					dst[o++] = src[j++];
			}
			struct tval *t = src;
			src = dst;
			dst = t;
		}
		r.u.l->v = src;
		r.u.l->cap = cnt;
		if (is_sort)
			return r;
		if (r.u.l->n == 0)
			return v_undef("No aggregated item, sequence was empty.");
		return f[1] == 'i' ? r.u.l->v[0] : r.u.l->v[r.u.l->n - 1];
	}
	if (!strcmp(f, "sum")) {
		struct tlist *l = iter_list(R, at, v);
		struct tval attr = arg(a, 0, "attribute", V_NONE);
		struct tval acc = arg(a, 1, "start", v_int(0));
		for (size_t i = 0; i < l->n; i++) {
			struct tval x = attr.t == TV_NONE ? l->v[i] : attr_path(R, at, l->v[i], attr);
			if (!is_num(x) || !is_num(acc))
				rt_fail(R, at, "sum: unsupported operand type '%s'", type_name(x));
			if (x.t == TV_FLOAT || acc.t == TV_FLOAT)
				acc = v_float(num_f(acc) + num_f(x));
			else if (__builtin_add_overflow(num_i(acc), num_i(x), &acc.u.i))
				rt_fail(R, at, "integer overflow");
			else
				acc.t = TV_INT;
		}
		return acc;
	}
	if (!strcmp(f, "dictsort")) {
		if (v.t != TV_DICT)
			rt_fail(R, at, "dictsort needs a mapping, not %s", type_name(v));
		struct args none = {.at = at};
		struct tval items = call_method(R, method(R, v, "items", 5), &none);
		struct tval sorted = apply_filter(R, "sort", items, &none);
		return sorted;
	}
	if (!strcmp(f, "wordcount")) { /* runs of \\w: letters, digits, '_' */
		struct tval s = v_tostr(R, v);
		int64_t words = 0;
		charge(R, at, s.u.s.n);
		bool in_word = false;
		size_t i = 0;
		while (i < s.u.s.n) {
			uint32_t cp = u8_next(s.u.s.s, s.u.s.n, &i);
			bool w = (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
				 cp == '_' || (cp >= 0xAA && !u_isspace(cp) && !u_ispunct(cp));
			words += w && !in_word;
			in_word = w;
		}
		return v_int(words);
	}
	rt_fail(R, at, "no filter named '%s'", f);
}

static struct tval arith(struct tj_render *R, const struct tnode *n, int op, struct tval a, struct tval b);

static bool apply_test(struct tj_render *R, const char *t, struct tval v, struct args *a)
{
	const struct tnode *at = a->at;
	struct tval x = arg(a, 0, NULL, V_UNDEF);
	if (!strcmp(t, "defined"))
		return v.t != TV_UNDEF;
	if (!strcmp(t, "undefined"))
		return v.t == TV_UNDEF;
	if (!strcmp(t, "none"))
		return v.t == TV_NONE;
	if (!strcmp(t, "string"))
		return v.t == TV_STR;
	if (!strcmp(t, "mapping"))
		return v.t == TV_DICT;
	if (!strcmp(t, "iterable"))
		return v.t == TV_UNDEF || v.t == TV_STR || v.t == TV_LIST || v.t == TV_DICT;
	if (!strcmp(t, "sequence"))
		return v.t == TV_UNDEF || v.t == TV_STR || v.t == TV_LIST || v.t == TV_DICT;
	if (!strcmp(t, "number"))
		return is_num(v);
	if (!strcmp(t, "integer"))
		return v.t == TV_INT;
	if (!strcmp(t, "float"))
		return v.t == TV_FLOAT;
	if (!strcmp(t, "boolean"))
		return v.t == TV_BOOL;
	if (!strcmp(t, "true"))
		return v.t == TV_BOOL && v.u.b;
	if (!strcmp(t, "false"))
		return v.t == TV_BOOL && !v.u.b;
	if (!strcmp(t, "callable"))
		return v.t == TV_MACRO || v.t == TV_FUNC || v.t == TV_METHOD || v.t == TV_UNDEF;
	if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "=="))
		return v_equal(v, x, 0);
	if (!strcmp(t, "ne") || !strcmp(t, "!="))
		return !v_equal(v, x, 0);
	if (!strcmp(t, "sameas"))
		return v.t == x.t && (v.t == TV_NONE || v.t == TV_UNDEF || (v.t == TV_BOOL && v.u.b == x.u.b) ||
				      v_equal(v, x, 0));
	if (!strcmp(t, "gt") || !strcmp(t, ">") || !strcmp(t, "greaterthan"))
		return v_compare(R, at, v, x, false) > 0;
	if (!strcmp(t, "ge") || !strcmp(t, ">="))
		return v_compare(R, at, v, x, false) >= 0;
	if (!strcmp(t, "lt") || !strcmp(t, "<") || !strcmp(t, "lessthan"))
		return v_compare(R, at, v, x, false) < 0;
	if (!strcmp(t, "le") || !strcmp(t, "<="))
		return v_compare(R, at, v, x, false) <= 0;
	if (!strcmp(t, "in"))
		return v_contains(R, at, x, v);
	if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
		/* value % 2 == 1, value % 2 == 0, value % num == 0 */
		struct tval r = arith(R, at, OP_MOD, v, t[0] == 'd' ? x : v_int(2));
		return v_equal(r, v_int(t[0] == 'o' ? 1 : 0), 0);
	}
	if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
		if (v.t != TV_STR)
			return false;
		struct tval m = case_map(R, v, t[0] == 'l' ? 1 : 0);
		bool cased = false;
		size_t i = 0;
		while (i < v.u.s.n)
			cased |= u_cased(u8_next(v.u.s.s, v.u.s.n, &i));
		return cased && v_equal(m, v, 0);
	}
	rt_fail(R, at, "no test named '%s'", t);
}

/* ---- expressions ---- */

static void eval_args(struct tj_render *R, struct frame *F, const struct tnode *n, struct args *a,
		      size_t skip)
{
	a->at = n;
	a->npos = n->nargs > skip ? n->nargs - skip : 0;
	a->pos = a->npos ? tj_alloc(&R->c, a->npos * sizeof(struct tval)) : NULL;
	for (size_t i = 0; i < a->npos; i++)
		a->pos[i] = eval(R, F, n->args[i + skip]);
	a->nkw = n->nkw;
	a->kwn = n->kwn;
	a->kw = n->nkw ? tj_alloc(&R->c, n->nkw * sizeof(struct tval)) : NULL;
	for (size_t i = 0; i < n->nkw; i++)
		a->kw[i] = eval(R, F, n->kw[i]);
}

static struct tval str_percent(struct tj_render *R, const struct tnode *n, struct tval fmt, struct tval args);

static __attribute__((noinline)) struct tval arith(struct tj_render *R, const struct tnode *n, int op,
						  struct tval a, struct tval b)
{
	if (op == OP_CONCAT) {
		struct tj_sb sb = {0};
		to_str(R, a, &sb, 0);
		to_str(R, b, &sb, 0);
		return v_str(sb.s ? sb.s : "", sb.n);
	}
	if (a.t == TV_UNDEF)
		undef_fail(R, n, a);
	if (b.t == TV_UNDEF)
		undef_fail(R, n, b);
	if (op == OP_MOD && a.t == TV_STR)
		return str_percent(R, n, a, b);
	if (op == OP_ADD && a.t == TV_STR && b.t == TV_STR) {
		size_t len = a.u.s.n + b.u.s.n;
		if (len > TJ_MAX_OUTPUT)
			tj_fail_at(&R->c, ML_ERR_RANGE, n->pos, "string longer than %u bytes", TJ_MAX_OUTPUT);
		char *s = tj_alloc(&R->c, len + 1);
		memcpy(s, a.u.s.s, a.u.s.n);
		memcpy(s + a.u.s.n, b.u.s.s, b.u.s.n);
		s[len] = 0;
		return v_str(s, len);
	}
	if (op == OP_ADD && a.t == TV_LIST && b.t == TV_LIST) {
		struct tval r = v_list(&R->c, a.u.l->n + b.u.l->n);
		r.tuple = a.tuple;
		for (size_t i = 0; i < a.u.l->n; i++)
			list_push(&R->c, r.u.l, a.u.l->v[i]);
		for (size_t i = 0; i < b.u.l->n; i++)
			list_push(&R->c, r.u.l, b.u.l->v[i]);
		return r;
	}
	if (op == OP_MUL && (a.t == TV_STR || a.t == TV_LIST || b.t == TV_STR || b.t == TV_LIST)) {
		struct tval seq = a.t == TV_STR || a.t == TV_LIST ? a : b, k = seq.t == a.t ? b : a;
		if (k.t != TV_INT && k.t != TV_BOOL)
			rt_fail(R, n, "can't multiply sequence by non-int of type '%s'", type_name(k));
		int64_t times = num_i(k) < 0 ? 0 : num_i(k);
		size_t unit = seq.t == TV_STR ? seq.u.s.n : seq.u.l->n;
		if (unit == 0) /* empty, however many times */
			times = 0;
		if (unit && (uint64_t)times > TJ_MAX_OUTPUT / unit)
			tj_fail_at(&R->c, ML_ERR_RANGE, n->pos, "sequence repetition too long");
		if (seq.t == TV_STR) {
			struct tj_sb sb = {0};
			for (int64_t i = 0; i < times; i++)
				sb_add(&R->c, &sb, seq.u.s.s, seq.u.s.n);
			return v_str(sb.s ? sb.s : "", sb.n);
		}
		struct tval r = v_list(&R->c, 0);
		for (int64_t i = 0; i < times; i++)
			for (size_t j = 0; j < unit; j++)
				list_push(&R->c, r.u.l, seq.u.l->v[j]);
		return r;
	}
	if (!is_num(a) || !is_num(b)) {
		static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
		rt_fail(R, n, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], type_name(a),
			type_name(b));
	}
	if (op == OP_DIV) {
		if (num_f(b) == 0.0)
			rt_fail(R, n, "division by zero");
		return v_float(num_f(a) / num_f(b));
	}
	if (a.t != TV_FLOAT && b.t != TV_FLOAT) {
		int64_t x = num_i(a), y = num_i(b), r = 0;
		bool ovf = false;
		switch (op) {
		case OP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
		case OP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
		case OP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
		case OP_FDIV:
		case OP_MOD:
			if (y == 0)
				rt_fail(R, n, "integer division or modulo by zero");
			if (x == INT64_MIN && y == -1) {
				ovf = op == OP_FDIV;
				r = 0;
				break;
			}
			r = op == OP_FDIV ? x / y : x % y;
			if ((x % y != 0) && ((x < 0) != (y < 0)))
				r = op == OP_FDIV ? r - 1 : r + y;
			break;
		case OP_POW:
			if (y < 0)
				return v_float(pow((double)x, (double)y));
			r = 1;
			for (int64_t i = 0; i < y && !ovf; i++) {
				ovf = __builtin_mul_overflow(r, x, &r);
				if (r == 0 || r == 1)
					break;
				if (r == -1)
					r = (y - i - 1) % 2 ? -1 : 1, i = y;
			}
			break;
		}
		if (ovf)
			rt_fail(R, n, "integer overflow");
		return v_int(r);
	}
	double x = num_f(a), y = num_f(b);
	switch (op) {
	case OP_ADD: return v_float(x + y);
	case OP_SUB: return v_float(x - y);
	case OP_MUL: return v_float(x * y);
	case OP_POW: return v_float(pow(x, y));
	default:
		if (y == 0.0)
			rt_fail(R, n, "float division by zero");
		if (op == OP_FDIV)
			return v_float(floor(x / y));
		double m = fmod(x, y);
		if (m != 0.0 && ((m < 0) != (y < 0)))
			m += y;
		return v_float(m);
	}
}

/* Python's printf-style str % args for the usual conversions. */
static struct tval str_percent(struct tj_render *R, const struct tnode *n, struct tval fmt, struct tval args)
{
	struct tval *argv = &args;
	size_t argc = 1, used = 0;
	if (args.t == TV_LIST && args.tuple) {
		argv = args.u.l->v;
		argc = args.u.l->n;
	}
	struct tj_sb sb = {0};
	const char *s = fmt.u.s.s;
	size_t len = fmt.u.s.n;
	bool mapped = false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			sb_add(&R->c, &sb, s + i, 1);
			continue;
		}
		if (++i >= len)
			rt_fail(R, n, "incomplete format");
		struct tval v;
		if (s[i] == '%') {
			sb_adds(&R->c, &sb, "%");
			continue;
		}
		if (s[i] == '(') {
			size_t j = i + 1;
			while (j < len && s[j] != ')')
				j++;
			if (j >= len || args.t != TV_DICT)
				rt_fail(R, n, "format requires a mapping");
			struct tval *p = dict_find(args.u.d, v_str(s + i + 1, j - i - 1));
			if (!p)
				rt_fail(R, n, "format key '%.*s' not found", (int)(j - i - 1), s + i + 1);
			v = *p;
			mapped = true;
			i = j + 1;
		} else {
			if (used >= argc)
				rt_fail(R, n, "not enough arguments for format string");
			v = argv[used++];
		}
		char spec[32];
		size_t k = 0;
		spec[k++] = '%';
		while (i < len && strchr("-+ 0#", s[i]) && s[i] && k < 8)
			spec[k++] = s[i++];
		while (i < len && s[i] >= '0' && s[i] <= '9' && k < 16)
			spec[k++] = s[i++];
		if (i < len && s[i] == '.') {
			spec[k++] = s[i++];
			while (i < len && s[i] >= '0' && s[i] <= '9' && k < 24)
				spec[k++] = s[i++];
		}
		if (i >= len)
			rt_fail(R, n, "incomplete format");
		char conv = s[i];
		char buf[512];
		if (conv == 's' || conv == 'r' || conv == 'a') {
			struct tj_sb t = {0};
			if (conv == 's')
				to_str(R, v, &t, 0);
			else
				repr(R, v, &t, 1);
			/* width pads and .precision cuts, in code points */
			spec[k] = 0;
			charge(R, n, t.n);
			bool left = strchr(spec, '-') != NULL;
			const char *dot = strchr(spec, '.');
			size_t wstart = 1;
			while (spec[wstart] && strchr("-+ 0#", spec[wstart]))
				wstart++;
			long width = atol(spec + wstart);
			size_t keep = t.n;
			if (dot)
				keep = u8_offset(t.s ? t.s : "", t.n, (size_t)atol(dot + 1));
			long cps = (long)u8_count(t.s ? t.s : "", keep);
			for (long pad = width - cps; !left && pad > 0; pad--)
				sb_adds(&R->c, &sb, " ");
			sb_add(&R->c, &sb, t.s, keep);
			for (long pad = width - cps; left && pad > 0; pad--)
				sb_adds(&R->c, &sb, " ");
		} else if (strchr("diouxXc", conv) && conv) {
			if (!is_num(v))
				rt_fail(R, n, "%%%c format: a number is required, not %s", conv, type_name(v));
			memcpy(spec + k, "ll", 2);
			k += 2;
			spec[k++] = conv == 'i' || conv == 'u' ? 'd' : conv;
			spec[k] = 0;
			snprintf(buf, sizeof(buf), spec, (long long)num_i(v));
			sb_adds(&R->c, &sb, buf);
		} else if (strchr("eEfFgG", conv) && conv) {
			if (!is_num(v))
				rt_fail(R, n, "must be real number, not %s", type_name(v));
			spec[k++] = conv;
			spec[k] = 0;
			snprintf(buf, sizeof(buf), spec, num_f(v));
			sb_adds(&R->c, &sb, buf);
		} else {
			rt_fail(R, n, "unsupported format character '%c'", conv);
		}
	}
	if (!mapped && used < argc && !(args.t == TV_LIST && !args.tuple) && args.t != TV_DICT)
		rt_fail(R, n, "not all arguments converted during string formatting");
	return v_str(sb.s ? sb.s : "", sb.n);
}

static struct tval eval_node(struct tj_render *R, struct frame *F, const struct tnode *n);
static struct tval eval(struct tj_render *R, struct frame *F, const struct tnode *n);

/* Calls, filters and tests, out of line to keep eval_node's frame small. */
static __attribute__((noinline)) struct tval eval_call(struct tj_render *R, struct frame *F,
						       const struct tnode *n)
{
	struct tval v = eval(R, F, n->a);
	struct args a;
	eval_args(R, F, n, &a, 0);
	if (n->kind == E_CALL)
		return call(R, v, &a);
	if (n->kind == E_FILTER)
		return apply_filter(R, n->s, v, &a);
	bool r = apply_test(R, n->s, v, &a);
	return v_bool(n->op ? !r : r);
}

static void depth_enter(struct tj_render *R, const struct tnode *n)
{
	if (++R->eval_depth > TJ_MAX_EVAL_DEPTH)
		tj_fail_at(&R->c, ML_ERR_RANGE, n ? n->pos : 0, "template evaluation nested deeper than %d",
			   TJ_MAX_EVAL_DEPTH);
}

static struct tval eval(struct tj_render *R, struct frame *F, const struct tnode *n)
{
	depth_enter(R, n);
	struct tval v = eval_node(R, F, n);
	R->eval_depth--;
	return v;
}

static struct tval eval_node(struct tj_render *R, struct frame *F, const struct tnode *n)
{
	switch (n->kind) {
	case E_LIT: return n->lit;
	case E_NAME: return lookup(R, F, n->s);
	case E_LIST: {
		struct tval r = v_list(&R->c, n->nargs);
		r.tuple = n->op ? 1 : 0;
		for (size_t i = 0; i < n->nargs; i++)
			list_push(&R->c, r.u.l, eval(R, F, n->args[i]));
		return r;
	}
	case E_DICT: {
		struct tval d = v_dict(&R->c);
		for (size_t i = 0; i < n->nargs; i++) {
			struct tval k = eval(R, F, n->args[i]);
			if (k.t == TV_LIST && !k.tuple)
				rt_fail(R, n, "unhashable type: 'list'");
			if (k.t == TV_DICT || k.t == TV_NS)
				rt_fail(R, n, "unhashable type: 'dict'");
			dict_set(&R->c, d.u.d, k, eval(R, F, n->kw[i]));
		}
		return d;
	}
	case E_ATTR: return get_attr(R, n, eval(R, F, n->a), n->s);
	case E_ITEM: {
		struct tval obj = eval(R, F, n->a);
		return get_item(R, n, obj, eval(R, F, n->b));
	}
	case E_SLICE: {
		struct tval obj = eval(R, F, n->a), st, sp, step;
		if (n->b)
			st = eval(R, F, n->b);
		if (n->c)
			sp = eval(R, F, n->c);
		if (n->d)
			step = eval(R, F, n->d);
		return slice(R, n, obj, n->b ? &st : NULL, n->c ? &sp : NULL, n->d ? &step : NULL);
	}
	case E_CALL:
	case E_FILTER:
	case E_TEST: return eval_call(R, F, n);
	case E_NEG:
	case E_POS: {
		struct tval v = eval(R, F, n->a);
		if (v.t == TV_UNDEF)
			undef_fail(R, n, v);
		if (!is_num(v))
			rt_fail(R, n, "bad operand type for unary %c: '%s'", n->kind == E_NEG ? '-' : '+',
				type_name(v));
		if (n->kind == E_POS)
			return v.t == TV_BOOL ? v_int(v.u.b) : v;
		if (v.t == TV_FLOAT)
			return v_float(-v.u.f);
		if (num_i(v) == INT64_MIN)
			rt_fail(R, n, "integer overflow");
		return v_int(-num_i(v));
	}
	case E_NOT: return v_bool(!truthy(eval(R, F, n->a)));
	case E_AND: {
		struct tval a = eval(R, F, n->a);
		return truthy(a) ? eval(R, F, n->b) : a;
	}
	case E_OR: {
		struct tval a = eval(R, F, n->a);
		return truthy(a) ? a : eval(R, F, n->b);
	}
	case E_BIN: {
		struct tval a = eval(R, F, n->a);
		return arith(R, n, n->op, a, eval(R, F, n->b));
	}
	case E_CMP: {
		struct tval left = eval(R, F, n->args[0]);
		for (size_t i = 1; i < n->nargs; i++) {
			struct tval right = eval(R, F, n->args[i]);
			bool r;
			if (left.t == TV_STR && right.t == TV_STR)
				charge(R, n, left.u.s.n < right.u.s.n ? left.u.s.n : right.u.s.n);
			else if (left.t == TV_LIST && right.t == TV_LIST)
				charge(R, n, left.u.l->n < right.u.l->n ? left.u.l->n : right.u.l->n);
			switch (n->ops[i - 1]) {
			case OP_EQ: r = v_equal(left, right, 0); break;
			case OP_NE: r = !v_equal(left, right, 0); break;
			case OP_LT: r = v_compare(R, n, left, right, false) < 0; break;
			case OP_GT: r = v_compare(R, n, left, right, false) > 0; break;
			case OP_LE: r = v_compare(R, n, left, right, false) <= 0; break;
			case OP_GE: r = v_compare(R, n, left, right, false) >= 0; break;
			case OP_IN: r = v_contains(R, n, right, left); break;
			default: r = !v_contains(R, n, right, left); break;
			}
			if (!r)
				return v_bool(false);
			left = right;
		}
		return v_bool(true);
	}
	case E_BLOCKVAL: return R->blockval;
	case E_COND:
		if (truthy(eval(R, F, n->a)))
			return eval(R, F, n->b);
		return n->c ? eval(R, F, n->c) : V_UNDEF;
	default: rt_fail(R, n, "not an expression");
	}
}

/* ---- statements ---- */

enum { EX_NORMAL, EX_BREAK, EX_CONTINUE };

static __attribute__((noinline)) void bind_targets(struct tj_render *R, struct frame *F, const struct tnode *n, struct tval v)
{
	if (n->nnames == 1) {
		frame_set(R, F, n->names[0], v);
		return;
	}
	struct tlist *l = iter_list(R, n, v);
	if (l->n != n->nnames)
		rt_fail(R, n, "%s values to unpack (expected %zu, got %zu)",
			l->n > n->nnames ? "too many" : "not enough", n->nnames, l->n);
	for (size_t i = 0; i < l->n; i++)
		frame_set(R, F, n->names[i], l->v[i]);
}

static __attribute__((noinline)) void count_iteration(struct tj_render *R, const struct tnode *n)
{
	if (++R->iterations > TJ_MAX_ITERATIONS)
		tj_fail_at(&R->c, ML_ERR_RANGE, n->pos, "more than %d loop iterations", TJ_MAX_ITERATIONS);
}

/* Returns what the else block ended with (break or continue there belong
 * to an enclosing loop). */
static __attribute__((noinline)) int exec_for(struct tj_render *R, struct frame *F, const struct tnode *n)
{
	struct tlist *items = iter_list(R, n, eval(R, F, n->a));
	if (n->b) {
		struct tval kept = v_list(&R->c, 0);
		struct frame *tf = frame_new(R, F);
		for (size_t i = 0; i < items->n; i++) {
			count_iteration(R, n);
			tf->vars.n = 0;
			bind_targets(R, tf, n, items->v[i]);
			if (truthy(eval(R, tf, n->b)))
				list_push(&R->c, kept.u.l, items->v[i]);
		}
		items = kept.u.l;
	}
	struct tloop *lp = tj_zalloc(&R->c, sizeof(*lp));
	lp->items = items;
	lp->depth = 1; /* nested loops are each depth 1; only recursive loops go deeper */
	struct tval lv = {.t = TV_LOOP};
	lv.u.loop = lp;
	/* each iteration starts with fresh variables (as in jinja2); nothing
	 * can keep a reference to the frame, so it is reused */
	struct frame *body = frame_new(R, F);
	bool completed = false;
	for (size_t i = 0; i < items->n; i++) {
		count_iteration(R, n);
		lp->idx = i;
		body->vars.n = 0;
		frame_set(R, body, "loop", lv);
		bind_targets(R, body, n, items->v[i]);
		int r = exec_body(R, body, n->args, n->nargs);
		if (r == EX_NORMAL)
			completed = true;
		else if (r == EX_BREAK)
			break;
	}
	/* jinja2 runs the else block unless an iteration ran to its end (so
	 * also when every iteration ended in break or continue) */
	return completed ? EX_NORMAL : exec_body(R, F, n->kw, n->nkw);
}

static int exec_nodes(struct tj_render *R, struct frame *F, struct tnode *const *b, size_t nb);

/* set/call/filter blocks (kept out of exec_nodes, whose frame recursion
 * multiplies) */
static __attribute__((noinline)) int exec_block(struct tj_render *R, struct frame *F, const struct tnode *n)
{
	if (n->kind == N_CALLBLOCK) {
		struct tval fn = eval(R, F, n->a->a);
		struct args a;
		eval_args(R, F, n->a, &a, 0);
		struct tval caller = {.t = TV_MACRO};
		caller.u.mac.node = n->b;
		caller.u.mac.closure = F;
		a.kwn = tj_alloc(&R->c, (a.nkw + 1) * sizeof(*a.kwn));
		struct tval *kw = tj_alloc(&R->c, (a.nkw + 1) * sizeof(*kw));
		if (a.nkw) {
			memcpy(a.kwn, n->a->kwn, a.nkw * sizeof(*a.kwn));
			memcpy(kw, a.kw, a.nkw * sizeof(*kw));
		}
		a.kwn[a.nkw] = "caller";
		kw[a.nkw] = caller;
		a.kw = kw;
		a.nkw++;
		to_str(R, call(R, fn, &a), R->out, 0);
		return EX_NORMAL;
	}
	struct tj_sb sb = {0}, *saved = R->out;
	R->out = &sb;
	int r = exec_body(R, F, n->args, n->nargs);
	R->out = saved;
	struct tval text = v_str(sb.s ? sb.s : "", sb.n);
	if (n->kind == N_SETBLOCK) {
		frame_set(R, F, n->names[0], text);
		return EX_NORMAL;
	}
	R->blockval = text;
	to_str(R, eval(R, F, n->a), R->out, 0);
	return r;
}

static int exec_body(struct tj_render *R, struct frame *F, struct tnode *const *b, size_t nb)
{
	depth_enter(R, nb ? b[0] : NULL);
	int r = exec_nodes(R, F, b, nb);
	R->eval_depth--;
	return r;
}

static int exec_nodes(struct tj_render *R, struct frame *F, struct tnode *const *b, size_t nb)
{
	for (size_t k = 0; k < nb; k++) {
		const struct tnode *n = b[k];
		switch (n->kind) {
		case N_TEXT: sb_add(&R->c, R->out, n->s, n->n); break;
		case N_OUTPUT: to_str(R, eval(R, F, n->a), R->out, 0); break;
		case N_IF: {
			int r = truthy(eval(R, F, n->a)) ? exec_body(R, F, n->args, n->nargs)
							 : exec_body(R, F, n->kw, n->nkw);
			if (r != EX_NORMAL)
				return r;
			break;
		}
		case N_FOR: {
			int r = exec_for(R, F, n);
			if (r != EX_NORMAL)
				return r;
			break;
		}
		case N_SET:
			if (n->s) {
				struct tval ns = lookup(R, F, n->names[0]);
				if (ns.t != TV_NS)
					rt_fail(R, n, "cannot assign attribute on non-namespace object");
				dict_set_s(&R->c, ns.u.d, n->s, eval(R, F, n->a));
			} else {
				bind_targets(R, F, n, eval(R, F, n->a));
			}
			break;
		case N_SETBLOCK:
		case N_CALLBLOCK:
		case N_FILTERBLOCK: {
			int r = exec_block(R, F, n);
			if (r != EX_NORMAL)
				return r;
			break;
		}
		case N_MACRO: {
			struct tval m = {.t = TV_MACRO};
			m.u.mac.node = n;
			m.u.mac.closure = F;
			frame_set(R, F, n->s, m);
			break;
		}
		case N_BREAK: return EX_BREAK;
		case N_CONTINUE: return EX_CONTINUE;
		default: rt_fail(R, n, "not a statement");
		}
	}
	return EX_NORMAL;
}

/* ------------------------------------------------------------ public API */

int tok_template_parse(struct tok_template **out, const char *src)
{
	if (!out || !src)
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	*out = NULL;
	struct tok_template *t = calloc(1, sizeof(*t));
	if (!t)
		return ml_error(ML_ERR_NOMEM, "%s: out of memory", __func__);
	jmp_buf jb;
	struct tj_ctx c = {.arena = &t->arena, .jb = &jb};
	int rc = setjmp(jb);
	if (rc != 0) {
		tok_template_free(t);
		return rc;
	}
	/* normalize newlines and drop one trailing newline, as jinja2 does */
	size_t n = strlen(src);
	char *s = tj_alloc(&c, n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (src[i] == '\r') {
			s[o++] = '\n';
			if (i + 1 < n && src[i + 1] == '\n')
				i++;
		} else {
			s[o++] = src[i];
		}
	}
	if (o > 0 && s[o - 1] == '\n')
		o--;
	s[o] = 0;
	t->src = s;
	t->src_len = o;
	c.src = s;
	c.src_len = o;
	struct tj_lexer L = {.c = &c, .src = s, .n = o};
	lex_all(&L);
	struct tj_parser P = {.c = &c, .t = L.toks};
	struct nvec body = {0};
	parse_body(&P, NULL, &body);
	t->body = body.v;
	t->nbody = body.n;
	*out = t;
	return 0;
}

void tok_template_free(struct tok_template *t)
{
	if (!t)
		return;
	tj_arena_free(&t->arena);
	free(t);
}

int tok_template_set_date(struct tok_template *t, int year, int month, int day)
{
	if (!t)
		return ml_error(ML_ERR_INVALID, "%s: NULL template", __func__);
	if (year == 0 && month == 0 && day == 0) {
		t->have_date = false;
		return 0;
	}
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > mdays[month - 1] ||
	    (month == 2 && day == 29 && !((year % 4 == 0 && year % 100 != 0) || year % 400 == 0)))
		return ml_error(ML_ERR_INVALID, "%s: bad date %04d-%02d-%02d", __func__, year, month, day);
	t->have_date = true;
	t->year = year;
	t->month = month;
	t->day = day;
	return 0;
}

static void render_set_date(struct tj_render *R, const struct tok_template *t)
{
	if (t->have_date) {
		R->year = t->year;
		R->month = t->month;
		R->day = t->day;
		R->hour = R->min = R->sec = 0;
	} else {
		time_t now = time(NULL);
		struct tm tm;
		if (!localtime_r(&now, &tm))
			memset(&tm, 0, sizeof(tm));
		R->year = tm.tm_year + 1900;
		R->month = tm.tm_mon + 1;
		R->day = tm.tm_mday;
		R->hour = tm.tm_hour;
		R->min = tm.tm_min;
		R->sec = tm.tm_sec;
		if (R->month < 1 || R->month > 12 || R->day < 1) {
			R->year = 1970;
			R->month = 1;
			R->day = 1;
		}
	}
	int64_t days = days_from_civil(R->year, R->month, R->day);
	R->wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
	R->yday = (int)(days - days_from_civil(R->year, 1, 1));
}

int tok_template_render(const struct tok_template *t, const struct tok_chat_msg *msgs, size_t n_msgs,
			bool add_generation_prompt, const char *bos_token, const char *eos_token, char **out,
			size_t *out_len)
{
	if (!t || !out || (n_msgs && !msgs))
		return ml_error(ML_ERR_INVALID, "%s: NULL argument", __func__);
	*out = NULL;
	if (out_len)
		*out_len = 0;
	struct tj_arena arena = {0};
	jmp_buf jb;
	struct tj_render R = {.c = {.arena = &arena, .jb = &jb, .src = t->src, .src_len = t->src_len}};
	int rc = setjmp(jb);
	if (rc != 0) {
		tj_arena_free(&arena);
		return rc;
	}
	render_set_date(&R, t);
	R.root = frame_new(&R, NULL);
	struct tval list = v_list(&R.c, n_msgs);
	for (size_t i = 0; i < n_msgs; i++) {
		struct tval d = v_dict(&R.c);
		const char *role = msgs[i].role ? msgs[i].role : "";
		const char *content = msgs[i].content;
		dict_set_s(&R.c, d.u.d, "role", v_str(role, strlen(role)));
		dict_set_s(&R.c, d.u.d, "content", content ? v_str(content, strlen(content)) : V_NONE);
		list_push(&R.c, list.u.l, d);
	}
	frame_set(&R, R.root, "messages", list);
	frame_set(&R, R.root, "add_generation_prompt", v_bool(add_generation_prompt));
	frame_set(&R, R.root, "bos_token", v_str(bos_token ? bos_token : "", bos_token ? strlen(bos_token) : 0));
	frame_set(&R, R.root, "eos_token", v_str(eos_token ? eos_token : "", eos_token ? strlen(eos_token) : 0));
	struct tj_sb sb = {0};
	R.out = &sb;
	exec_body(&R, R.root, t->body, t->nbody);
	char *res = malloc(sb.n + 1);
	if (!res) {
		tj_arena_free(&arena);
		return ml_error(ML_ERR_NOMEM, "%s: out of memory", __func__);
	}
	if (sb.n)
		memcpy(res, sb.s, sb.n);
	res[sb.n] = 0;
	*out = res;
	if (out_len)
		*out_len = sb.n;
	tj_arena_free(&arena);
	return 0;
}
