/* Internal definitions shared by the tokenizer's files: the vocabulary
 * struct, its hash tables, and the per-model encoders. Not a public
 * contract: only src/tokenizer/ includes this. */
#ifndef TOK_INTERNAL_H
#define TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok.h"

enum tok_model {
	TOK_MODEL_SPM, /* "llama": SentencePiece, score-priority merges, byte fallback */
	TOK_MODEL_BPE, /* "gpt2": byte-level BPE with ranked merges */
	TOK_MODEL_WPM, /* "bert": WordPiece */
};

/* Token types as stored in tokenizer.ggml.token_type. */
enum tok_type {
	TOK_TYPE_UNDEFINED = 0,
	TOK_TYPE_NORMAL = 1,
	TOK_TYPE_UNKNOWN = 2,
	TOK_TYPE_CONTROL = 3,
	TOK_TYPE_USER_DEFINED = 4,
	TOK_TYPE_UNUSED = 5,
	TOK_TYPE_BYTE = 6,
};

/* tok_vocab.strip bits (llama.cpp's LSTRIP / RSTRIP token attributes) */
enum {
	TOK_STRIP_L = 1,
	TOK_STRIP_R = 2,
};

struct tok_pre; /* compiled pre-tokenizer (tok_pre.c) */

/* One merge: (left id, right id) -> rank and the id of the merged token. */
struct tok_merge_slot {
	uint64_t key; /* (left << 32) | right; UINT64_MAX = empty */
	int32_t rank;
	int32_t result;
};

struct tok_trie_node {
	int32_t child;   /* first child, -1 if none */
	int32_t sibling; /* next sibling, -1 if none */
	int32_t sidx;    /* index into specials ending here, -1 if none */
	uint8_t byte;
};

struct tok_vocab {
	enum tok_model model;
	int n;              /* number of tokens */
	char *blob;         /* all token texts, each NUL-terminated */
	uint32_t *off;      /* (n) offset of token i's text in blob */
	uint32_t *len;      /* (n) byte length of token i's text */
	float *score;       /* (n) SPM merge priority; 0 if absent */
	uint8_t *type;      /* (n) enum tok_type (after llama.cpp's overrides) */
	uint8_t *eog;       /* (n) 1 if end-of-generation */
	uint8_t *strip;     /* (n) TOK_STRIP_L/R: whitespace a special token swallows */
	int max_len;        /* longest token text in bytes */

	int32_t *ht;        /* text -> id, open addressing, -1 empty */
	uint32_t ht_mask;

	struct tok_merge_slot *mt; /* merges (BPE) */
	uint32_t mt_mask;

	/* Special tokens partitioned out of the text (CONTROL, USER_DEFINED,
	 * UNKNOWN), longest text first. */
	int32_t *specials;
	int n_specials;
	/* Byte trie over the specials' texts: finds which occur in a text. */
	struct tok_trie_node *trie; /* node 0 is the root */
	int n_trie;

	int32_t bos, eos, eot, eom, unk, sep, pad, mask;
	bool add_bos, add_eos, add_sep, add_space_prefix;
	bool ignore_merges;  /* llama3-style: a whole pre-token in the vocab wins */
	bool byte_to_token_ok;
	int32_t byte_tok[256]; /* token of each raw byte (SPM <0xNN>, BPE mapped char) */
	char byte_utf8[256][2];   /* GPT-2 byte-to-unicode character of each byte */
	uint8_t byte_utf8_len[256];
	int16_t cp_byte[324];     /* inverse: code point (< 324) -> byte, -1 if none */
	struct tok_pre *pre;   /* BPE only */
};

/* Hash lookup of an exact token text; -1 if absent. */
int32_t tok_vocab_lookup(const struct tok_vocab *v, const char *s, size_t n);
/* Merge lookup: rank (>= 0) and merged id of (left, right), or -1. */
int32_t tok_merge_lookup(const struct tok_vocab *v, int32_t left, int32_t right, int32_t *result);

/* Output accumulator: ids beyond cap are counted, not stored. */
struct tok_out {
	int32_t *ids;
	size_t cap;
	size_t n;
};
static inline void tok_out_push(struct tok_out *o, int32_t id)
{
	if (o->n < o->cap)
		o->ids[o->n] = id;
	o->n++;
}

/* Encoders for one fragment of raw text (no specials inside). Return 0 or
 * a negative ML_ERR_*. */
int tok_spm_encode(const struct tok_vocab *v, const char *text, size_t len, bool space_prefix,
		   struct tok_out *o);
int tok_bpe_encode(const struct tok_vocab *v, const char *text, size_t len, struct tok_out *o);
int tok_wpm_encode(const struct tok_vocab *v, const char *text, size_t len, struct tok_out *o);

/* Pre-tokenizer (byte-level BPE). tok_pre_new picks the regex list for
 * the tokenizer.ggml.pre name |name| (NULL/"default" for the default);
 * ML_ERR_UNSUPPORTED for a name it does not know. Sets *ignore_merges and
 * *add_bos_default per llama.cpp's table. */
int tok_pre_new(struct tok_pre **out, const char *name, bool *ignore_merges,
		bool *add_bos_default);
void tok_pre_free(struct tok_pre *p);
/* Splits |text| into pre-tokens, calling |fn| for each piece (in order,
 * covering every byte). |text| must be valid UTF-8. */
int tok_pre_split(const struct tok_pre *p, const char *text, size_t len,
		  int (*fn)(const char *piece, size_t n, void *user), void *user);

#endif
