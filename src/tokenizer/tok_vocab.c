/* Vocabulary loading from GGUF tokenizer.ggml.* metadata: token texts,
 * scores and types, BPE merges, special token ids, BOS/EOS rules, the
 * end-of-generation set, and the hash tables used by the encoders.
 *
 * Defaults and overrides follow llama.cpp's llama_vocab::load so that the
 * same file tokenizes the same way: per-model default special ids, ids out
 * of range ignored (4294967295 means "none"), EOT/EOG tokens found by their
 * text (<|im_end|>, <|eot_id|>, <end_of_turn>, ...) and forced to CONTROL.
 * One deliberate difference: recent llama.cpp also treats any token spelled
 * "</s>" as end-of-generation (for PaddleOCR); that turns a plain text
 * token of Qwen2.5's vocabulary into a control token, so we leave "</s>"
 * to the models that name it as their eos id. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ml_err.h"
#include "base/ml_log.h"
#include "gguf/gguf.h"

#define TOK_MAX_VOCAB (1u << 24)     /* 16M tokens */
#define TOK_MAX_TOKEN_BYTES (1u << 16)
#define TOK_MAX_MERGES (1u << 24)

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint32_t table_size_for(uint64_t n)
{
	uint32_t sz = 16;
	while (sz < n * 2)
		sz <<= 1;
	return sz;
}

int32_t tok_vocab_lookup(const struct tok_vocab *v, const char *s, size_t n)
{
	uint32_t i = (uint32_t)hash_bytes(s, n) & v->ht_mask;
	for (;;) {
		int32_t id = v->ht[i];
		if (id < 0)
			return -1;
		if (v->len[id] == n && memcmp(v->blob + v->off[id], s, n) == 0)
			return id;
		i = (i + 1) & v->ht_mask;
	}
}

/* Inserts |id|; a later token with the same text replaces the earlier one
 * (llama.cpp's token_to_id keeps the last). */
static void ht_insert(struct tok_vocab *v, int32_t id)
{
	const char *s = v->blob + v->off[id];
	size_t n = v->len[id];
	uint32_t i = (uint32_t)hash_bytes(s, n) & v->ht_mask;
	for (;;) {
		int32_t cur = v->ht[i];
		if (cur < 0) {
			v->ht[i] = id;
			return;
		}
		if (v->len[cur] == n && memcmp(v->blob + v->off[cur], s, n) == 0) {
			v->ht[i] = id;
			return;
		}
		i = (i + 1) & v->ht_mask;
	}
}

int32_t tok_merge_lookup(const struct tok_vocab *v, int32_t left, int32_t right, int32_t *result)
{
	if (!v->mt || left < 0 || right < 0)
		return -1;
	uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
	uint32_t i = (uint32_t)hash_u64(key) & v->mt_mask;
	for (;;) {
		const struct tok_merge_slot *s = &v->mt[i];
		if (s->key == UINT64_MAX)
			return -1;
		if (s->key == key) {
			*result = s->result;
			return s->rank;
		}
		i = (i + 1) & v->mt_mask;
	}
}

/* First occurrence of a pair wins (later duplicates are ignored). */
static void mt_insert(struct tok_vocab *v, int32_t left, int32_t right, int32_t rank, int32_t result)
{
	uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
	uint32_t i = (uint32_t)hash_u64(key) & v->mt_mask;
	for (;;) {
		struct tok_merge_slot *s = &v->mt[i];
		if (s->key == key)
			return;
		if (s->key == UINT64_MAX) {
			s->key = key;
			s->rank = rank;
			s->result = result;
			return;
		}
		i = (i + 1) & v->mt_mask;
	}
}

void tok_vocab_free(struct tok_vocab *v)
{
	if (!v)
		return;
	tok_pre_free(v->pre);
	free(v->blob);
	free(v->off);
	free(v->len);
	free(v->score);
	free(v->type);
	free(v->eog);
	free(v->strip);
	free(v->ht);
	free(v->mt);
	free(v->specials);
	free(v->trie);
	free(v);
}

