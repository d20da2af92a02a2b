/* Pre-tokenizer for byte-level BPE: splits text into words with the regex
 * sequence of the model family named by tokenizer.ggml.pre.
 *
 * A sequence of regexes works like the Hugging Face `Sequence` of `Split`
 * pre-tokenizers with the "isolated" behaviour (as llama.cpp does): the
 * first regex cuts the text into matches and the gaps between them (both
 * kept), the next regex cuts each of those pieces again, and so on. Each
 * regex sees one piece as its whole subject, so `$` and `(?!\S)` stop at
 * the piece's end. Patterns are PCRE2 with UTF and UCP (Unicode \p{..}
 * classes and \s), JIT-compiled when available. */
#include "tokenizer/tok_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"

#define TOK_PRE_MAX_REGEX 8

struct tok_pre {
	int n;
	pcre2_code *re[TOK_PRE_MAX_REGEX];
};

/* Patterns from the upstream tokenizer.json files (Hugging Face). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                              \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"                \
	" ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                               \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"                     \
	" ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_TEKKEN                                                                              \
	"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|" \
	"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|" \
	"\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O                                                                               \
	"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"   \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"                                                         \
	"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"   \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"                                                         \
	"\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* deepseek-llm's letter class: the cased letters of many scripts (from its
 * tokenizer.json, as a code point list) */
#define RE_DS_LETTERS                                                                          \
	"[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}" \
	"\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}" \
	"\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"        \
	"\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"         \
	"\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"         \
	"\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"  \
	"\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"  \
	"\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"           \
	"\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"             \
	"\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"             \
	"\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"             \
	"\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"           \
	"\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"         \
	"\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}" \
	"\\x{1E900}-\\x{1E943}]"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"

struct pre_def {
	const char *names; /* '|'-separated tokenizer.ggml.pre values */
	bool ignore_merges;
	bool add_bos;
	const char *re[TOK_PRE_MAX_REGEX];
};

static const struct pre_def pre_defs[] = {
	/* llama.cpp's default when tokenizer.ggml.pre is absent or "default" */
	{"default", false, false,
	 {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
	{"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0", true, true, {RE_LLAMA3}},
	{"dbrx|smaug-bpe|kanana|trillion", false, false, {RE_LLAMA3}},
	{"deepseek-llm", false, false,
	 {"[\\r\\n]", "\\s?" RE_DS_LETTERS "+",
	  "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
	  "\\s+$", RE_CJK, "\\p{N}+"}},
	{"deepseek-coder", false, false,
	 {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}},
	{"deepseek-v3", false, false,
	 {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
	  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
	  " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
	{"falcon", false, false, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
	{"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", false, false,
	 {"\\p{N}", RE_GPT2}},
	{"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v1-en|jina-v2-es|jina-v2-de|jina-v2-code|"
	 "roberta-bpe|mpt|olmo|jais|gpt-neox",
	 false, false, {RE_GPT2}},
	{"qwen2|deepseek-r1-qwen|stablelm2|megrez|hunyuan", false, false, {RE_QWEN2}},
	{"poro-chat|bloom|gpt3-finnish", false, false, {RE_BLOOM}},
	{"chatglm-bpe|glm4", false, false, {RE_LLAMA3}},
	{"viking", false, false, {RE_BLOOM, "\\p{N}"}},
	{"tekken", true, true, {RE_TEKKEN}},
	{"chameleon", false, true,
	 {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
	  "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2}},
	{"gpt-4o|llama4", false, false, {RE_GPT4O}},
};

static bool name_in(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list;;) {
		const char *bar = strchr(p, '|');
		size_t l = bar ? (size_t)(bar - p) : strlen(p);
		if (l == n && memcmp(p, name, n) == 0)
			return true;
		if (!bar)
			return false;
		p = bar + 1;
	}
}

void tok_pre_free(struct tok_pre *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n; i++)
		pcre2_code_free(p->re[i]);
	free(p);
}

int tok_pre_new(struct tok_pre **out, const char *name, bool *ignore_merges, bool *add_bos_default)
{
	*out = NULL;
	const struct pre_def *d = NULL;
	const char *key = name ? name : "default";
	for (size_t i = 0; i < sizeof(pre_defs) / sizeof(pre_defs[0]) && !d; i++)
		if (name_in(pre_defs[i].names, key))
			d = &pre_defs[i];
	if (!d)
		return ml_error(ML_ERR_UNSUPPORTED, "%s: unknown pre-tokenizer '%s' (tokenizer.ggml.pre)",
				__func__, key);
	*ignore_merges = d->ignore_merges;
	*add_bos_default = d->add_bos;

	struct tok_pre *p = calloc(1, sizeof(*p));
	if (!p)
		return ML_ERR_NOMEM;
	for (int i = 0; i < TOK_PRE_MAX_REGEX && d->re[i]; i++) {
		int err;
		PCRE2_SIZE eoff;
		pcre2_code *re = pcre2_compile((PCRE2_SPTR)d->re[i], PCRE2_ZERO_TERMINATED,
					       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err,
					       &eoff, NULL);
		if (!re) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(err, msg, sizeof(msg));
			tok_pre_free(p);
			return ml_error(ML_ERR_UNSUPPORTED,
					"%s: regex %d of pre-tokenizer '%s' does not compile at %zu: %s",
					__func__, i, key, (size_t)eoff, (const char *)msg);
		}
		if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0)
			ML_DEBUG("tokenizer: no PCRE2 JIT for regex %d of '%s'", i, key);
		p->re[p->n++] = re;
	}
	*out = p;
	return 0;
}

struct split_ctx {
	const struct tok_pre *p;
	pcre2_match_data *md;
	pcre2_match_context *mc; /* with a large JIT stack, made on demand */
	pcre2_jit_stack *js;
	int (*fn)(const char *piece, size_t n, void *user);
	void *user;
};

static int split_level(struct split_ctx *c, int level, const char *s, size_t n);

static int emit(struct split_ctx *c, int level, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (level + 1 >= c->p->n)
		return c->fn(s, n, c->user);
	return split_level(c, level + 1, s, n);
}

static int do_match(struct split_ctx *c, pcre2_code *re, const char *s, size_t n, size_t pos)
{
	int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, c->mc);
	if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->js) {
		c->js = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, NULL);
		c->mc = pcre2_match_context_create(NULL);
		if (!c->js || !c->mc)
			return ML_ERR_NOMEM;
		pcre2_jit_stack_assign(c->mc, NULL, c->js);
		rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md, c->mc);
	}
	return rc;
}

