/* Unicode helpers for the tokenizer (internal to src/tokenizer/): UTF-8
 * decoding and encoding, code point classes, NFD base letters, lowercase,
 * and GPT-2's byte-to-unicode mapping used by byte-level BPE. */
#ifndef TOK_UNICODE_H
#define TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
	TOK_UCD_LETTER = 1 << 0,
	TOK_UCD_NUMBER = 1 << 1,
	TOK_UCD_PUNCT = 1 << 2,
	TOK_UCD_SYMBOL = 1 << 3,
	TOK_UCD_MARK = 1 << 4,
	TOK_UCD_CONTROL = 1 << 5, /* general category C*: Cc Cf Cs Co Cn */
	TOK_UCD_SEP = 1 << 6,
	TOK_UCD_WS = 1 << 7, /* the whitespace set of BERT / llama.cpp */
};

struct tok_ucd_range {
	uint32_t first; /* flags apply from here up to the next range's first */
	uint8_t flags;
};
struct tok_ucd_map {
	uint32_t from, to;
};

/* Generated tables (tok_unicode_data.c), sorted by code point. */
extern const struct tok_ucd_range tok_ucd_flags[];
extern const unsigned tok_ucd_n_flags;
extern const struct tok_ucd_map tok_ucd_nfd[];
extern const unsigned tok_ucd_n_nfd;
extern const struct tok_ucd_map tok_ucd_lower[];
extern const unsigned tok_ucd_n_lower;

/* Length of the UTF-8 sequence that starts with byte |c| judged by the lead
 * byte alone (1 for continuation or invalid bytes), as llama.cpp splits. */
int tok_utf8_len(unsigned char c);

/* Decodes one strictly valid UTF-8 character at |s| (|n| bytes left).
 * Returns its length and sets *cp, or 0 if the bytes there are not a
 * valid (complete, shortest-form, non-surrogate) sequence. */
int tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes |cp| as UTF-8 into |out| (4 bytes room); returns the length. */
int tok_utf8_encode(uint32_t cp, char *out);

/* True if all |n| bytes form valid UTF-8. */
int tok_utf8_valid(const char *s, size_t n);

unsigned tok_ucd_flags_of(uint32_t cp);
uint32_t tok_ucd_nfd_base(uint32_t cp); /* first code point of the NFD form */
uint32_t tok_ucd_tolower(uint32_t cp);

/* GPT-2 byte-to-unicode: byte b stands for code point tok_byte_cp(b). */
uint32_t tok_byte_cp(unsigned char b);
/* Inverse: the byte for code point |cp|, or -1 if |cp| is not one. */
int tok_cp_byte(uint32_t cp);

#endif