/* Reads an integer-valued key of any integer type as int64. 0, or
 * ML_ERR_NOT_FOUND, or ML_ERR_FORMAT for a non-integer value. */
static int get_int(const struct gguf_file *gf, const char *key, int64_t *out)
{
	const struct gguf_value *val = gguf_find(gf, key);
	if (!val)
		return ML_ERR_NOT_FOUND;
	switch (val->type) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_UINT64:
		*out = val->u64 > INT64_MAX ? -1 : (int64_t)val->u64;
		return 0;
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_INT16:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_INT64:
		*out = val->i64;
		return 0;
	default:
		return ml_error(ML_ERR_FORMAT, "%s: key '%s' has type %s, expected an integer",
				__func__, key, gguf_type_name(val->type));
	}
}

static void get_special(const struct tok_vocab *v, const struct gguf_file *gf, const char *key,
			int32_t *id)
{
	int64_t x = 0;
	if (get_int(gf, key, &x) != 0)
		return;
	if (x < 0 || x >= v->n) {
		if (x != 4294967295ll && x != -1)
			ML_WARN("tokenizer: bad special token %s = %lld (vocab has %d), keeping %d", key,
				(long long)x, v->n, *id);
		return;
	}
	*id = (int32_t)x;
}

static void get_flag(const struct gguf_file *gf, const char *key, bool *flag)
{
	bool b;
	if (gguf_get_bool(gf, key, &b) == 0)
		*flag = b;
}

static bool text_is(const struct tok_vocab *v, int32_t id, const char *s)
{
	size_t n = strlen(s);
	return v->len[id] == n && memcmp(v->blob + v->off[id], s, n) == 0;
}

static bool text_in(const struct tok_vocab *v, int32_t id, const char *const *list)
{
	for (; *list; list++)
		if (text_is(v, id, *list))
			return true;
	return false;
}

/* Tokens llama.cpp recognises by their text (see the file comment). The
 * lists follow llama.cpp's llama-vocab.cpp (load(), "auto-detect special
 * tokens by text" and the EOG list) as of the llama.cpp that
 * bench/llamacpp runs; a token found here that is not CONTROL becomes
 * CONTROL (llama.cpp ORs in the CONTROL attribute: it is then no longer
 * matched with parse_special off, and matched with it on). */
static const char *const eot_names[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
	"<EOT>", "_<EOT>", "[EOT]",
	"<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", /* DeepSeek */
	"<end_of_utterance>", NULL};
static const char *const eog_names[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
	"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
	"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", NULL};
static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
					    NULL};
static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
					    "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
/* FIM prefix/suffix/middle: forced to CONTROL, not end-of-generation */
static const char *const fim_other_names[] = {
	"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|code_prefix|>", "<|prefix|>",
	"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "<|code_suffix|>", "<|suffix|>",
	"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "<|code_middle|>", "<|middle|>",
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", /* DeepSeek <｜fim▁begin｜> */
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
	"<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", NULL};
/* gpt-oss: always rendered and always parsed (USER_DEFINED in llama.cpp) */
static const char *const harmony_user_names[] = {"<|channel|>", "<|message|>", "<|start|>",
						 "<|constrain|>", NULL};

static void force_control(struct tok_vocab *v, int32_t id)
{
	if (v->type[id] != TOK_TYPE_CONTROL) {
		ML_DEBUG("tokenizer: token %d '%s' looks like a control token; treating it as one",
			 id, v->blob + v->off[id]);
		v->type[id] = TOK_TYPE_CONTROL;
	}
}

/* First id whose text is |s| among the end-of-generation tokens, or -1. */
static int32_t eog_with_text(const struct tok_vocab *v, const char *s)
{
	for (int32_t id = 0; id < v->n; id++)
		if (v->eog[id] && text_is(v, id, s))
			return id;
	return -1;
}