static int split_level(struct split_ctx *c, int level, const char *s, size_t n)
{
	pcre2_code *re = c->p->re[level];
	size_t pos = 0, gap = 0;
	while (pos < n) {
		int rc = do_match(c, re, s, n, pos);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			if (rc == ML_ERR_NOMEM)
				return rc;
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(rc, msg, sizeof(msg));
			return ml_error(ML_ERR_RANGE, "%s: regex match failed: %s", __func__,
					(const char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
		size_t ms = ov[0], me = ov[1];
		if (me <= ms) { /* empty match: step over one character */
			pos = ms + 1;
			while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
				pos++;
			continue;
		}
		int r = emit(c, level, s + gap, ms - gap);
		if (r == 0)
			r = emit(c, level, s + ms, me - ms);
		if (r != 0)
			return r;
		gap = pos = me;
	}
	return emit(c, level, s + gap, n - gap);
}

int tok_pre_split(const struct tok_pre *p, const char *text, size_t len,
		  int (*fn)(const char *piece, size_t n, void *user), void *user)
{
	if (len == 0)
		return 0;
	if (p->n == 0)
		return fn(text, len, user);
	struct split_ctx c = {.p = p, .fn = fn, .user = user};
	/* one match-data block big enough for every regex of the list */
	uint32_t max_pairs = 1;
	for (int i = 0; i < p->n; i++) {
		uint32_t cap = 0;
		pcre2_pattern_info(p->re[i], PCRE2_INFO_CAPTURECOUNT, &cap);
		if (cap + 1 > max_pairs)
			max_pairs = cap + 1;
	}
	c.md = pcre2_match_data_create(max_pairs, NULL);
	if (!c.md)
		return ML_ERR_NOMEM;
	int rc = split_level(&c, 0, text, len);
	pcre2_match_data_free(c.md);
	pcre2_match_context_free(c.mc);
	pcre2_jit_stack_free(c.js);
	return rc;
}