static void find_eog(struct tok_vocab *v)
{
	int32_t fim_pad = -1, fim_rep = -1, fim_sep = -1;
	for (int32_t id = 0; id < v->n; id++) {
		if (v->eot < 0 && text_in(v, id, eot_names)) {
			v->eot = id;
			force_control(v, id);
		}
		if (v->eom < 0 && text_is(v, id, "<|eom_id|>")) {
			v->eom = id;
			force_control(v, id);
		}
		if (fim_pad < 0 && text_in(v, id, fim_pad_names)) {
			fim_pad = id;
			force_control(v, id);
		}
		if (fim_rep < 0 && text_in(v, id, fim_rep_names)) {
			fim_rep = id;
			force_control(v, id);
		}
		if (fim_sep < 0 && text_in(v, id, fim_sep_names)) {
			fim_sep = id;
			force_control(v, id);
		}
		if (text_in(v, id, fim_other_names))
			force_control(v, id);
	}
	for (int32_t id = 0; id < v->n; id++) {
		if (text_in(v, id, eog_names)) {
			v->eog[id] = 1;
			force_control(v, id);
		}
	}
	for (int32_t id = 0; id < v->n; id++)
		if (text_in(v, id, harmony_user_names))
			v->type[id] = TOK_TYPE_USER_DEFINED;
	int32_t extra[] = {fim_pad, fim_rep, fim_sep, v->eos, v->eot, v->eom};
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		if (extra[i] >= 0)
			v->eog[extra[i]] = 1;
	/* llama.cpp's workarounds: o200k_harmony / solar-open, where <|end|>
	 * is not end-of-generation (and becomes USER_DEFINED) */
	int32_t end = eog_with_text(v, "<|end|>");
	bool ret = eog_with_text(v, "<|return|>") >= 0, flush = eog_with_text(v, "<|flush|>") >= 0;
	bool call = eog_with_text(v, "<|call|>") >= 0 || eog_with_text(v, "<|calls|>") >= 0;
	if (end >= 0 && call && (ret || flush)) {
		v->eog[end] = 0;
		v->type[end] = TOK_TYPE_USER_DEFINED;
	}
	/* gemma4: </s> is plain text there (NORMAL again) */
	int32_t s_end = eog_with_text(v, "</s>");
	if (s_end >= 0 && eog_with_text(v, "<|tool_response>") >= 0) {
		v->eog[s_end] = 0;
		v->type[s_end] = TOK_TYPE_NORMAL;
	}
}

/* Per-token strip attributes llama.cpp sets by model name (llama-vocab.cpp,
 * "Handle per token attributes"): an LSTRIP special token swallows the
 * ASCII whitespace before it, an RSTRIP one the whitespace after it. */
static void set_token_strip(struct tok_vocab *v, const char *text, uint8_t bit, bool on)
{
	int32_t id = tok_vocab_lookup(v, text, strlen(text));
	if (id < 0)
		return;
	v->strip[id] = on ? (uint8_t)(v->strip[id] | bit) : (uint8_t)(v->strip[id] & ~bit);
}

static bool str_has(const struct gguf_str *s, const char *sub)
{
	return s->ptr && strstr(s->ptr, sub) != NULL;
}

static void set_strip_attrs(struct tok_vocab *v, const struct gguf_file *gf)
{
	struct gguf_str name = {0}, pre = {0}, arch = {0};
	char lname[256] = "";
	if (gguf_get_str(gf, "general.name", &name) == 0) {
		size_t n = strlen(name.ptr) < sizeof(lname) - 1 ? strlen(name.ptr) : sizeof(lname) - 1;
		for (size_t i = 0; i < n; i++) {
			char c = name.ptr[i];
			lname[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
		}
		lname[n] = 0;
	}
	(void)gguf_get_str(gf, "tokenizer.ggml.pre", &pre);
	(void)gguf_get_str(gf, "general.architecture", &arch);
	if (str_has(&pre, "jina-v2-de") || str_has(&pre, "jina-v2-es") || str_has(&pre, "jina-v2-code") ||
	    str_has(&arch, "nomic-bert-moe") || str_has(&arch, "jina-bert-v3")) {
		set_token_strip(v, "<mask>", TOK_STRIP_L, true);
	} else if (strstr(lname, "phi-3") || strstr(lname, "phi3")) {
		for (int32_t id = 0; id < v->n; id++) {
			uint8_t t = v->type[id];
			if ((t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN))
				v->strip[id] |= TOK_STRIP_R;
		}
		set_token_strip(v, "</s>", TOK_STRIP_R, true);
		set_token_strip(v, "<unk>", TOK_STRIP_R, false);
		set_token_strip(v, "<s>", TOK_STRIP_R, false);
		set_token_strip(v, "<|endoftext|>", TOK_STRIP_R, false);
	} else if (strstr(lname, "modern-bert")) {
		set_token_strip(v, "[MASK]", TOK_STRIP_L, true);
	}
}

static int cmp_special(const void *a, const void *b, void *user)
{
	const struct tok_vocab *v = user;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	if (v->len[x] != v->len[y])
		return v->len[x] > v->len[y] ? -1 : 1;
	return x < y ? -1 : (x > y);
}

static int build_specials(struct tok_vocab *v)
{
	int n = 0;
	for (int32_t id = 0; id < v->n; id++) {
		uint8_t t = v->type[id];
		if ((t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN) &&
		    v->len[id] > 0)
			n++;
	}
	v->specials = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
	if (!v->specials)
		return ML_ERR_NOMEM;
	n = 0;
	for (int32_t id = 0; id < v->n; id++) {
		uint8_t t = v->type[id];
		if ((t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN) &&
		    v->len[id] > 0)
			v->specials[n++] = id;
	}
	v->n_specials = n;
	qsort_r(v->specials, (size_t)n, sizeof(int32_t), cmp_special, v);

	size_t max_nodes = 1;
	for (int i = 0; i < n; i++)
		max_nodes += v->len[v->specials[i]];
	if (max_nodes > INT32_MAX)
		return ml_error(ML_ERR_RANGE, "%s: special tokens too long", __func__);
	v->trie = malloc(sizeof(*v->trie) * max_nodes);
	if (!v->trie)
		return ML_ERR_NOMEM;
	v->trie[0] = (struct tok_trie_node){.child = -1, .sibling = -1, .sidx = -1};
	v->n_trie = 1;
	for (int i = 0; i < n; i++) {
		const unsigned char *s = (const unsigned char *)v->blob + v->off[v->specials[i]];
		int32_t node = 0;
		for (uint32_t k = 0; k < v->len[v->specials[i]]; k++) {
			int32_t c = v->trie[node].child;
			while (c >= 0 && v->trie[c].byte != s[k])
				c = v->trie[c].sibling;
			if (c < 0) {
				c = v->n_trie++;
				v->trie[c] = (struct tok_trie_node){.child = -1,
								    .sibling = v->trie[node].child,
								    .sidx = -1,
								    .byte = s[k]};
				v->trie[node].child = c;
			}
			node = c;
		}
		if (v->trie[node].sidx < 0)
			v->trie[node].sidx = i;
	}
	return 0;
}

static int load_merges(struct tok_vocab *v, const struct gguf_file *gf)
{
	const struct gguf_value *arr;
	int rc = gguf_get_arr(gf, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &arr);
	if (rc != 0)
		return rc == ML_ERR_NOT_FOUND
			       ? ml_error(ML_ERR_FORMAT, "%s: BPE vocab without tokenizer.ggml.merges",
					  __func__)
			       : rc;
	if (arr->arr.n > TOK_MAX_MERGES)
		return ml_error(ML_ERR_RANGE, "%s: %llu merges, limit %u", __func__,
				(unsigned long long)arr->arr.n, TOK_MAX_MERGES);
	uint32_t n = (uint32_t)arr->arr.n;
	v->mt_mask = table_size_for(n) - 1;
	v->mt = malloc(sizeof(*v->mt) * ((size_t)v->mt_mask + 1));
	if (!v->mt)
		return ML_ERR_NOMEM;
	for (uint32_t i = 0; i <= v->mt_mask; i++)
		v->mt[i].key = UINT64_MAX;
	char *buf = NULL;
	size_t buf_cap = 0;
	uint32_t skipped = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct gguf_str *s = &arr->arr.items[i].str;
		/* "left right": split at the first space after the first byte */
		const char *sp = s->len > 1 ? memchr(s->ptr + 1, ' ', s->len - 1) : NULL;
		if (!sp) {
			skipped++;
			continue;
		}
		size_t ln = (size_t)(sp - s->ptr), rn = s->len - ln - 1;
		int32_t l = tok_vocab_lookup(v, s->ptr, ln);
		int32_t r = tok_vocab_lookup(v, sp + 1, rn);
		if (l < 0 || r < 0) {
			skipped++;
			continue;
		}
		if (ln + rn > buf_cap) {
			free(buf);
			buf_cap = (ln + rn) * 2;
			buf = malloc(buf_cap);
			if (!buf)
				return ML_ERR_NOMEM;
		}
		memcpy(buf, s->ptr, ln);
		memcpy(buf + ln, sp + 1, rn);
		mt_insert(v, l, r, (int32_t)i, tok_vocab_lookup(v, buf, ln + rn));
	}
	free(buf);
	if (skipped)
		ML_DEBUG("tokenizer: %u of %u merges name unknown tokens or are malformed; ignored",
			 skipped, n);
	return 0;
}

static void build_byte_tokens(struct tok_vocab *v)
{
	for (int c = 0; c < 324; c++)
		v->cp_byte[c] = (int16_t)tok_cp_byte((uint32_t)c);
	for (int b = 0; b < 256; b++)
		v->byte_utf8_len[b] =
			(uint8_t)tok_utf8_encode(tok_byte_cp((unsigned char)b), v->byte_utf8[b]);
	for (int b = 0; b < 256; b++) {
		char buf[8];
		int32_t id = -1;
		if (v->model == TOK_MODEL_SPM) {
			snprintf(buf, sizeof(buf), "<0x%02X>", b);
			id = tok_vocab_lookup(v, buf, 6);
			if (id < 0) {
				buf[0] = (char)b;
				id = tok_vocab_lookup(v, buf, 1);
			}
		} else if (v->model == TOK_MODEL_BPE) {
			int n = tok_utf8_encode(tok_byte_cp((unsigned char)b), buf);
			id = tok_vocab_lookup(v, buf, (size_t)n);
		} else {
			buf[0] = (char)b;
			id = tok_vocab_lookup(v, buf, 1);
		}
		v->byte_tok[b] = id;
	}
}

int tok_vocab_load(struct tok_vocab **out, const struct gguf_file *gf)
{
	*out = NULL;
	struct gguf_str model;
	int rc = gguf_get_str(gf, "tokenizer.ggml.model", &model);
	if (rc != 0)
		return rc == ML_ERR_NOT_FOUND
			       ? ml_error(ML_ERR_NOT_FOUND, "%s: no tokenizer.ggml.model in %s",
					  __func__, gguf_path(gf))
			       : rc;
	enum tok_model m;
	if (strlen(model.ptr) != model.len) /* embedded NUL */
		return ml_error(ML_ERR_FORMAT, "%s: tokenizer.ggml.model contains a NUL byte",
				__func__);
	if (strcmp(model.ptr, "llama") == 0)
		m = TOK_MODEL_SPM;
	else if (strcmp(model.ptr, "gpt2") == 0)
		m = TOK_MODEL_BPE;
	else if (strcmp(model.ptr, "bert") == 0)
		m = TOK_MODEL_WPM;
	else
		return ml_error(ML_ERR_UNSUPPORTED,
				"%s: tokenizer model '%s' is not supported (llama, gpt2, bert are)",
				__func__, model.ptr);

	const struct gguf_value *toks, *scores = NULL, *types = NULL;
	rc = gguf_get_arr(gf, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &toks);
	if (rc != 0)
		return rc == ML_ERR_NOT_FOUND
			       ? ml_error(ML_ERR_FORMAT, "%s: no tokenizer.ggml.tokens in %s",
					  __func__, gguf_path(gf))
			       : rc;
	if (toks->arr.n == 0 || toks->arr.n > TOK_MAX_VOCAB)
		return ml_error(ML_ERR_RANGE, "%s: vocab of %llu tokens (must be 1..%u)", __func__,
				(unsigned long long)toks->arr.n, TOK_MAX_VOCAB);
	uint32_t n = (uint32_t)toks->arr.n;
	rc = gguf_get_arr(gf, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &scores);
	if (rc == ML_ERR_NOT_FOUND)
		scores = NULL;
	else if (rc != 0)
		return rc;
	if (scores && scores->arr.n != n)
		return ml_error(ML_ERR_FORMAT, "%s: %llu scores for %u tokens", __func__,
				(unsigned long long)scores->arr.n, n);
	rc = gguf_get_arr(gf, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &types);
	if (rc == ML_ERR_NOT_FOUND)
		types = NULL;
	else if (rc != 0)
		return rc;
	if (types && types->arr.n != n)
		return ml_error(ML_ERR_FORMAT, "%s: %llu token types for %u tokens", __func__,
				(unsigned long long)types->arr.n, n);

	struct tok_vocab *v = calloc(1, sizeof(*v));
	if (!v)
		return ML_ERR_NOMEM;
	v->model = m;
	v->n = (int)n;
	uint64_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l = toks->arr.items[i].str.len;
		if (l > TOK_MAX_TOKEN_BYTES) {
			rc = ml_error(ML_ERR_RANGE, "%s: token %u is %llu bytes long, limit %u",
				      __func__, i, (unsigned long long)l, TOK_MAX_TOKEN_BYTES);
			goto fail;
		}
		total += l + 1;
	}
	if (total > UINT32_MAX) {
		rc = ml_error(ML_ERR_RANGE, "%s: token texts total %llu bytes", __func__,
			      (unsigned long long)total);
		goto fail;
	}
	v->blob = malloc(total);
	v->off = malloc(sizeof(uint32_t) * n);
	v->len = malloc(sizeof(uint32_t) * n);
	v->score = calloc(n, sizeof(float));
	v->type = malloc(n);
	v->eog = calloc(n, 1);
	v->strip = calloc(n, 1);
	v->ht_mask = table_size_for(n) - 1;
	v->ht = malloc(sizeof(int32_t) * ((size_t)v->ht_mask + 1));
	if (!v->blob || !v->off || !v->len || !v->score || !v->type || !v->eog || !v->strip || !v->ht) {
		rc = ML_ERR_NOMEM;
		goto fail;
	}
	memset(v->ht, 0xff, sizeof(int32_t) * ((size_t)v->ht_mask + 1));
	uint32_t pos = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct gguf_str *s = &toks->arr.items[i].str;
		memcpy(v->blob + pos, s->ptr, s->len);
		v->blob[pos + s->len] = 0;
		v->off[i] = pos;
		v->len[i] = (uint32_t)s->len;
		pos += (uint32_t)s->len + 1;
		if ((int)s->len > v->max_len)
			v->max_len = (int)s->len;
		if (scores) {
			float f;
			memcpy(&f, (const char *)scores->arr.raw + 4 * (size_t)i, 4);
			v->score[i] = f;
		}
		int32_t t = TOK_TYPE_NORMAL;
		if (types)
			memcpy(&t, (const char *)types->arr.raw + 4 * (size_t)i, 4);
		v->type[i] = (t >= 0 && t <= TOK_TYPE_BYTE) ? (uint8_t)t : TOK_TYPE_UNDEFINED;
		if (s->len > 0)
			ht_insert(v, (int32_t)i);
		else
			ML_DEBUG("tokenizer: empty token at index %u", i);
	}

	/* per-model defaults (llama.cpp) */
	v->bos = v->eos = v->eot = v->eom = v->unk = v->sep = v->pad = v->mask = -1;
	bool ab = false, ae = false;
	switch (m) {
	case TOK_MODEL_SPM:
		v->bos = 1, v->eos = 2, v->unk = 0;
		ab = true;
		v->add_space_prefix = true;
		break;
	case TOK_MODEL_BPE:
		v->bos = 11, v->eos = 11;
		break;
	case TOK_MODEL_WPM:
		v->bos = 101, v->unk = 100, v->sep = 102, v->pad = 0, v->mask = 103;
		ab = true;
		v->add_sep = true;
		break;
	}
	int32_t *ids[] = {&v->bos, &v->eos, &v->unk, &v->sep, &v->pad, &v->mask};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (*ids[i] >= v->n)
			*ids[i] = -1;

	if (m == TOK_MODEL_BPE) {
		rc = load_merges(v, gf);
		if (rc != 0)
			goto fail;
		struct gguf_str pre = {0};
		rc = gguf_get_str(gf, "tokenizer.ggml.pre", &pre);
		if (rc != 0 && rc != ML_ERR_NOT_FOUND)
			goto fail;
		if (rc == 0 && strlen(pre.ptr) != pre.len) {
			rc = ml_error(ML_ERR_FORMAT, "%s: tokenizer.ggml.pre contains a NUL byte",
				      __func__);
			goto fail;
		}
		bool bos_default = false;
		rc = tok_pre_new(&v->pre, rc == 0 ? pre.ptr : NULL, &v->ignore_merges, &bos_default);
		if (rc != 0)
			goto fail;
		ab = bos_default;
	}

	get_special(v, gf, "tokenizer.ggml.bos_token_id", &v->bos);
	get_special(v, gf, "tokenizer.ggml.eos_token_id", &v->eos);
	get_special(v, gf, "tokenizer.ggml.eot_token_id", &v->eot);
	get_special(v, gf, "tokenizer.ggml.eom_token_id", &v->eom);
	get_special(v, gf, "tokenizer.ggml.unknown_token_id", &v->unk);
	get_special(v, gf, "tokenizer.ggml.seperator_token_id", &v->sep);
	get_special(v, gf, "tokenizer.ggml.padding_token_id", &v->pad);
	get_special(v, gf, "tokenizer.ggml.mask_token_id", &v->mask);
	if (!gguf_find(gf, "tokenizer.ggml.bos_token_id")) /* BERT: CLS plays BOS */
		get_special(v, gf, "tokenizer.ggml.cls_token_id", &v->bos);
	get_flag(gf, "tokenizer.ggml.add_bos_token", &ab);
	get_flag(gf, "tokenizer.ggml.add_eos_token", &ae);
	get_flag(gf, "tokenizer.ggml.add_sep_token", &v->add_sep);
	get_flag(gf, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
	v->add_bos = ab && v->bos >= 0;
	v->add_eos = ae && v->eos >= 0;
	if (v->sep < 0)
		v->add_sep = false;

	find_eog(v);
	set_strip_attrs(v, gf);
	build_byte_tokens(v);
	rc = build_specials(v);
	if (rc != 0)
		goto fail;
	ML_DEBUG("tokenizer: %s vocab, %d tokens, bos %d eos %d, add_bos %d, %d special tokens",
		 model.ptr, v->n, v->bos, v->eos, v->add_bos, v->n_specials);
	*out = v;
	return 0;
fail:
	tok_vocab_free(v);
	return rc;
}

int tok_n_vocab(const struct tok_vocab *v)
{
	return v->n;
}

int32_t tok_bos(const struct tok_vocab *v)
{
	return v->bos;
}

int32_t tok_eos(const struct tok_vocab *v)
{
	return v->eos;
}

bool tok_add_bos(const struct tok_vocab *v)
{
	return v->add_bos;
}

bool tok_add_eos(const struct tok_vocab *v)
{
	return v->add_eos;
}

bool tok_is_eog(const struct tok_vocab *v, int32_t id)
{
	return id >= 0 && id < v->n && v->eog[id];
}

bool tok_is_control(const struct tok_vocab *v, int32_t id)
{
	return id >= 0 && id < v->n && v->type[id] == TOK_TYPE_CONTROL;
}

const char *tok_text(const struct tok_vocab *v, int32_t id)
{
	if (id < 0 || id >= v->n)
		return "";
	return v->blob + v->off[id];
}

int32_t tok_find(const struct tok_vocab *v, const char *text, size_t len)
{
	return tok_vocab_lookup(v, text, len);
}
